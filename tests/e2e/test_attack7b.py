"""Attacks on this session's changes (renames through the runner's own runs at a daemon's
max connections, the surplus standby, the forgotten limit), against real rsync daemons
with the stock rsyncd.conf of the tutorials (auth users + secrets file, no socket
options, max connections)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.harness import Replica
from tests.e2e.test_attack6b import hold_a_slot
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from trigsync.doctor_findings import quickack_route

pytestmark = pytest.mark.timeout(60)

_MOVED = re.compile(r"moved (\d+) of (\d+) renamed paths in place")


def _release(root: Path, name: str, files: int = 40) -> None:
    (root / name).mkdir()
    for i in range(files):  # enough to be worth rebuilding rather than resending
        (root / name / f"f{i}").write_bytes(os.urandom(1000))


def _moved(log: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in _MOVED.findall(log)]


@pytest.mark.parametrize("max_connections", [1, 2])
def test_many_directories_renamed_at_once_at_a_daemons_limit_all_move_in_place(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    max_connections: int,
) -> None:
    """Six renames in one batch: more than LINK_DEST_RUNS rebuilds side by side, each
    with its listing, against a daemon whose limit is not known yet."""
    replica = daemon_replica(rsync_daemon_factory, max_connections=max_connections)
    for i in range(6):
        _release(source, f"d{i}")
    trig = start_trigsync(replica, extra={"delay": 0.3})
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    for i in range(6):
        os.rename(source / f"d{i}", source / f"e{i}")
    wait_for(lambda: _moved(trig.log()), timeout=15, what="the renames")
    wait_trees_equal(source, replica.path, timeout=15)
    assert _moved(trig.log()) == [(6, 6)], trig.log()[-3000:]


@pytest.mark.parametrize("max_connections", [1, 2])
def test_a_rename_chain_at_a_daemons_limit_ends_equal(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    max_connections: int,
) -> None:
    """b -> c then a -> b in one batch: the rebuild of b must come from the old a, and
    c from the old b, never the other way round."""
    replica = daemon_replica(rsync_daemon_factory, max_connections=max_connections)
    _release(source, "a")
    _release(source, "b")
    trig = start_trigsync(replica, extra={"delay": 0.3})
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    os.rename(source / "b", source / "c")
    os.rename(source / "a", source / "b")
    wait_for(lambda: _moved(trig.log()), timeout=15, what="the renames")
    wait_trees_equal(source, replica.path, timeout=15)


@pytest.mark.parametrize("max_connections", [2, 3])
def test_renames_while_another_client_holds_slots_end_equal(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    max_connections: int,
) -> None:
    replica = daemon_replica(rsync_daemon_factory, max_connections=max_connections)
    daemon = replica.daemon
    assert daemon is not None
    for i in range(5):
        _release(source, f"d{i}")
    trig = start_trigsync(replica, extra={"delay": 0.3})
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    hog = hold_a_slot(daemon)
    try:
        for i in range(5):
            os.rename(source / f"d{i}", source / f"e{i}")
        wait_for(lambda: _moved(trig.log()), timeout=20, what="the renames")
        wait_trees_equal(source, replica.path, timeout=20)
    finally:
        hog.close()
    assert _moved(trig.log()) == [(5, 5)], trig.log()[-3000:]


def test_a_rename_refused_for_good_while_another_client_holds_the_only_slot(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
) -> None:
    """Every run of the rebuild is refused (BUSY_TRIES): nothing is lost once the other
    client leaves, and the target does not hang."""
    replica = daemon_replica(rsync_daemon_factory, max_connections=1)
    daemon = replica.daemon
    assert daemon is not None
    _release(source, "a")
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    hog = hold_a_slot(daemon)
    try:
        os.rename(source / "a", source / "b")
        (source / "later").write_text("later")
        wait_for(lambda: "max connections" in trig.log(), timeout=10, what="a refusal")
        time.sleep(2.5)
    finally:
        hog.close()
    wait_trees_equal(source, replica.path, timeout=15)
    print(trig.log()[-3000:])


def test_renames_with_excludes_below_and_symlinked_dirs_end_equal(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    """Each kind's moves now run through the runner's own runs: a renamed directory with
    an excluded file below it, a renamed symlink to a directory, a rename chain."""
    _release(source, "a")
    (source / "a" / "x.tmp").write_text("excluded")
    _release(source, "b")
    _release(source, "real")
    (source / "link").symlink_to("real")
    trig = start_trigsync(replica, excludes=["*.tmp"], extra={"delay": 0.3})
    wait_for(lambda: "full sync done" in trig.log(), timeout=15, what="the initial sync")
    os.rename(source / "b", source / "c")
    os.rename(source / "a", source / "b")
    os.rename(source / "link", source / "link2")
    wait_for(lambda: _moved(trig.log()), timeout=15, what="the renames")
    wait_trees_equal(
        source,
        replica.path,
        timeout=15,
        owners=replica.owners,
        exclude=lambda p: p.endswith(b".tmp"),
    )
    assert not (replica.path / "b" / "x.tmp").exists()


def test_renames_while_the_daemon_restarts_end_equal(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory, max_connections=2)
    daemon = replica.daemon
    assert daemon is not None
    for i in range(3):
        _release(source, f"d{i}")
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    daemon.kill()
    os.rename(source / "d0", source / "e0")
    wait_for(lambda: "renamed paths in place" in trig.log(), timeout=10, what="the rename tried")
    os.rename(source / "d1", source / "e1")
    os.rename(source / "e1", source / "f1")
    daemon.restart()
    os.rename(source / "d2", source / "e2")
    wait_trees_equal(source, replica.path, timeout=20)


def _ns_ip(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argv list, no shell
        ["ip", "netns", "exec", ns, "ip", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def sender_ns() -> Iterator[str]:
    """A network namespace standing for a sender whose routes have real shapes (a cloud
    host's onlink gateway, policy routing, a route mtu, a second source address)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    ns = f"ts7b{os.getpid() % 100000}"
    added = subprocess.run(["ip", "netns", "add", ns], capture_output=True, check=False)  # noqa: S603
    if added.returncode:
        pytest.skip("no network namespaces here")
    try:
        for args in (
            "link add eth0 type veth peer name eth1",
            "link set lo up",
            "link set eth0 up",
            "link set eth1 up",
            "addr add 1.2.3.4/32 dev eth0",
            "addr add 1.2.3.5/32 dev eth0",
            "route add default via 172.31.1.1 dev eth0 onlink",
            "route add 10.7.0.0/16 via 172.31.1.1 dev eth0 onlink table 100",
            "rule add to 10.7.0.0/16 table 100 pref 100",
            "route add 10.8.0.0/16 via 172.31.1.1 dev eth0 onlink mtu lock 1300",
            "route add 10.5.0.0/16 via 172.31.1.1 dev eth0 onlink src 1.2.3.5",
        ):
            done = _ns_ip(ns, *args.split())
            assert done.returncode == 0, f"ip {args}: {done.stderr}"
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)  # noqa: S603


@pytest.mark.parametrize("ip", ["8.8.8.8", "10.7.0.7", "10.8.0.7", "10.5.0.7"])
def test_the_printed_route_fix_is_taken_and_keeps_the_route(sender_ns: str, ip: str) -> None:
    """doctor's printed command, run as printed on a sender with such routes: ip takes it,
    and the address then goes the same way (gateway, table, source, mtu) with quickack."""
    before = _ns_ip(sender_ns, "route", "get", ip).stdout
    fix = quickack_route(ip, before)
    assert fix is not None and "\n" not in fix
    argv = fix.split()
    assert argv[:3] == ["ip", "route", "add"]
    done = _ns_ip(sender_ns, *argv[1:])
    assert done.returncode == 0, f"{fix}: {done.stderr.strip()}"
    after = _ns_ip(sender_ns, "route", "get", ip).stdout
    assert after.split() == [*before.split(), "quickack", "1"], (before, after)
