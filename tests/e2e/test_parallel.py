"""max_parallel: several runs in flight to one target, never two on the same paths.

A second run starts beside the first when 1,000 paths wait or the oldest waited 0.2 s;
``--bwlimit`` keeps runs in flight long enough for that here.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path

from tests.e2e.conftest import Start, daemon_replica
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from tests.support.workload import write_burst

SENT = re.compile(r"^(\S+ \S+) INFO \S+: sent \d+ paths in ([\d.]+) s$")


def runs(log: str) -> list[tuple[float, float]]:
    """(start, end) of every batch run, from the log's end times and durations."""
    out = []
    for line in log.splitlines():
        m = SENT.match(line)
        if m:
            end = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((end - float(m[2]), end))
    return out


def test_parallel_runs_overlap_and_keep_order(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    replica.options["max_parallel"] = 3
    replica.options["rsync_args"] = ["--bwlimit=2m"]
    # No initial sync: it runs alone, and a burst it overlaps would all wait for its end
    # and then go in one run, which says nothing about parallel runs.
    trig = start_trigsync(replica, initial_sync=False)
    write_burst(source, dirs=40, files=50, size=2000)
    wait_trees_equal(source, replica.path, timeout=60)
    spans = sorted(runs(trig.log()))
    overlaps = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlaps >= 1, f"no two runs were ever in flight together: {spans}"

    # Renames and deletes race the runs that carry their files; order still holds.
    for d in range(4, 40, 5):
        os.rename(source / f"d{d - 1:02d}", source / f"moved{d:02d}")
        shutil.rmtree(source / f"d{d - 2:02d}")
        (source / f"d{d - 3:02d}" / "f000").write_bytes(b"rewritten")
        (source / f"new{d:02d}").mkdir()
        (source / f"new{d:02d}" / "x").write_bytes(os.urandom(100))
    wait_trees_equal(source, replica.path, timeout=60)


def test_a_small_change_does_not_wait_behind_a_big_file(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory)  # max_parallel: the default
    replica.options["rsync_args"] = ["--bwlimit=10m"]  # 40 MiB take 4 s
    start_trigsync(replica)
    (source / "big").write_bytes(os.urandom(40 << 20))
    time.sleep(0.3)  # the big file's run is under way
    (source / "index.html").write_bytes(b"<h1>new</h1>")
    deadline = time.monotonic() + 3
    while not (replica.path / "index.html").exists():
        assert time.monotonic() < deadline, "the small file waited behind the big one"
        time.sleep(0.01)
    assert not (replica.path / "big").exists(), "the big file was too quick to tell"
    wait_trees_equal(source, replica.path, timeout=60)
