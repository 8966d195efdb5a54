"""Standby rsyncs: started, connected and logged in, waiting on stdin for their list.

Most of a small batch's cost is rsync's start-up, connect and login (over ssh to a
host whose shell start-up is slow, 150 ms and more); a standby has paid it before the
next change arrives. So the next standby is started as soon as the current one has
been handed its list, not after its run ended.

Each standby is written one NUL at its start, which rsync reads (and skips as an empty
name) only once its login is done and it builds its file list; the event loop wakes the
moment it does (``probe``). The policy built on that (``spares.Pool``): a list goes to the ready standby that waited longest;
with none ready, to the first that becomes ready (a stalled login, ~45 ms on a stock
daemon with Nagle on, gets another started beside it rather than holding the change);
the pool deepens while changes find none ready. Waiting standbys are recycled on a
timer, before a peer's idle timeout drops them, and an old one serves until its
replacement has logged in, so a change after a long quiet always meets a connected one.

A standby counts against a daemon's ``max connections``. One that is refused is no
failure: the pool learns the limit from it and keeps to it (``spares``). At the limit,
a recycled standby is killed first, and its replacement starts once the daemon has
freed the slot: asked beside it, it was refused, an ``@ERROR`` in the daemon's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import signal
import time
from collections.abc import Iterator, Mapping, Sequence

from . import rsync
from .errors import SetupError
from .probe import Probe
from .spares import Pool, Recycle

log = logging.getLogger(__name__)

TURN_MIN = 0.05  # between a refused run and the next, when no slot of ours is freeing
RECYCLE_MAX = 30.0  # a standby older than this is replaced, even with no timeout set
MIN_RECYCLE = 0.5  # nor is one replaced sooner (each replacement costs the peer a login)
RETRY_MIN, RETRY_MAX = 0.5, 30.0  # a standby that died otherwise: the target may be down
HEDGE_SLACK = 0.001  # a login's hedge fires this long past its limit: then it is slow
LOGIN_WAIT = 2.0  # a list waits this long for a login, then goes to the oldest standby

Proc = asyncio.subprocess.Process

# The daemon's end was told to stop (a restart: systemd or the init script sends SIGTERM
# to its connections): the standby died with it, at whatever age; no idle limit shows.
_RESTARTED = re.compile(rb"received SIGINT, SIGTERM, or SIGHUP \(code 20\)[^\n]*\[Receiver")


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
        self.pool: Pool[Proc] = Pool()
        self._argv: Sequence[rsync.Arg] | None = None
        self._timers: dict[Proc, asyncio.TimerHandle] = {}
        self._starting: set[asyncio.Task[None]] = set()
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._probes: dict[Proc, Probe] = {}
        self._changed = asyncio.Event()
        self._retry = RETRY_MIN
        self._pausing: dict[asyncio.Task[None], float] = {}  # _starting's waiting to retry
        self._refill: asyncio.TimerHandle | None = None  # at a daemon's limit: a slot frees
        self._dropping = False
        self._aside = 0  # blocks in which no standby starts (see aside)

    @property
    def ready(self) -> bool:
        """Whether a standby waits for a list: logged in, or logging in."""
        return any(p.returncode is None for p in self.pool)

    @property
    def connected(self) -> bool:
        """Whether a standby has logged in and waits for its list now."""
        return any(p.returncode is None for p in self.pool.ready())

    @property
    def pid(self) -> int | None:
        """The standby the next list goes to, if one waits."""
        proc = self.pool.pick() or self.pool.oldest()
        return proc.pid if proc is not None else None

    async def run(self, argv: Sequence[rsync.Arg], paths: bytes) -> rsync.Result:
        """Send ``paths`` with ``argv``; meanwhile the next standby starts for the next list."""
        self._argv = argv
        taken = await self._take()
        if taken is not None:
            proc, born = taken
            talk = asyncio.ensure_future(rsync.finish(proc, paths, stall=self.stall))
            talk.add_done_callback(lambda _: self._ran())
            if self.pool.ready():
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
            if result.refused:
                # rsync refused some paths (exit 23, 11) and sent the rest: the peer did
                # not drop it, and a fresh run would only refuse them again (and, at a
                # daemon's last slot, be refused itself while the next standby holds it).
                return result
            # The peer may have dropped an idle standby: the batch goes again, fresh.
            log.debug("%s: standby failed (exit %d); running afresh", self.name, result.code)
            if not _RESTARTED.search(result.stderr):
                self._recycle_sooner(time.monotonic() - born)
            left_temp = rsync.cut_short(result)
        else:
            left_temp = False
        result = await self.fresh(argv, paths)
        return dataclasses.replace(result, left_temp=True) if left_temp else result

    async def fresh(self, argv: Sequence[rsync.Arg], paths: bytes) -> rsync.Result:
        """One run on a connection of its own, counted against a daemon's limit: a refusal
        there teaches the pool the limit, and the pause before it asks again."""
        refused = False
        self.pool.run_fresh()
        try:
            result = await rsync.run(argv, stdin=paths, env=self.env, stall=self.stall, stdout=True)
            refused = rsync.busy(result.code, result.stderr)
        finally:
            self._ran(refused=refused)
        if refused:
            self.pool.refused(time.monotonic(), rsync.busy_limit(result.stderr))
            self.fill()  # once the pause after a refusal is over
        elif result.outcome is rsync.Outcome.OK or result.refused:
            self.pool.let_in()  # refused paths (exit 23, 11) too: the daemon let it in
            self._up()
        return result

    async def turn(self) -> None:
        """After a refusal at a daemon's limit, and our standbys dropped: wait until a slot
        of ours that just closed is free, as the pool learned it (0.15 s, doubled by each
        refusal that came too soon), or a moment when another client holds it."""
        await asyncio.sleep(max(TURN_MIN, self.pool.free_in(time.monotonic())))

    def _up(self) -> None:
        """A fresh run went through: the target is up. A standby that waits out the
        backoff of a target that was down (up to RETRY_MAX after a long outage) starts
        now: until then every change paid a fresh login."""
        self._retry = RETRY_MIN
        for task, pause in list(self._pausing.items()):
            if pause >= RETRY_MIN:  # not a refusal at max connections: that waits its turn
                task.cancel()
                self._pausing.pop(task, None)
                self._starting.discard(task)
        self.fill()

    async def slot(self) -> None:
        """At a daemon's limit with no standby, wait until a slot of ours that just closed
        is free (0.15 s at most, unless refusals taught more): a run asked before is refused."""
        if (freeing := self.pool.free_in(time.monotonic())) > 0:
            await asyncio.sleep(freeing)

    def _recycle_sooner(self, age: float) -> None:
        """A standby that waited ``age`` s failed when used: the peer may drop idle ones
        sooner than our recycle age (a daemon's own ``timeout = 5``, which the client
        cannot see). Recycle at half that age from now on, and stop the standbys already
        older, which the peer has likely dropped too: each would fail a change in turn."""
        if age < 2 * MIN_RECYCLE or age > self.recycle:
            return  # too young to tell (a daemon restarted), or older than we let any get
        self.recycle = max(MIN_RECYCLE, age * 0.5)
        log.info(
            "%s: a standby that waited %.1f s was dropped by the peer; recycling after %.1f s",
            self.name,
            age,
            self.recycle,
        )
        now, later = time.monotonic(), asyncio.get_running_loop().call_later
        for proc in list(self.pool):
            born = self.pool.born(proc)
            if born is None or proc in self.pool.retiring():
                continue
            self._cancel_timer(proc)  # not its probe: one logging in now is still heard
            if now - born >= self.recycle:
                self._stop_spare(proc)
            else:
                self._timers[proc] = later(born + self.recycle - now, self._expire, proc)

    async def _take(self) -> tuple[Proc, float] | None:
        """The ready standby that waited longest; with none ready, the first to log in."""
        proc, asked = self.pool.pick(), time.monotonic()
        if proc is None and (len(self.pool) or self._coming()):
            self.pool.deepen()  # a change found none ready: they log in too slowly
            self.fill()
            proc = await self._first_ready()
        if proc is None:
            return None
        now = time.monotonic()
        log.debug(
            "%s: standby %d, started %.1f ms ago, takes the list after %.1f ms for a login "
            "(%d more ready, %d logging in)",
            self.name,
            proc.pid,
            (now - (self.pool.born(proc) or now)) * 1000,
            (now - asked) * 1000,
            sum(1 for p in self.pool.ready() if p is not proc),
            sum(1 for p in self.pool.logging_in() if p is not proc),
        )
        born = self.pool.born(proc) or now
        self.pool.take(proc, now)
        self._forget(proc)
        return proc, born

    def _ran(self, *, refused: bool = False) -> None:
        """A run's connection closed (or was refused): at a daemon's limit, a standby may
        follow it."""
        self.pool.ran(time.monotonic(), refused=refused)
        if self.pool.limit is not None:
            self.fill()

    def _cancel_timer(self, proc: Proc) -> None:
        if (timer := self._timers.pop(proc, None)) is not None:
            timer.cancel()

    def _forget(self, proc: Proc) -> None:
        """No timer or probe of ``proc`` fires any more (it was taken, or it ended)."""
        self._cancel_timer(proc)
        if (probe := self._probes.pop(proc, None)) is not None:
            probe.cancel()

    async def _first_ready(self) -> Proc | None:
        """Wait until a standby is ready; past ``LOGIN_WAIT``, the oldest one (a frozen
        login is then the run's to detect: see rsync.finish); None once none is left."""
        deadline = time.monotonic() + LOGIN_WAIT
        while True:
            proc = self.pool.pick()
            if proc is not None:
                return proc
            if not len(self.pool) and not self._coming():
                return None  # none logs in (refused, dead, or waiting to retry): a fresh run
            left = deadline - time.monotonic()
            if left <= 0:
                return self.pool.oldest()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def _coming(self) -> bool:
        """Whether a standby is being started now (not after a pause to retry)."""
        return len(self._starting) > len(self._pausing)

    def prepare(self, argv: Sequence[rsync.Arg]) -> None:
        """Start a standby for lists sent with ``argv`` before the first one comes."""
        self._argv = argv
        self.fill()

    def fill(self) -> None:
        """Start standbys in the background until the pool has what it needs; at a
        daemon's limit, those held back start when a slot frees."""
        if not self.enabled or self._argv is None or self._dropping or self._aside:
            return
        now = time.monotonic()
        for _ in range(self.pool.to_start(now, len(self._starting))):
            self._spawn_later(self._argv, 0.0)
        wait = self.pool.blocked_for(now, len(self._starting))
        if wait is not None and self._refill is None:
            self._refill = asyncio.get_running_loop().call_later(wait, self._fill_again)

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """No standby starts inside the block, whose runs of their own need the daemon's
        slots (a rename's rebuild: at ``max connections``, a standby started between its
        runs takes the slot the next one asks for); the pool fills again at its end."""
        self._aside += 1
        try:
            yield
        finally:
            self._aside -= 1
            self.fill()

    def _fill_again(self) -> None:
        self._refill = None
        self.fill()

    def _spawn_later(self, argv: Sequence[rsync.Arg], pause: float) -> None:
        task = asyncio.ensure_future(self._start(argv, pause))
        self._starting.add(task)  # held: a task nobody holds may be collected mid-run
        task.add_done_callback(self._starting.discard)
        task.add_done_callback(lambda _: self._changed.set())  # _first_ready looks again

    async def _start(self, argv: Sequence[rsync.Arg], pause: float) -> None:
        if pause:
            task = asyncio.current_task()
            assert task is not None
            self._pausing[task] = pause
            try:
                await asyncio.sleep(pause)
            finally:
                self._pausing.pop(task, None)
        if not self.enabled:
            return
        try:
            # stdout: a list run says there when it made the destination (Result.created_root)
            proc = await rsync.spawn(argv, stdin=True, env=self.env, stdout=True)
        except SetupError as exc:  # the next run reports it, fresh
            log.debug("%s: no standby: %s", self.name, exc)
            return
        if not self.enabled or proc.stdin is None:
            await rsync.stop(proc)
            return
        self.pool.add(proc, time.monotonic())
        loop = asyncio.get_running_loop()
        self._timers[proc] = loop.call_later(self.recycle, self._expire, proc)
        try:
            self._probes[proc] = Probe(proc, lambda: self._logged_in(proc))
        except OSError as exc:  # its stdin is gone: it has died already
            log.debug("%s: standby without a pipe: %s", self.name, exc)
        # A login that has not ended by then is stalled: another starts beside it.
        loop.call_later(self.pool.slow_after() + HEDGE_SLACK, self._hedge, proc)
        watch = asyncio.ensure_future(self._watch(proc, argv))
        self._watchers.add(watch)
        watch.add_done_callback(self._watchers.discard)

    def _logged_in(self, proc: Proc) -> None:
        self._probes.pop(proc, None)
        if proc.returncode is None and proc in self.pool:
            self.pool.mark_ready(proc, time.monotonic())
            self._changed.set()
            if self.pool.surplus(alive=lambda p: p.returncode is None):
                self._stop_spare(proc)  # its twin logged in first and waits already
            self._retire_one()

    def _hedge(self, proc: Proc) -> None:
        if proc not in self.pool.logging_in() or proc.returncode is not None:
            return
        now, born = time.monotonic(), self.pool.born(proc) or 0.0
        if proc in self.pool.slow(now):
            self.fill()
        else:  # recent logins were slower: the limit moved
            later = born + self.pool.slow_after() + HEDGE_SLACK - now
            asyncio.get_running_loop().call_later(max(later, HEDGE_SLACK), self._hedge, proc)

    async def _watch(self, proc: Proc, argv: Sequence[rsync.Arg]) -> None:
        """A standby that exits before it is used is replaced, after a pause that fits why."""
        await proc.wait()
        self._forget(proc)
        if not self.pool.remove(proc):
            return  # it was taken for a run (or stopped): its taker owns its exit
        self._changed.set()
        stderr = await proc.stderr.read() if proc.stderr else b""
        why = rsync.reason(stderr)
        if rsync.busy(proc.returncode or 0, stderr):
            # Refused at the daemon's limit: the pool learns it, and asks again once a
            # slot frees. A recycled standby holds the slot its replacement asked for: it
            # goes first, and the replacement follows it (see _stop_spare).
            self.pool.refused(time.monotonic(), rsync.busy_limit(stderr))
            retiring = self.pool.retiring()
            if retiring:
                self._stop_spare(retiring[0])
            else:
                self.fill()
            log.debug("%s: standby refused (%s)", self.name, why)
            return
        self.pool.closed(time.monotonic())  # it may have held a slot
        pause, self._retry = self._retry, min(self._retry * 2, RETRY_MAX)
        log.debug(
            "%s: standby exited %s (%s); another in %.2f s", self.name, proc.returncode, why, pause
        )
        if self.enabled and not self._starting:
            self._spawn_later(argv, pause)

    def _expire(self, proc: Proc) -> None:
        """A standby waited ``recycle`` s unused: replace it before a peer drops it. It
        serves until the replacement has logged in, for half the recycle age at most."""
        self._timers.pop(proc, None)
        if proc not in self.pool:
            return
        log.debug("%s: recycling a standby after %.0f s", self.name, self.recycle)
        recycle = self.pool.retire(proc)
        if recycle is Recycle.REPLACE:
            later = asyncio.get_running_loop().call_later
            self._timers[proc] = later(self.recycle * 0.5, self._stop_spare, proc)
            self.fill()
        else:  # STOP_FIRST: at the daemon's limit, its replacement follows it
            self._stop_spare(proc)

    def _retire_one(self) -> None:
        """Stop the oldest recycled standby once another is ready."""
        retiring = self.pool.retiring()
        if retiring and len(self.pool.ready()) > len(retiring):
            self._stop_spare(retiring[0])

    def _stop_spare(self, proc: Proc) -> None:
        """Stop a waiting standby; at a daemon's limit, then start what the pool lacks
        once the daemon has freed its slot."""
        self._forget(proc)
        if not self.pool.stopping(proc):
            return
        task = asyncio.ensure_future(self._stop(proc))
        self._stopping.add(task)  # held, and awaited by drop()
        task.add_done_callback(self._stopping.discard)
        if self.pool.limit is not None:
            task.add_done_callback(lambda _: self.fill())

    async def _stop(self, proc: Proc) -> None:
        try:
            # After SIGTERM rsync sleeps 0.4 s in its handler (main.c sig_int), holding a
            # daemon's slot and keeping a dying worker alive; killed, it is gone at once.
            # A standby has no list yet, so nothing is cut short.
            await rsync.stop(proc, first=signal.SIGKILL)
        finally:
            self.pool.gone(time.monotonic())

    async def drop(self) -> None:
        """Stop every waiting rsync (a run that needs the daemon's only slot)."""
        self._dropping = True  # what stops meanwhile starts nothing
        try:
            if self._refill is not None:
                self._refill.cancel()
                self._refill = None
            for task in list(self._starting):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for proc in list(self.pool):
                self._forget(proc)
                if self.pool.stopping(proc):
                    await self._stop(proc)
            for task in list(self._stopping):
                await task
        finally:
            self._dropping = False
        self._changed.set()

    def disable(self) -> None:
        self.enabled = False
