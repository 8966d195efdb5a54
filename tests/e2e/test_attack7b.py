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

from tests.e2e.conftest import Start, daemon_replica, refusing_replica
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
    """Five renames in one batch: more than LINK_DEST_RUNS rebuilds side by side, each
    with its listing, against a daemon whose limit is not known yet."""
    replica = daemon_replica(rsync_daemon_factory, max_connections=max_connections)
    for i in range(5):
        _release(source, f"d{i}")
    trig = start_trigsync(replica, extra={"delay": 0.3})
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    for i in range(5):
        os.rename(source / f"d{i}", source / f"e{i}")
    wait_for(lambda: _moved(trig.log()), timeout=15, what="the renames")
    wait_trees_equal(source, replica.path, timeout=15)
    # A batch retried (its list run refused at the limit) applies its moves again: each
    # time all in place, never the whole directories resent.
    moved = _moved(trig.log())
    assert moved and all(m == (5, 5) for m in moved), trig.log()[-3000:]


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
    # A batch retried (its list run refused at the limit) applies its moves again: each
    # time all in place, never the whole directories resent.
    moved = _moved(trig.log())
    assert moved and all(m == (5, 5) for m in moved), trig.log()[-3000:]


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
    # No standby: at max connections = 1 it would hold the only slot from the initial
    # sync on, and the other client would never get in (CI: "never let in", once).
    trig = start_trigsync(replica, extra={"standby": False})
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    hog = hold_a_slot(daemon)
    try:
        os.rename(source / "a", source / "b")
        (source / "later").write_text("later")
        assert replica.log is not None
        log = replica.log
        wait_for(
            lambda: log.read_text().count("max connections") >= 6,
            timeout=10,
            what="the rebuild refused again and again",
        )
    finally:
        hog.close()
    wait_trees_equal(source, replica.path, timeout=15)


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
            "route add 10.3.0.0/16 via inet6 fe80::1 dev eth0",
        ):
            done = _ns_ip(ns, *args.split())
            assert done.returncode == 0, f"ip {args}: {done.stderr}"
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)  # noqa: S603


@pytest.mark.parametrize("ip", ["8.8.8.8", "10.7.0.7", "10.8.0.7", "10.5.0.7", "10.3.0.7"])
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


@pytest.mark.parametrize("max_connections", [2, 3])
def test_a_rename_beside_a_big_file_in_flight_at_a_daemons_limit(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    max_connections: int,
) -> None:
    """One lane sends a big file (its connection held), the other rebuilds two renamed
    directories: the rebuild's runs share what is left of the limit with the standbys."""
    replica = daemon_replica(rsync_daemon_factory, max_connections=max_connections)
    _release(source, "a")
    _release(source, "b")
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    with (source / "big.bin").open("wb") as big:
        for _ in range(40):
            big.write(os.urandom(1 << 20))
    os.rename(source / "a", source / "a2")
    os.rename(source / "b", source / "b2")
    wait_trees_equal(source, replica.path, timeout=20)
    wait_for(lambda: _moved(trig.log()), timeout=5, what="the renames")
    assert sum(n for n, _ in _moved(trig.log())) == 2, trig.log()[-3000:]


@pytest.mark.parametrize("standby", [True, False])
def test_a_renamed_directory_holding_a_path_the_daemon_refuses_at_its_last_slot(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    standby: bool,
) -> None:
    """The rebuild exits 23 (a daemon-side exclude below the renamed directory) at max
    connections 1: the rest arrives, the refused path is named, nothing hangs."""
    replica = refusing_replica(rsync_daemon_factory, 1)
    _release(source, "a")
    (source / "a" / "x.secret").write_text("refused")
    trig = start_trigsync(replica, extra={"standby": standby})
    wait_for((replica.path / "a" / "f39").exists, timeout=10, what="the initial sync")
    os.rename(source / "a", source / "b")
    (source / "later").write_text("later")
    wait_trees_equal(source, replica.path, timeout=15, exclude=lambda p: p.endswith(b".secret"))
    wait_for(lambda: _moved(trig.log()), timeout=5, what="the rename")


def test_one_refused_path_among_many_at_max_connections_1_is_found_in_time(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    """The halving that finds a refused path runs one short run after another, each on a
    connection of its own. Asked at once after the one before, each was refused (the
    daemon holds a slot ~60 ms after its client exits), the pause doubled to 1 s, and 26
    paths with one refused took 7 to 9 s: every change behind them, and a SIGTERM, waited."""
    replica = refusing_replica(rsync_daemon_factory, 1)
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    start = time.monotonic()
    for i in range(24):
        (source / f"f{i:02}").write_text(str(i))
    (source / "x.secret").write_text("refused")
    (source / "g").write_text("after")
    wait_for(lambda: "for b'x.secret'" in trig.log(), timeout=15, what="x.secret found")
    took = time.monotonic() - start
    wait_trees_equal(source, replica.path, timeout=5, exclude=lambda p: p.endswith(b".secret"))
    assert took < 4.0, f"the refused path was found after {took:.1f} s"


@pytest.mark.parametrize("max_connections", [1, 2])
def test_renames_back_and_forth_during_rebuilds_at_a_daemons_limit_end_equal(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    max_connections: int,
) -> None:
    """Directories renamed again while the rebuilds of their last names run: a -> b,
    b -> c, c -> a, swaps through a third name, each a few ms apart."""
    replica = daemon_replica(rsync_daemon_factory, max_connections=max_connections)
    for name in ("a", "x", "y"):
        _release(source, name)
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    steps = [("a", "b"), ("b", "c"), ("x", "t"), ("y", "x"), ("t", "y"), ("c", "a"), ("a", "d")]
    for old, new in steps:
        os.rename(source / old, source / new)
        (source / new / "touched").write_text(new)
        time.sleep(0.03)
    wait_trees_equal(source, replica.path, timeout=20)


def test_a_directory_made_again_at_max_connections_1_arrives_in_time(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    """A directory deleted and made again is sent whole by a run of its own beside the
    standby (Runner._replace), at the daemon's only slot."""
    replica = daemon_replica(rsync_daemon_factory, max_connections=1)
    _release(source, "a")
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    for round_ in range(3):
        shutil.rmtree(source / "a")
        _release(source, "a", files=5)
        (source / f"n{round_}").write_text("n")
        start = time.monotonic()
        try:
            took = wait_trees_equal(source, replica.path, timeout=15)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- trigsync log ---\n{trig.log()[-6000:]}") from None
        assert took < 2.0, f"round {round_}: equal after {time.monotonic() - start:.1f} s"
