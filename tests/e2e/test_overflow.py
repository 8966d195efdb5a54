"""A lost-events queue overflow (IN_Q_OVERFLOW, FAN_Q_OVERFLOW) ends in a full resync, and
nothing is lost."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BOTH_BACKENDS, Start, daemon_replica
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal

SMALL_QUEUE = 32

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to shrink the event queue's sysctl"),
    # While the queue is small, every watcher started beside it gets the small queue too.
    pytest.mark.serial,
]


@BOTH_BACKENDS
def test_overflow_triggers_full_sync_and_converges(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    watch_backend: str,
) -> None:
    queue_sysctl = Path(f"/proc/sys/fs/{watch_backend}/max_queued_events")
    overflowed = f"{watch_backend} queue overflowed"
    replica = daemon_replica(rsync_daemon_factory)
    (source / "before").write_text("present before the start")
    old = queue_sysctl.read_text()
    try:
        # The queue size is fixed when an inotify instance (fanotify group) is created, so trigsync's
        # instance keeps 32 slots after the old value is back (start_trigsync returns
        # once trigsync logs "watching").
        queue_sysctl.write_text(f"{SMALL_QUEUE}\n")
        trig = start_trigsync(replica)
    finally:
        queue_sysctl.write_text(old)
    assert queue_sysctl.read_text() == old
    wait_for(lambda: trig.log().count("full sync done") >= 1, timeout=20, what="initial sync")
    wait_trees_equal(source, replica.path, timeout=20)
    initial = trig.log().count("full sync done")
    before = trig.log()

    for burst in range(10):
        d = source / f"burst{burst}"
        d.mkdir()
        for i in range(300):
            (d / f"f{i:03d}").write_bytes(b"%d/%d\n" % (burst, i))
    waited = wait_trees_equal(source, replica.path, timeout=60)

    wait_for(lambda: "full sync done" in trig.log()[len(before) :], timeout=20, what="reconcile")
    # Exactly one reconciling sync per overflow episode (one warning each), not a reset
    # loop: one burst is usually one episode, two if the watcher caught up in between.
    wait_for(
        lambda: (log := trig.log()).count("full sync done") >= initial + log.count(overflowed),
        timeout=20,
        what="one reconcile per episode",
    )
    time.sleep(1.0)  # room for an unwanted extra reconcile to show up
    log = trig.log()
    episodes = log.count(overflowed)
    assert 1 <= episodes <= 3, log[-3000:]
    assert log.count("full sync done") == initial + episodes, log[-3000:]
    assert trig.proc is not None and trig.proc.running, log[-3000:]
    assert sum(1 for _ in replica.path.rglob("f*")) == 3000
    print(
        f"converged {waited:.2f} s after the last write; {log.count('full sync done')} full syncs"
    )
