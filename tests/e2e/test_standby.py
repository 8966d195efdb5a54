"""The standby rsync is connected before the next change, on a stock daemon config.

Against an rsyncd.conf without ``socket options = TCP_NODELAY`` (what the tutorials
write), a fresh run costs ~10 ms more than a standby and ``--timeout`` on it ~40 ms
more (Nagle). So: plain list runs carry no ``--timeout`` (the progress watchdog does
its job); the next standby starts while the current run is handed its list, not after
it ended; a waiting standby is recycled on a timer, not when next used; a standby the
daemon refuses at ``max connections`` is started again, and no run fails for it.
Timing itself is measured by the benchmark (bench/latency.py), not here.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from trigsync import rsync
from trigsync.standby import Standby

pytestmark = pytest.mark.timeout(60)


def setup(daemon: RsyncDaemon, source: Path, *extra: str) -> tuple[Standby, list[rsync.Arg]]:
    opts = rsync.Options(timeout=2, extra=extra)  # a standby is recycled after 1 s
    transport = rsync.Transport(
        daemon.url, (f"--password-file={daemon.password_file}", "--sockopts=TCP_NODELAY")
    )
    argv = rsync.batch_argv(os.fsencode(source), opts, transport)
    return Standby(enabled=True, timeout=opts.timeout, env=None, name="test"), argv


def test_a_list_run_carries_no_timeout_but_a_full_sync_does() -> None:
    opts, transport = rsync.Options(timeout=60), rsync.Transport("rsync://h/m/")
    assert "--timeout=60" not in rsync.batch_argv(b"/src", opts, transport)
    assert "--timeout=60" in rsync.full_argv(b"/src", opts, transport)


def test_the_next_standby_starts_while_the_current_run_is_in_flight(
    rsync_daemon: RsyncDaemon, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "big").write_bytes(os.urandom(3 << 20))
    (source / "small").write_bytes(b"x")
    standby, argv = setup(rsync_daemon, source, "--bwlimit=2m")  # 1.5 s in flight

    async def scenario() -> tuple[int | None, int | None, rsync.Result]:
        await standby.run(argv, rsync.path_list([b"small"]))  # fresh; a standby follows
        await wait_ready(standby)
        first = standby.pid
        flight = asyncio.ensure_future(standby.run(argv, rsync.path_list([b"big"])))
        await asyncio.sleep(0.5)
        during = standby.pid  # the next one, connected while the big file still travels
        result = await flight
        await standby.drop()
        return first, during, result

    first, during, result = asyncio.run(scenario())
    assert result.code == 0, result.stderr
    assert (rsync_daemon.module_path / "big").read_bytes() == (source / "big").read_bytes()
    assert first is not None and during is not None, "no standby while the run was in flight"
    assert during != first


def test_a_waiting_standby_is_recycled_on_a_timer(
    rsync_daemon: RsyncDaemon, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"a")
    (source / "b").write_bytes(b"b")
    standby, argv = setup(rsync_daemon, source)

    async def scenario() -> tuple[int | None, int | None, rsync.Result]:
        await standby.run(argv, rsync.path_list([b"a"]))
        await wait_ready(standby)
        first = standby.pid
        await asyncio.sleep(standby.recycle + 0.5)  # quiet: older than the recycle age
        later = standby.pid
        result = await standby.run(argv, rsync.path_list([b"b"]))
        await standby.drop()
        return first, later, result

    first, later, result = asyncio.run(scenario())
    assert later is not None, "no standby waited after a quiet spell"
    assert later != first, "the old standby was not replaced before it was needed"
    assert result.code == 0, result.stderr
    assert (rsync_daemon.module_path / "b").read_bytes() == b"b"


def test_a_refused_standby_is_started_again_and_fails_nothing(
    rsync_daemon_factory: RsyncDaemonFactory, tmp_path: Path
) -> None:
    daemon = rsync_daemon_factory(max_connections=1)
    source = tmp_path / "src"
    source.mkdir()
    names = [f"f{i}".encode() for i in range(5)]
    for name in names:
        (source / os.fsdecode(name)).write_bytes(name)
    (source / "big").write_bytes(os.urandom(1 << 20))
    standby, argv = setup(daemon, source, "--bwlimit=2m")

    async def scenario() -> list[rsync.Result]:
        results = [await standby.run(argv, rsync.path_list([b"big"]))]  # a spare is refused
        for name in names:
            await wait_ready(standby)  # another one got the freed slot
            results.append(await standby.run(argv, rsync.path_list([name])))
        await standby.drop()
        return results

    results = asyncio.run(scenario())
    assert [r.code for r in results] == [0] * (len(names) + 1), [r.stderr for r in results]
    for name in names:
        assert (daemon.module_path / os.fsdecode(name)).read_bytes() == name
    assert "max connections" in daemon.log_text(), "no standby was ever refused"


async def wait_ready(standby: Standby, timeout: float = 10.0) -> None:
    """Until a standby has logged in and waits for its list (it read its probe byte)."""
    deadline = time.monotonic() + timeout
    while not standby.connected:
        assert time.monotonic() < deadline, "no standby logged in"
        await asyncio.sleep(0.005)


def test_a_change_goes_to_the_standby_that_logged_in(
    rsync_daemon: RsyncDaemon, tmp_path: Path
) -> None:
    """Against the stock daemon: the login is seen as done (the standby read its probe),
    and the next list goes to that standby, which delivers it."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"a")
    (source / "b").write_bytes(os.urandom(2048))
    standby, argv = setup(rsync_daemon, source)

    async def scenario() -> tuple[int | None, set[int], rsync.Result]:
        standby.prepare(argv)  # as after the initial sync: no list run yet
        await wait_ready(standby)
        logged_in = standby.pid
        result = await standby.run(argv, rsync.path_list([b"b"]))
        left = {p.pid for p in standby.pool}
        await standby.drop()
        return logged_in, left, result

    logged_in, left, result = asyncio.run(scenario())
    assert result.code == 0, result.stderr
    assert (rsync_daemon.module_path / "b").read_bytes() == (source / "b").read_bytes()
    assert logged_in is not None and logged_in not in left, "the list went elsewhere"


