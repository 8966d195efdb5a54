"""Attack 6b: a run of its own (replace, isolate, halving) counted against a daemon's
learned ``max connections`` (commit 7f26f69), with another client holding a slot."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, refusing_replica
from tests.e2e.test_attack12b import rsync_children
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonFactory

LATER = 8  # changes back to back once the other client left


def hold_a_slot(daemon: RsyncDaemon) -> socket.socket:
    """Another client that picked the module and sits at its password challenge: the
    daemon counts it against max connections until it closes (a slow transfer does the
    same)."""
    deadline = time.monotonic() + 5
    while True:  # asked again while trigsync's connections fill the daemon
        conn = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
        assert conn.recv(64).startswith(b"@RSYNCD:")
        conn.sendall(b"@RSYNCD: 31.0\n" + daemon.module.encode() + b"\n")
        said = conn.recv(256)
        if b"AUTHREQD" in said:
            return conn
        conn.close()
        assert time.monotonic() < deadline, f"the other client was never let in: {said!r}"
        time.sleep(0.05)


@pytest.mark.parametrize("max_connections", [1, 2])
def test_refused_paths_and_a_shared_slot_lose_nothing_and_latency_comes_back(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    max_connections: int,
) -> None:
    replica = refusing_replica(rsync_daemon_factory, max_connections)
    daemon = replica.daemon
    assert daemon is not None
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    hogs = [hold_a_slot(daemon) for _ in range(max_connections - 1)]
    try:
        for i in range(4):
            (source / f"a{i}").write_text(f"a{i}")
        (source / "x.secret").write_text("refused")
        for i in range(4):
            (source / f"b{i}").write_text(f"b{i}")
        wait_for(lambda: "for b'x.secret'" in trig.log(), timeout=10, what="x.secret set aside")
        wait_for((replica.path / "b3").exists, timeout=5, what="b3")
    finally:
        for hog in hogs:
            hog.close()
    # The other client is gone, and so are the refusals: a standby must be back at once
    # (it waited out the refusals' back-off, up to 5 s, while each change paid a login).
    assert trig.proc is not None and replica.log is not None
    pid, took = trig.proc.pid, []
    for i in range(LATER):
        start = time.monotonic()
        (source / f"later{i}").write_text(str(i))
        wait_for((replica.path / f"later{i}").exists, timeout=5, what=f"later{i}")
        took.append(time.monotonic() - start)
    before = replica.log.read_text().count("max connections")
    wait_for(lambda: rsync_children(pid), timeout=1.5, what="a standby back after the refusals")
    time.sleep(0.3)
    refused = replica.log.read_text().count("max connections") - before
    names = sorted(p.name for p in replica.path.iterdir())
    assert names == sorted(p.name for p in source.iterdir() if p.name != "x.secret")
    assert refused == 0, f"{refused} connections refused once quiet: the target loops"
    # Refusals that another client or the halving caused double the learned wait for a
    # slot to free, up to 1 s; each connection let in shrinks it back: back to back at
    # max connections = 1, the changes after them soon arrive as fast as before.
    assert max(took[-3:]) < 0.5, f"changes took {took} s once the other client left"
    assert trig.stop() == 0
