"""Hostile-tester cases for issue 12's second round: the ssh fast path's spawner and the
standby routing, on the setups users have."""

from __future__ import annotations

import os
import select
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.harness import Replica, run_cli
from tests.e2e.test_ssh_channel import (  # noqa: F401 - fixtures
    FAST_UP,
    one_by_one,
    replica_of,
    server,
)
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.sshd import SshServer
from tests.support.trees import wait_trees_equal


def channel_port(tmp_path: Path) -> int:
    [fast] = (tmp_path / "state" / "ssh").glob("*.fast")
    return int(fast.read_text().split()[0])


class Squatter(threading.Thread):
    """Another user of the receiver: keeps idle connections to the spawner's port open,
    and takes each slot that frees (no secret needed for any of that)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.held: list[socket.socket] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            while len(self.held) < 300:
                self.held.append(socket.create_connection(("127.0.0.1", self.port)))
            # The spawner closes those it has no room for: open them again at once.
            closed, _, _ = select.select(self.held, [], [], 0.005)
            for s in closed:
                self.held.remove(s)
                s.close()

    def stop(self) -> None:
        self.done.set()
        self.join(5)
        for s in self.held:
            s.close()


def test_a_local_user_holding_connections_to_the_spawner_stops_no_sync(
    source: Path,
    server: SshServer,  # noqa: F811 - fixture
    start_trigsync: Start,
    tmp_path: Path,
) -> None:
    (source / "seed").write_bytes(b"initial")
    trig = start_trigsync(replica_of(server))
    trig.wait_log(FAST_UP)
    one_by_one(source, server.replica, 2)  # standbys made before the channel are used up
    port = channel_port(tmp_path)
    squatter = Squatter(port)
    squatter.start()
    try:
        wait_for(lambda: len(squatter.held) >= 300, timeout=10, what="the squatter's connections")
        # One by one: the standbys logged in before the squatter came are used up first.
        for i in range(8):
            (source / f"after-{i}").write_bytes(os.urandom(100))
            wait_for((server.replica / f"after-{i}").exists, timeout=2, what=f"after-{i}")
    finally:
        squatter.stop()

    assert trig.stop() == 0


def rsync_children(pid: int) -> list[int]:
    """The rsync processes trigsync runs now (standbys and runs)."""
    found = []
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            name = Path(f"/proc/{child}/comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and name == "rsync":
            found.append(int(child))
    return found


@pytest.mark.parametrize("max_connections", [1])
def test_a_daemon_with_few_connections_is_not_asked_in_a_loop_while_idle(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    max_connections: int,
) -> None:
    """At each recycle (every timeout/2 s, here 1 s) of a standby on a daemon whose max
    connections the pool fills, the replacement was asked beside the old one, and then
    again every 30-100 ms (later 0.1-0.2 s) until the daemon had freed the old one's slot:
    one to five refused logins per recycle while nothing changed, each an @ERROR line in
    the daemon's log. Once refused, the pool knows the limit: the old one goes first, its
    replacement follows once the slot is free."""
    (source / "seed").write_bytes(b"initial")
    replica = daemon_replica(rsync_daemon_factory, max_connections=max_connections)
    trig = start_trigsync(replica, extra={"timeout": 2})  # a standby is recycled after 1 s
    wait_trees_equal(source, replica.path, timeout=10)
    for i in range(3):
        (source / f"f{i}").write_bytes(os.urandom(100))
        wait_for((replica.path / f"f{i}").exists, timeout=5, what=f"f{i}")
    log = replica.log
    assert log is not None and trig.proc is not None
    before = log.read_text().count("max connections")
    time.sleep(2.5)  # a window of quiet to count the refused logins in
    refused = log.read_text().count("max connections") - before
    # Two recycles: none refused once the pool knows the limit (a refusal while changes
    # came taught it), else one, which teaches it.
    allowed = 0 if before else 1
    assert refused <= allowed, f"{refused} standbys refused in 2.5 s of quiet"
    assert len(rsync_children(trig.proc.pid)) <= max_connections
    (source / "last").write_bytes(b"x")
    wait_trees_equal(source, replica.path, timeout=10)
    assert trig.stop() == 0


@pytest.mark.parametrize("config_text", [None, "state_dir = 5\n[[sync\n"])
def test_check_with_a_missing_or_broken_config_is_unknown(
    tmp_path: Path, config_text: str | None
) -> None:
    """The check's own --config that is missing or not TOML is the plugin called wrong:
    UNKNOWN (3) on stdout, not exit 2 (CRITICAL) with a log line on stderr."""
    path = tmp_path / "trigsync.toml"
    if config_text is not None:
        path.write_text(config_text)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 3, result
    assert result.stdout.startswith("TRIGSYNC UNKNOWN - "), result.stdout
    assert str(path) in result.stdout, result.stdout
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout


SECRET = r"(.*/)?[^/]*secret[0-9]+\.txt"  # no rsync pattern for it (the "+")


@pytest.mark.parametrize("replica", ["local"], indirect=True)
def test_a_directory_made_again_keeps_out_what_an_exclude_regex_excludes(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    """Kind.REPLACED sends the directory recursively: a regex exclude with no rsync
    pattern must hold there as on full syncs (nothing sent, the receiver's copy kept)."""
    from trigsync.excludes import regex_to_rsync_all

    assert regex_to_rsync_all(SECRET) is None
    site = source / "site"
    site.mkdir()
    (site / "page").write_bytes(b"old")
    trig = start_trigsync(replica, extra={"exclude_regex": [SECRET], "delay": 0.3})
    wait_trees_equal(source, replica.path, timeout=10)
    (replica.path / "site" / "secret1.txt").write_bytes(b"the receiver's own")
    shutil.rmtree(site)  # a deploy: the directory deleted and made again, in one batch
    site.mkdir()
    (site / "page").write_bytes(b"new")
    (site / "secret1.txt").write_bytes(b"top secret")
    (site / "sub").mkdir()
    (site / "sub" / "secret2.txt").write_bytes(b"top secret")
    wait_for((replica.path / "site" / "sub").exists, timeout=10, what="site/sub")
    assert "directories made again" in trig.log()
    assert sorted(os.listdir(replica.path / "site")) == ["page", "secret1.txt", "sub"]
    assert (replica.path / "site" / "secret1.txt").read_bytes() == b"the receiver's own"
    assert os.listdir(replica.path / "site" / "sub") == []
    assert trig.stop() == 0


def test_standbys_are_recycled_before_the_daemons_own_idle_timeout_drops_them(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    """A stock daemon with its own `timeout = 1` drops a standby that waited longer;
    trigsync's timeout (60 s: a recycle every 30 s) cannot see it, and each change after
    a quiet then cost a failed standby, a fresh run and a full sync. The first standby
    found dropped teaches the recycle age: after later quiets, a connected one waits."""
    (source / "seed").write_bytes(b"initial")
    replica = daemon_replica(rsync_daemon_factory, timeout=1)
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=10)
    for name in ("a", "b", "c", "d"):  # a starts a standby, which b finds dropped
        if name != "a":
            time.sleep(2.2)  # quiet past the daemon's timeout (1 s; it drops at 2 s)
        (source / name).write_bytes(b"x")
        wait_for((replica.path / name).exists, timeout=5, what=name)
    failed = trig.log().count("standby failed")
    assert failed <= 1, f"{failed} standbys dropped by the daemon were handed a list"
    assert trig.stop() == 0