def test_recycling_never_leaves_the_pool_without_a_logged_in_standby(
    rsync_daemon: RsyncDaemon, tmp_path: Path
) -> None:
    """The old standby serves until its replacement has logged in: a change that comes
    at the moment of recycling (as one 40 s after the last does) meets a connected one."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"a")
    standby, argv = setup(rsync_daemon, source)

    async def scenario() -> tuple[int | None, int | None, list[bool], rsync.Result]:
        standby.prepare(argv)
        await wait_ready(standby)
        first = standby.pid
        seen = []
        deadline = time.monotonic() + standby.recycle + 5.0
        # Until it was recycled: replaced, and the old one stopped.
        while first in {p.pid for p in standby.pool} or standby.pid is None:
            assert time.monotonic() < deadline, "the standby was not recycled"
            seen.append(standby.connected)
            await asyncio.sleep(0.002)
        later = standby.pid
        result = await standby.run(argv, rsync.path_list([b"a"]))
        await standby.drop()
        return first, later, seen, result

    first, later, seen, result = asyncio.run(scenario())
    assert later is not None and later != first, "the standby was not recycled"
    assert all(seen), f"no standby logged in at {seen.count(False)} of {len(seen)} looks"
    assert result.code == 0, result.stderr
    assert (rsync_daemon.module_path / "a").read_bytes() == b"a"


def test_the_first_change_after_the_initial_sync_meets_a_logged_in_standby(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    # Without one, the first change after a start paid a fresh login: ~50 ms on a stock
    # daemon, one sample in five of the benchmark's 40 s pace.
    replica = daemon_replica(rsync_daemon_factory)
    (source / "old.txt").write_text("old")
    trig = start_trigsync(replica)
    wait_for(lambda: "full sync done" in trig.log(), timeout=15, what="the initial sync")
    (source / "first.txt").write_text("the first change")
    wait_trees_equal(source, replica.path, timeout=15)
    after = trig.log().split("full sync done", 1)[1]
    first_run = after.split("sent 1 paths", 1)[0]
    assert "takes the list" in first_run, first_run[-2000:]
