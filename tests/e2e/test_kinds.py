"""What a change kind claims must hold: a path a target may have is never forgotten.

An atomic save (an excluded temp file renamed over the name), a move in from outside the
tree, and a new file that stays open, each against a real target.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.harness import Replica, Trigsync
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal

SETTLE = 20.0
# A run that sent paths it did not list (the initial full sync) makes new paths count as
# possibly delivered for a second after it: act after that, as a user would.
GRACE = 1.5


def start_and_settle(start: Start, source: Path, replica: Replica, **kw: object) -> Trigsync:
    trig = start(replica, **kw)
    wait_trees_equal(source, replica.path, timeout=SETTLE, owners=replica.owners)
    time.sleep(GRACE)
    return trig


def atomic_save(path: Path, data: bytes) -> None:
    """An editor's save: write name.tmp (excluded), then rename it over name."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.rename(tmp, path)


def test_atomic_save_then_delete_within_the_delay_deletes_on_the_replica(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    (source / "a.txt").write_bytes(b"first")
    (source / "keep.txt").write_bytes(b"keep")
    start_and_settle(start_trigsync, source, replica, excludes=["*.tmp"], extra={"delay": 1.0})
    atomic_save(source / "a.txt", b"second")
    (source / "a.txt").unlink()  # within the delay: both reach the same pending set
    time.sleep(0.3)
    wait_trees_equal(source, replica.path, timeout=SETTLE, owners=replica.owners)
    assert not (replica.path / "a.txt").exists()


def test_move_in_from_outside_then_delete_deletes_on_the_replica(
    source: Path, tmp_path: Path, replica: Replica, start_trigsync: Start
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (source / "a.txt").write_bytes(b"first")
    (source / "d").mkdir()
    (source / "d" / "f").write_bytes(b"in d")
    start_and_settle(start_trigsync, source, replica, extra={"delay": 1.0})
    (outside / "a.txt").write_bytes(b"from outside")
    os.rename(outside / "a.txt", source / "a.txt")  # over the replicated name
    (source / "d" / "f").unlink()
    (outside / "d").mkdir()
    os.rename(outside / "d", source / "d")  # a directory over an (now empty) one
    (source / "a.txt").unlink()
    os.rmdir(source / "d")
    wait_trees_equal(source, replica.path, timeout=SETTLE, owners=replica.owners)


def test_atomic_save_then_delete_while_the_target_is_down(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    assert replica.daemon is not None
    (source / "a.txt").write_bytes(b"first")
    trig = start_and_settle(start_trigsync, source, replica, excludes=["*.tmp"])
    replica.daemon.stop()
    (source / "other").write_bytes(b"a run that fails: the target is now in backoff")
    time.sleep(0.5)
    atomic_save(source / "a.txt", b"second")
    time.sleep(0.1)
    (source / "a.txt").unlink()
    time.sleep(0.3)
    replica.daemon.restart()
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    assert trig.proc is not None and trig.proc.running, trig.log()


def test_new_file_kept_open_reaches_the_replica_once_quiet(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    start_and_settle(start_trigsync, source, replica)
    with open(source / "app.log", "wb") as log:  # created here, never closed in the test
        time.sleep(0.2)  # a logger opens its file first and writes when it has something
        for i in range(10):  # ten appends a second, as a busy log is written
            log.write(b"line %d\n" % i)
            log.flush()
            time.sleep(0.1)
        quiet_since = time.monotonic()
        wait_for(
            lambda: (
                (replica.path / "app.log").exists()
                and (replica.path / "app.log").read_bytes() == (source / "app.log").read_bytes()
            ),
            timeout=5.0,
            what="the open log on the replica",
        )
        # Promised: after 0.5 s of quiet (generous margin for a loaded machine).
        assert time.monotonic() - quiet_since < 3.0
