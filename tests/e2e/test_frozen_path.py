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
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.sshd import SshServer
from tests.support.stallproxy import StallProxy
from tests.support.trees import wait_trees_equal

FREEZE_SECONDS = float(os.environ.get("TRIGSYNC_FREEZE_SECONDS", "6"))
FILES = 500
STALL = 4  # the sync's `timeout`: seconds without progress before a run is ended
NO_PROGRESS = "made no progress for"


@pytest.mark.long
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
        freeze_and_heal(proxy, replica, start_trigsync, source)


@pytest.mark.long
@pytest.mark.timeout(FREEZE_SECONDS + 150)
def test_over_ssh_files_written_during_a_freeze_arrive_after_it_heals(
    source: Path, ssh_target: SshServer, start_trigsync: Start
) -> None:
    with StallProxy(ssh_target.port) as proxy:
        # The proxy's port in the URL, the server's host key under its own name.
        options = ssh_target.ssh_options()
        at = options.index("-p")
        del options[at : at + 2]
        options += ["-o", f"HostKeyAlias=[{ssh_target.host}]:{ssh_target.port}"]
        url = f"ssh://{ssh_target.user}@127.0.0.1:{proxy.port}{ssh_target.replica}"
        replica = Replica("ssh", url, ssh_target.replica, {"ssh_options": options})
        freeze_and_heal(proxy, replica, start_trigsync, source)


def freeze_and_heal(
    proxy: StallProxy, replica: Replica, start_trigsync: Start, source: Path
) -> None:
    """Freeze the path under a connected standby, write FILES files, heal; all must arrive."""
    trig = start_trigsync(replica, extra={"timeout": STALL, "contimeout": STALL})
    wait_for(lambda: "full sync done" in trig.log(), timeout=30, what="the initial sync")
    (source / "before").write_bytes(b"before the freeze")
    # After a list run a standby waits: let it finish logging in (a freeze during the
    # handshake is one rsync's --timeout does catch), well before it is recycled.
    wait_for(lambda: ": sent 1 paths" in trig.log(), timeout=10, interval=0.005, what="a run")
    time.sleep(STALL / 8)

    # The first list goes to that standby, over a connection that is now frozen.
    proxy.stall()
    pause = FREEZE_SECONDS / FILES
    for i in range(FILES):
        (source / f"frozen-{i:03d}").write_bytes(os.urandom(512))
        time.sleep(pause)
    proxy.heal(keep_frozen=True)
    healed_at = time.monotonic()

    # Well under ssh's own ServerAlive limit (45 s), which ends a frozen master by itself.
    wait_trees_equal(source, replica.path, timeout=30, owners=replica.owners)
    took = time.monotonic() - healed_at
    log = trig.log()
    assert NO_PROGRESS in log, log[-3000:]
    assert proxy.open_connections >= 1, "the proxy closed the frozen connections"
    assert trig.proc is not None and trig.proc.running, log[-3000:]
    assert trig.stop() == 0
    print(f"freeze {FREEZE_SECONDS:.0f} s: equal {took:.1f} s after the path healed")
