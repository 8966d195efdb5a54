"""Standby rsyncs: started, connected and logged in, waiting on stdin for their list.

Most of a small batch's cost is rsync's start-up, connect and login (over ssh to a
host whose shell start-up is slow, 150 ms and more); a standby has paid it before the
next change arrives. So the next standby is started as soon as the current one has
been handed its list, not after its run ended. Changes that follow each other closely
use standbys faster than one can log in (~50 ms on a stock daemon, which pays Nagle in
its handshake), so the pool deepens (to ``MAX_DEPTH``) when a run takes the last one,
and shrinks again when one waits unused until it is recycled. Waiting standbys are
recycled on a timer, before a peer's idle timeout drops them, so a change after a long
quiet meets a fresh one too.

A standby counts against a daemon's ``max connections``. One that is refused is no
failure: it is started again once a slot frees, or, when others already wait, the
pool stays at the size the daemon allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Mapping, Sequence

from . import rsync
from .errors import SetupError

log = logging.getLogger(__name__)

MAX_DEPTH = 3  # measured: 3 did better back to back than 8 (more logins at once compete for CPU)
RECYCLE_MAX = 30.0  # a standby older than this is replaced, even with no timeout set
BUSY_PAUSE = (0.03, 0.1)  # a daemon's slot stays taken ~60 ms after a client exits
RETRY_MIN, RETRY_MAX = 0.5, 30.0  # a standby that died otherwise: the target may be down

Proc = asyncio.subprocess.Process


class Standby:
    """Runs each list through a waiting rsync when one is ready, else through a new one."""

    def __init__(
        self,
        *,
        enabled: bool,
        timeout: int,
        env: Mapping[str, str] | None,
        name: str,
    ) -> None:
        self.enabled = enabled
        self.env = env
        self.name = name
        self.stall = float(timeout) if timeout > 0 else None  # "no progress for N s"
        # A daemon's own `timeout` drops an idle connection; ours is not on the argv.
        self.recycle = min(RECYCLE_MAX, max(1.0, timeout * 0.5))
        self.depth = 1
        self._argv: Sequence[rsync.Arg] | None = None
        self._spares: dict[Proc, asyncio.TimerHandle] = {}  # oldest first
        self._born: dict[Proc, float] = {}
        self._starting: set[asyncio.Task[None]] = set()
        self._watchers: set[asyncio.Task[None]] = set()
        self._retry = RETRY_MIN

    @property
    def ready(self) -> bool:
        """Whether a standby rsync is waiting for a list now."""
        return any(p.returncode is None for p in self._spares)

    @property
    def pid(self) -> int | None:
        """The standby the next list goes to, if one waits."""
        return next((p.pid for p in self._spares if p.returncode is None), None)

    async def run(self, argv: Sequence[rsync.Arg], paths: bytes) -> rsync.Result:
        """Send ``paths`` with ``argv``; meanwhile the next standby starts for the next list."""
        self._argv = argv
        proc = self._take()
        if proc is not None:
            talk = asyncio.ensure_future(rsync.finish(proc, paths, stall=self.stall))
            if self._spares:
                # Another waits for the next change: starting one now would only take CPU
                # from this run (the daemon forks and logs it in), so start it after.
                talk.add_done_callback(lambda _: self.fill())
            else:
                self.fill()  # the list is on its way: the next change meets a connected rsync
            result = await talk
            if result.outcome is rsync.Outcome.OK:
                self._retry = RETRY_MIN
                return result
            if result.stalled is not None:
                # The path froze: a standby started meanwhile may hang the same way.
                await self.drop()
                return result
            # The peer may have dropped an idle standby: the batch goes again, fresh.
            log.debug("%s: standby failed (exit %d); running afresh", self.name, result.code)
            left_temp = rsync.cut_short(result)
        else:
            left_temp = False
        result = await rsync.run(argv, stdin=paths, env=self.env, stall=self.stall, stdout=True)
        if result.outcome is rsync.Outcome.OK:
            self._retry = RETRY_MIN
            self.fill()
        return dataclasses.replace(result, left_temp=True) if left_temp else result

    def _take(self) -> Proc | None:
        """The oldest waiting standby; taking the last one deepens the pool."""
        while self._spares:
            proc = next(iter(self._spares))
            self._spares.pop(proc).cancel()
            born = self._born.pop(proc, 0.0)
            if proc.returncode is None:
                if not self._spares:
                    self.depth = min(MAX_DEPTH, self.depth + 1)
                log.debug(
                    "%s: standby %d, started %.1f ms ago, takes the list (%d more wait)",
                    self.name,
                    proc.pid,
                    (time.monotonic() - born) * 1000,
                    len(self._spares),
                )
                return proc
        return None

    def fill(self) -> None:
        """Start standbys in the background until ``depth`` wait or are starting."""
        if not self.enabled or self._argv is None:
            return
        for _ in range(self.depth - len(self._spares) - len(self._starting)):
            self._spawn_later(self._argv, 0.0)

    def _spawn_later(self, argv: Sequence[rsync.Arg], pause: float) -> None:
        task = asyncio.ensure_future(self._start(argv, pause))
        self._starting.add(task)  # held: a task nobody holds may be collected mid-run
        task.add_done_callback(self._starting.discard)

    async def _start(self, argv: Sequence[rsync.Arg], pause: float) -> None:
        if pause:
            await asyncio.sleep(pause)
        if not self.enabled or len(self._spares) >= self.depth:
            return
        try:
            # stdout: a list run says there when it made the destination (Result.created_root)
            proc = await rsync.spawn(argv, stdin=True, env=self.env, stdout=True)
        except SetupError as exc:  # the next run reports it, fresh
            log.debug("%s: no standby: %s", self.name, exc)
            return
        if not self.enabled or len(self._spares) >= self.depth:
            await rsync.stop(proc)
            return
        loop = asyncio.get_running_loop()
        self._spares[proc] = loop.call_later(self.recycle, self._expire, proc)
        self._born[proc] = time.monotonic()
        watch = asyncio.ensure_future(self._watch(proc, argv))
        self._watchers.add(watch)
        watch.add_done_callback(self._watchers.discard)

    async def _watch(self, proc: Proc, argv: Sequence[rsync.Arg]) -> None:
        """A standby that exits before it is used is replaced, after a pause that fits why."""
        await proc.wait()
        timer = self._spares.pop(proc, None)
        self._born.pop(proc, None)
        if timer is None:
            return  # it was taken for a run (or dropped): finish() owns its exit
        timer.cancel()
        stderr = await proc.stderr.read() if proc.stderr else b""
        if rsync.busy(proc.returncode or 0, stderr):
            if self._spares:  # the daemon allows no more than those waiting: keep to that
                self.depth = max(1, len(self._spares))
                return
            pause = random.uniform(*BUSY_PAUSE)  # refused: the current run holds the slot
        else:
            pause, self._retry = self._retry, min(self._retry * 2, RETRY_MAX)
        log.debug(
            "%s: standby exited %s (%s); another in %.2f s",
            self.name,
            proc.returncode,
            rsync.reason(stderr),
            pause,
        )
        if self.enabled and not self._starting:
            self._spawn_later(argv, pause)

    def _expire(self, proc: Proc) -> None:
        """Replace a standby that waited ``recycle`` seconds, before a peer drops it."""
        self._born.pop(proc, None)
        if self._spares.pop(proc, None) is None:
            return
        self.depth = max(1, self.depth - 1)  # it was not needed: changes come slower
        log.debug("%s: recycling a standby after %.0f s", self.name, self.recycle)

        async def replace() -> None:
            await rsync.stop(proc)  # first: a daemon may allow one connection only
            if self._argv is not None and self.enabled:
                await self._start(self._argv, 0.0)

        task = asyncio.ensure_future(replace())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def drop(self) -> None:
        """Stop every waiting rsync (a run that needs the daemon's only slot)."""
        for task in list(self._starting):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        spares, self._spares = self._spares, {}
        self._born.clear()
        for proc, timer in spares.items():
            timer.cancel()
            await rsync.stop(proc)

    def disable(self) -> None:
        self.enabled = False
