"""Attacks on the standby's login probe and pool, against real rsync daemons.

The daemons are configured as receivers really are: the stock rsyncd.conf of the
tutorials, with the daemon's own ``timeout`` (which drops a standby that waited longer
than that) or ``max connections``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica, refusing_replica
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonFactory
from trigsync import rsync
from trigsync.standby import Standby

pytestmark = pytest.mark.timeout(60)


def standby_for(
    daemon: RsyncDaemon, source: Path, timeout: int = 60
) -> tuple[Standby, list[rsync.Arg]]:
    opts = rsync.Options(timeout=timeout)
    # The client's TCP_NODELAY keeps logins at a few ms (trigsync adds it to every run).
    transport = rsync.Transport(
        daemon.url, (f"--password-file={daemon.password_file}", "--sockopts=TCP_NODELAY")
    )
    argv = rsync.batch_argv(os.fsencode(source), opts, transport)
    return Standby(enabled=True, timeout=timeout, env=None, name="attack5"), argv


async def until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def test_a_standby_logging_in_when_the_peer_dropped_an_old_one_is_still_heard(
    rsync_daemon_factory: RsyncDaemonFactory, tmp_path: Path
) -> None:
    # The daemon's `timeout = 1` drops a standby that waited longer. The change that
    # meets it starts the next standby, then finds the old one dead and recycles the
    # rest sooner: that used to stop the new one's login probe too, so it was never
    # seen to log in. It held a connection, counted as stalled, and served no change
    # until the recycle stopped it.
    daemon = rsync_daemon_factory(timeout=1, tuned=True)  # a first login in ms: no hedge
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"a")
    standby, argv = standby_for(daemon, source)

    async def scenario() -> tuple[rsync.Result, list[int]]:
        standby.prepare(argv)
        assert await until(lambda: standby.connected, 5), "no standby logged in"
        # From now on a login takes 0.2 s (a pre-transfer script; an ssh login's shell
        # costs as much): the next standby still logs in when the old one fails. The
        # daemon reads its config again for each connection.
        slow = daemon.config_path.read_text() + "pre-xfer exec = sleep 0.2\n"
        daemon.config_path.write_text(slow)
        dropped = await until(lambda: "io timeout after 1 seconds" in daemon.log_text(), 5)
        assert dropped, "the daemon did not drop the idle standby"
        result = await standby.run(argv, rsync.path_list([b"a"]))
        await until(lambda: not standby.pool.logging_in(), 1.0)  # each login takes 0.2 s
        stuck = [p.pid for p in standby.pool.logging_in()]
        await standby.drop()
        return result, stuck

    result, stuck = asyncio.run(scenario())
    assert result.code == 0, result.stderr
    assert (daemon.module_path / "a").read_bytes() == b"a"
    assert standby.recycle < 30, "the dropped standby was not noticed"
    assert stuck == [], f"standbys {stuck} logged in but were never heard to"


def test_a_path_the_daemon_refuses_is_set_aside_at_its_last_slot(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    # A receiver with `max connections = 1` that refuses some names (a daemon-side
    # exclude: rsync exit 23). The standby's run delivered the rest, then the batch went
    # again fresh while the next standby held the slot; every retry did the same, so the
    # batch was never confirmed and the refused path never set aside: the target looped
    # for good, 25 refused connections a second.
    replica = refusing_replica(rsync_daemon_factory, 1)
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    names = [f"f{i}" for i in range(8)]
    for name in names[:4]:
        (source / name).write_text(name)
    (source / "x.secret").write_text("refused")
    for name in names[4:]:
        (source / name).write_text(name)
    wait_for(lambda: "for b'x.secret'" in trig.log(), timeout=5, what="the refused path set aside")
    (source / "after").write_text("after")
    wait_for((replica.path / "after").exists, timeout=5, what="a later change")
    assert sorted(p.name for p in replica.path.iterdir()) == sorted([*names, "after"])
    assert trig.stop() == 0
    assert "paths stay pending" not in trig.log()


def test_a_standby_is_back_as_soon_as_the_daemon_is(
    rsync_daemon: RsyncDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # While the daemon is down, each standby that fails waits twice as long as the last
    # before the next (up to 30 s). The first change after the daemon came back went
    # through on a fresh run, but the standby still waited out its pause: for up to 30 s
    # after an outage, every change paid a fresh login (~50 ms on a stock daemon).
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"a")
    standby, argv = standby_for(rsync_daemon, source)
    port = rsync_daemon.port
    rsync_daemon.stop()
    caplog.set_level(logging.DEBUG, logger="trigsync.standby")

    async def scenario() -> tuple[rsync.Result, bool]:
        standby.prepare(argv)
        backing_off = await until(lambda: "another in 2.00 s" in caplog.text, 5)
        assert backing_off, "the standby did not back off while the daemon was down"
        rsync_daemon.start(ports=[port])
        result = await standby.run(argv, rsync.path_list([b"a"]))
        connected = await until(lambda: standby.connected, 0.5)
        await standby.drop()
        return result, connected

    result, connected = asyncio.run(scenario())
    assert result.code == 0, result.stderr
    assert (rsync_daemon.module_path / "a").read_bytes() == b"a"
    assert connected, "no standby logged in within 0.5 s of the daemon's return"


def test_a_daemon_restart_is_not_taken_for_an_idle_timeout(
    rsync_daemon: RsyncDaemon, tmp_path: Path
) -> None:
    # A restart (systemd sends SIGTERM to the daemon's connections) kills the waiting
    # standby at whatever age it had. It was read as the peer's idle limit: the recycle
    # age fell from 30 s to half that age, for good, and each later restart halved it
    # again (down to 0.5 s: two logins a second per target, forever, in the daemon's log).
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"a")
    standby, argv = standby_for(rsync_daemon, source)

    async def scenario() -> rsync.Result:
        standby.prepare(argv)
        assert await until(lambda: standby.connected, 5), "no standby logged in"
        await asyncio.sleep(1.2)  # older than the youngest drop a recycle learns from
        rsync_daemon.restart()
        result = await standby.run(argv, rsync.path_list([b"a"]))
        await standby.drop()
        return result

    result = asyncio.run(scenario())
    assert result.code == 0, result.stderr
    assert (rsync_daemon.module_path / "a").read_bytes() == b"a"
    assert standby.recycle == 30.0, "a restart shortened the recycle age"


@pytest.mark.parametrize("max_connections", [1, 2])
def test_a_renamed_directory_is_rebuilt_in_place_at_a_daemons_last_slot(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    max_connections: int,
) -> None:
    """A rebuild's two or three connections met the standby's at the daemon's limit: one
    was refused (exit 5), the rename fell back, and the whole directory was sent again
    ('moved 0 of 1'), at every rename, without a word above DEBUG. Its runs now go
    through the runner's own (Runner.fresh), which frees the standby's slot and asks
    again, and no standby starts between them (Standby.aside)."""
    replica = daemon_replica(rsync_daemon_factory, max_connections=max_connections)
    (source / "release-1").mkdir()
    for i in range(40):  # enough files to be worth rebuilding rather than resending
        (source / "release-1" / f"f{i}").write_bytes(os.urandom(1000))
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    os.rename(source / "release-1", source / "release-2")
    wait_for(lambda: "renamed paths in place" in trig.log(), timeout=10, what="the rename")
    wait_for((replica.path / "release-2" / "f39").exists, timeout=10, what="the new name")
    assert "moved 1 of 1 renamed paths in place" in trig.log()
