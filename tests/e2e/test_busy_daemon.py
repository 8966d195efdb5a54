"""A daemon at its connection limit is retried, not failed."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tests.e2e.conftest import Start, daemon_replica
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from tests.support.workload import write_burst


def test_max_connections_one_and_a_burst_of_5000_files(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory, max_connections=1)
    trig = start_trigsync(replica)
    stop = threading.Event()

    def hog() -> None:
        # Another client keeps taking the only slot, as a second replicator would.
        import subprocess

        while not stop.is_set():
            subprocess.run(  # noqa: S603 - fixed argv
                ["rsync", f"--password-file={replica.options['password_file']}", replica.url],
                capture_output=True,
                check=False,
            )

    thread = threading.Thread(target=hog)
    thread.start()
    try:
        write_burst(source, dirs=50, files=100, size=64)
        wait_trees_equal(source, replica.path, timeout=120)
    finally:
        stop.set()
        thread.join()
    assert "max connections" in trig.log(), "the test never made the daemon busy"
    assert trig.proc is not None and trig.proc.running


def test_a_refused_second_connection_means_one_run_at_a_time_not_a_failure(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    # Two runs in flight is the default under load; this daemon allows one connection.
    replica = daemon_replica(rsync_daemon_factory, max_connections=1)
    replica.options["rsync_args"] = ["--bwlimit=10m"]  # the big file keeps a run busy 2 s
    trig = start_trigsync(replica)
    (source / "big").write_bytes(os.urandom(20 << 20))
    time.sleep(0.3)
    # These wait 0.2 s, then try a second connection.
    write_burst(source, dirs=10, files=20, size=64)
    wait_trees_equal(source, replica.path, timeout=120)
    log = trig.log()
    assert log.count("one run at a time") == 1, log[-3000:]
    assert " WARNING " not in log and " ERROR " not in log, log[-3000:]
