"""Nothing is lost across crashes, clean restarts, and changes made while stopped."""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.test_moves import inodes
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from tests.support.workload import make_tree
from trigsync import control, health
from trigsync.errors import ControlError


@pytest.mark.long
def test_kill_9_mid_burst_then_restart(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    make_tree(source / "old", dirs=20, files_per_dir=50, seed=7)
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=60)
    before = inodes(replica.path / "old")

    for d in range(40):
        base = source / "burst" / f"d{d:02d}"
        base.mkdir(parents=True)
        for f in range(100):
            (base / f"f{f:03d}").write_bytes(b"x" * (f + 1))
        if d == 10:
            trig.kill()  # SIGKILL: no chance to save anything
    assert trig.proc is not None and trig.proc.returncode == -9

    again = start_trigsync(replica, initial_sync=False)
    wait_trees_equal(source, replica.path, timeout=60)
    assert "did not stop cleanly" in again.log()
    assert inodes(replica.path / "old") == before, "unchanged files were sent again"
    assert again.stop() == 0


def test_changes_made_while_stopped_arrive_after_start(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    make_tree(source, dirs=5, files_per_dir=10, seed=3)
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=30)
    assert trig.stop() == 0

    # A clean restart with nothing changed starts without a full sync.
    quiet = start_trigsync(replica, initial_sync=False)
    assert quiet.stop() == 0
    assert "full sync done" not in quiet.log()

    (source / "added-while-down.txt").write_text("new")
    victim = next(p for p in sorted(source.rglob("*")) if p.is_file())
    victim.write_text("edited while down")
    shutil.rmtree(next(p for p in sorted(source.iterdir()) if p.is_dir()))
    start_trigsync(replica, initial_sync=False)
    wait_trees_equal(source, replica.path, timeout=30)


def test_pending_paths_survive_a_stop_while_the_target_is_down(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    assert replica.daemon is not None
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    replica.daemon.stop()
    for i in range(50):
        (source / f"queued-{i}").write_bytes(os.urandom(100))
    (source / "queued-0").unlink()
    wait_for(lambda: "exit 10" in trig.log(), timeout=10, what="a failed run")
    assert trig.stop() == 0  # a clean stop keeps what it could not send
    replica.daemon.restart()
    again = start_trigsync(replica, initial_sync=False)
    wait_trees_equal(source, replica.path, timeout=30)
    # 49 files, plus the deletion of queued-0 if a failed run had already taken it; or,
    # when the standby waiting since the initial sync took the first list and died with
    # the daemon (cut short: exit 12), a full sync, which the journal keeps as well.
    resumed = re.search(r"resuming (49|50) pending paths", again.log())
    assert resumed or "full sync done" in again.log(), again.log()


def idle(state: Path) -> bool:
    """Whether the daemon on ``state`` has nothing pending or in flight (its status says)."""
    try:
        reply = control.request(control.socket_path(state), "status")
    except ControlError:  # its control socket is not open yet
        return False
    return health.from_json(reply["status"]).idle


def test_sigusr1_logs_a_status_line_per_target(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    tmp_path: Path,
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    trig = start_trigsync(replica)
    (source / "one").write_text("1")
    wait_trees_equal(source, replica.path, timeout=10)
    # The file is there a moment before its run is booked as done: wait for that too.
    wait_for(lambda: idle(tmp_path / "state"), timeout=10, what="no path pending or in flight")
    assert trig.proc is not None
    trig.proc.signal(signal.SIGUSR1)
    wait_for(lambda: "status rsync://" in trig.log(), timeout=5, what="a status line")
    line = next(ln for ln in trig.log().splitlines() if "status rsync://" in ln)
    assert "0 pending" in line and "last error: none" in line
