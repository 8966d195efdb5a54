"""A standby rsync: started, connected and logged in, waiting on stdin for its list.

Most of a small batch's cost is rsync's start-up, connect and login (over ssh to a
host whose shell start-up is slow, 150 ms and more); a standby has paid it before the
next change arrives. So the next standby is started as soon as the current one has
been handed its list, not after its run ended: a change right after an arrival then
meets a connected rsync. A standby that waits is recycled on a timer, before a peer's
idle timeout drops it, so a change after a long quiet meets a fresh one too.

A standby counts against a daemon's ``max connections``. One that is refused (the
current run holds the only slot) is no failure: it is started again once a slot frees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping, Sequence

from . import rsync
from .errors import SetupError

log = logging.getLogger(__name__)

RECYCLE_MAX = 30.0  # a standby older than this is replaced, even with no timeout set
BUSY_PAUSE = (0.03, 0.1)  # a daemon's slot stays taken ~60 ms after a client exits
RETRY_MIN, RETRY_MAX = 0.5, 30.0  # a standby that died otherwise: the target may be down


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
        self._argv: Sequence[rsync.Arg] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._since = 0.0
        self._starting: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._retry = RETRY_MIN
        self._watchers: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        """Whether a standby rsync is waiting for a list now."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.ready and self._proc is not None else None

    async def run(self, argv: Sequence[rsync.Arg], paths: bytes) -> rsync.Result:
        """Send ``paths`` with ``argv``; meanwhile the next standby starts for the next list."""
        self._argv = argv
        proc = self._take()
        if proc is not None:
            talk = asyncio.ensure_future(rsync.finish(proc, paths, stall=self.stall))
            self.fill()  # after the list is on its way: the next change meets a connected rsync
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
        result = await rsync.run(argv, stdin=paths, env=self.env, stall=self.stall)
        if result.outcome is rsync.Outcome.OK:
            self._retry = RETRY_MIN
            self.fill()
        return result

    def _take(self) -> asyncio.subprocess.Process | None:
        proc, self._proc = self._proc, None
        self._cancel_timer()
        if proc is not None and proc.returncode is not None:
            return None  # it died waiting; its watcher has already started another
        return proc

    def fill(self) -> None:
        """Start a standby in the background unless one waits or is starting."""
        if not self.enabled or self._argv is None or self._proc is not None:
            return
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self._start(self._argv, 0.0))

    async def _start(self, argv: Sequence[rsync.Arg], pause: float) -> None:
        if pause:
            await asyncio.sleep(pause)
        if not self.enabled or self._proc is not None:
            return
        try:
            proc = await rsync.spawn(argv, stdin=True, env=self.env)
        except SetupError as exc:  # the next run reports it, fresh
            log.debug("%s: no standby: %s", self.name, exc)
            return
        if not self.enabled or self._proc is not None:
            await rsync.stop(proc)
            return
        self._proc, self._since = proc, time.monotonic()
        self._timer = asyncio.get_running_loop().call_later(self.recycle, self._expire, proc)
        watch = asyncio.ensure_future(self._watch(proc, argv))
        self._watchers.add(watch)  # a task nobody holds may be collected mid-run
        watch.add_done_callback(self._watchers.discard)

    async def _watch(self, proc: asyncio.subprocess.Process, argv: Sequence[rsync.Arg]) -> None:
        """A standby that exits before it is used is replaced, after a pause that fits why."""
        await proc.wait()
        if self._proc is not proc:
            return  # it was taken for a run (or dropped): finish() owns its exit
        self._proc = None
        self._cancel_timer()
        stderr = await proc.stderr.read() if proc.stderr else b""
        if rsync.busy(proc.returncode or 0, stderr):
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
        if self.enabled and (self._starting is None or self._starting.done()):
            self._starting = asyncio.ensure_future(self._start(argv, pause))

    def _expire(self, proc: asyncio.subprocess.Process) -> None:
        """Replace a standby that waited ``recycle`` seconds, before a peer drops it."""
        self._timer = None
        if self._proc is not proc:
            return
        self._proc = None
        log.debug("%s: recycling a standby after %.0f s", self.name, self.recycle)

        async def replace() -> None:
            await rsync.stop(proc)  # first: a daemon may allow one connection only
            if self._argv is not None and self.enabled:
                await self._start(self._argv, 0.0)

        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(replace())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def drop(self) -> None:
        """Stop the waiting rsync, if any (a run that needs the daemon's only slot)."""
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        proc = self._take()
        if proc is not None:
            await rsync.stop(proc)

    def disable(self) -> None:
        self.enabled = False
