"""A frozen connection (a peer gone silent without closing) must not hang a target.

rsync's ``--timeout`` does not fire on such a connection. The proxy here freezes every
connection without closing it, and when the path heals it leaves the frozen ones open
and silent for good (a peer that died without a FIN): only trigsync's own progress
watchdog can end those runs. The issue's case is a 45 s freeze with 500 files written;
CI scales the freeze down, and the watchdog's timeout with it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Start
from tests.e2e.harness import Replica
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.stallproxy import StallProxy
from tests.support.trees import wait_trees_equal

FREEZE_SECONDS = float(os.environ.get("TRIGSYNC_FREEZE_SECONDS", "6"))
FILES = 500
STALL = 2  # the sync's `timeout`: seconds without progress before a run is ended
NO_PROGRESS = "made no progress for"


@pytest.mark.timeout(FREEZE_SECONDS + 120)
def test_files_written_during_a_freeze_arrive_after_it_heals(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    daemon = rsync_daemon_factory(use_chroot=True)
    with StallProxy(daemon.port) as proxy:
        url = f"rsync://{daemon.user}@127.0.0.1:{proxy.port}/{daemon.module}/"
        replica = Replica(
            "rsyncd", url, daemon.module_path, {"password_file": str(daemon.password_file)}
        )
        trig = start_trigsync(replica, extra={"timeout": STALL, "contimeout": STALL})
        (source / "before").write_bytes(b"before the freeze")
        wait_trees_equal(source, replica.path, timeout=30)  # a standby now waits, connected

        proxy.stall()
        pause = FREEZE_SECONDS / FILES
        for i in range(FILES):
            (source / f"frozen-{i:03d}").write_bytes(os.urandom(512))
            time.sleep(pause)
        proxy.heal(keep_frozen=True)
        healed_at = time.monotonic()

        wait_trees_equal(source, replica.path, timeout=60)
        took = time.monotonic() - healed_at
        log = trig.log()
        assert NO_PROGRESS in log, log[-3000:]
        assert proxy.open_connections >= 1, "the proxy closed the frozen connections"
        assert trig.proc is not None and trig.proc.running, log[-3000:]
        assert trig.stop() == 0
    print(f"freeze {FREEZE_SECONDS:.0f} s: equal {took:.1f} s after the path healed")
