"""The watchdog ping stops when a part of the daemon dies (in-process, real local target)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from tests.support.trees import wait_trees_equal
from trigsync import config, control, daemon, health
from trigsync.engine import Engine
from trigsync.errors import TrigsyncError
from trigsync.notify import Notifier


def drain(sock: socket.socket) -> list[bytes]:
    got: list[bytes] = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(sock.recv(4096))
    return got


def test_watchdog_is_withheld_while_a_worker_is_dead(tmp_path: Path) -> None:
    source, replica = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    replica.mkdir()
    (source / "a").write_text("a\n")
    state = tmp_path / "state"
    engine = Engine(
        config.from_args(str(source), [str(replica)], initial_sync=True, state_dir=str(state))
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.setblocking(False)
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})

        async def scenario() -> tuple[list[bytes], list[bytes], str, str]:
            stop = asyncio.Event()
            service = asyncio.create_task(daemon.serve(engine, stop, notifier))
            await asyncio.wait_for(engine.ready.wait(), 10)
            await asyncio.sleep(0.6)
            alive = drain(sock)
            (worker,) = engine.workers.values()
            worker.cancel()  # the worker is gone, as if it had crashed
            await asyncio.sleep(0.15)
            drain(sock)
            await asyncio.sleep(0.6)
            dead = drain(sock)
            reply = await asyncio.to_thread(control.request, control.socket_path(state), "status")
            verdict = health.check(health.from_json(reply["status"]), max_lag=60, warn_lag=30)
            stop.set()
            try:
                await service
            except TrigsyncError as exc:  # a part died: the stop is not a clean one
                return alive, dead, verdict.line, str(exc)
            return alive, dead, verdict.line, ""

        alive, dead, line, ended = asyncio.run(scenario())
    assert ended.startswith("internal error: a worker or the journal stopped"), ended
    assert alive.count(b"WATCHDOG=1") >= 3, alive
    assert b"WATCHDOG=1" not in dead, dead
    assert line.startswith(f"TRIGSYNC CRITICAL - worker {source} -> {replica} is down"), line
    wait_trees_equal(source, replica)
