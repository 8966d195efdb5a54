"""One worker per target: it batches pending changes, runs rsync, retries with backoff.

There is no fixed delay by default: an idle target gets a change at once, and while a
batch is in flight the next changes accumulate into the next batch. A target that
fails keeps its pending set and retries forever; it never holds back other targets.
No exception ends a worker: anything that is not an rsync exit (rsync cannot start, a
bug) puts its batch back, reports the target failing, and the worker carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import lanes, listing, partial, retry, rsync
from .changes import Batch, Kind, PendingSet, uncovered
from .errors import BusySyncError, SyncError
from .fullsync import FullSyncRunner
from .journal import Journal, unconfirmed_kinds
from .runner import Runner
from .state import StateStore
from .status import RunReport, Tally, TargetStatus, run_report
from .targets import Target

log = logging.getLogger(__name__)

PARALLEL_REFUSED_PAUSE = 60.0  # one run at a time this long after a refused second one


@dataclass(frozen=True, slots=True)
class Settings:
    """How a worker paces itself."""

    delay: float = 0.0  # lsyncd-style aggregation: wait this long after the first change
    backoff_min: float = 0.2
    backoff_max: float = 30.0
    permanent_retry: float = 60.0  # auth or module errors: retry slowly, report loudly
    max_pending: int = 1_000_000  # past this many paths, one full sync replaces them
    standby: bool = True  # keep one rsync connected and waiting for the next batch

    @property
    def limits(self) -> retry.Backoff:
        return retry.Backoff(self.backoff_min, self.backoff_max, self.permanent_retry)


class Dispatcher:
    """Feeds one target from its own pending set."""

    def __init__(
        self,
        source: bytes,
        target: Target,
        options: rsync.Options,
        settings: Settings = Settings(),
        *,
        store: StateStore | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.options = options
        self.settings = settings
        self.pending = PendingSet(max_paths=settings.max_pending)
        # Several syncs may feed one URL from different sources: key the state by both.
        self.key = f"{os.fsdecode(source)} -> {target.name}"
        self.journal = Journal(store, self.key)
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self.paused = False  # `trigsync pause`: changes accumulate, no run starts
        self.held = False  # a reload's successor, until the old worker has handed over
        self._state = "idle"
        self._since: float | None = None  # monotonic time of the oldest unsent change
        # up to max_parallel runs with disjoint paths, by lane
        self._flights: dict[int, lanes.Flight] = {}
        self._lanes = max(1, target.spec.max_parallel)
        self._single_until = 0.0  # the target refused a second connection: one run at a time
        self._last_error: str | None = None
        self._tally = Tally()
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner = Runner(source, target, options, standby=settings.standby)
        self._aside = partial.Aside(target.name, settings.permanent_retry, self.submit)
        self._full_owed = False  # a full sync ended refused (23, 11): owed until one completes
        self.observers: list[Callable[[RunReport], None]] = []  # metrics, hooks: told each run

    def submit(self, batch: Batch) -> None:
        """Queue newer changes; the worker sends them as soon as it is free."""
        if not batch:
            return
        if self._since is None:
            self._since = time.monotonic()
        was_full = self.pending.full
        # A run in flight reads the source as it is now, so it may deliver paths created
        # after it was taken; so may a run that listed whole directories or the whole
        # tree, whose events can still be on their way to us just after it ended.
        in_flight = bool(self._flights) or time.monotonic() < self._runner.unlisted_until
        flights = list(self._flights.values())
        self.pending.extend(
            batch,
            in_flight=in_flight,
            deleted_in_flight=lambda path: any(path in f.deleted for f in flights),
        )
        became_full = self.pending.full and not was_full
        self.journal.record((c.path for c in batch.changes), self.pending, became_full)
        if not self.pending and not self._flights:
            self._since = None  # e.g. created and deleted again before it was sent
            return
        self._idle.clear()
        self._wake.set()

    def close(self) -> None:
        """Ask the worker to send what is pending once more and stop."""
        self._closing = True
        self._runner.standby.disable()
        self._closed.set()
        self._wake.set()

    def succeed(self, old: Dispatcher) -> None:
        """Go on with a reload's retired worker's counts and last success (status and
        metrics would say "never" for a target just sent to)."""
        self._tally = old._tally

    def release(self) -> None:
        """Free what the worker holds open, once it has ended (its source view)."""
        self._runner.view.close()

    def pause(self, paused: bool = True) -> None:
        """Stop or restart taking batches; a run in flight finishes either way."""
        self.paused = paused
        self._wake.set()

    def hold(self, held: bool = True) -> None:
        """Like a pause, but the reload's own: `pause` and `resume` leave it alone."""
        self.held = held
        self._wake.set()

    async def wait_idle(self) -> None:
        """Wait until nothing is pending or in flight."""
        await self._idle.wait()

    def status(self) -> TargetStatus:
        now = time.monotonic()
        times = [self._since, *(f.since for f in self._flights.values())]
        oldest = min((t for t in times if t is not None), default=None)
        return self._tally.snapshot(
            TargetStatus(
                target=self.target.name,
                state=self._state,
                pending=len(self.pending),
                full_pending=self.pending.full,
                in_flight=sum(len(f.batch.changes) or 1 for f in self._flights.values()),
                lag=0.0 if oldest is None else now - oldest,
                last_error=self._last_error,
                journal_error=self.journal.error,
                paused=self.paused,
            )
        )

    async def run(self) -> None:
        """The worker loop; returns after close() once the pending set was tried a last time."""
        try:
            await asyncio.gather(*(self._lane(lane) for lane in range(self._lanes)))
        finally:
            await self._runner.standby.drop()

    async def _lane(self, lane: int) -> None:
        """One lane's loop, restarted after anything unexpected outside a run."""
        backoff = self.settings.backoff_min
        while True:
            try:
                return await self._loop(lane)
            except Exception as exc:
                backoff = await self._failed(exc, backoff)
                if self._state == "stopped":
                    return

    def _waited(self) -> float | None:
        """How long the oldest pending change has waited."""
        return None if self._since is None else time.monotonic() - self._since

    def _next_lane_due(self) -> float | None:
        """Seconds until a lane with nothing to do should look again, or None: on wake."""
        if not self._flights or not self.pending or len(self._flights) >= self._lanes:
            return None
        return lanes.due_in(self._waited())

    async def _loop(self, lane: int) -> None:
        backoff = self.settings.backoff_min
        while True:
            if self.pending and self.settings.delay and not self._closing and self._since:
                wait = self._since + self.settings.delay - time.monotonic()
                if wait > 0:  # lsyncd-style aggregation, which a stop cuts short
                    await self._sleep_unless_closing(wait)
            idle = not self._flights  # a batch that takes everything may confirm its rows
            seq = self.journal.sequence()
            single = time.monotonic() < self._single_until
            flights = self._flights.values()
            batch = (
                None
                if self.paused or self.held
                else lanes.take(
                    self.pending,
                    flights,
                    single=single,
                    waited=self._waited(),
                    connected=self._runner.standby.ready,
                    lanes=self._lanes,
                )
            )
            # One that took a part (a chunk, or beside runs) confirms only its own paths:
            # confirming seq would confirm what it left.
            takes_all = idle and not self.pending
            if batch is None:
                self._mark_idle()
                if self._closing and (not self.pending or self.paused or self.held):
                    self._state = "stopped"  # a paused target's pending set is saved for next start
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._next_lane_due())
                continue
            if self._closing and self._state in ("backoff", "failing"):
                # Shutting down while the target fails: keep the pending set for next start
                # rather than hold the stop up with one more doomed run.
                self.pending.restore(batch)
                log.warning("%s: %d paths stay pending", self.target.name, len(self.pending))
                self._state = "stopped"
                return
            beside = bool(self._flights)  # a run beside others needs a connection of its own
            try:
                await self._send(lane, batch, seq, takes_all=takes_all)
            except BusySyncError as exc:
                if beside and not self._closing:
                    # The daemon's max connections: one run at a time, and no failure.
                    self._single_until = time.monotonic() + PARALLEL_REFUSED_PAUSE
                    log.info("%s; one run at a time for %.0f s", exc, PARALLEL_REFUSED_PAUSE)
                    continue
                backoff = await self._failed(exc, backoff)
            except Exception as exc:  # not only rsync's exits: see retry.decide
                backoff = await self._failed(exc, backoff)
            else:
                backoff = self.settings.backoff_min
            if self._state == "stopped":
                return

    async def _failed(self, exc: Exception, backoff: float) -> float:
        """Record a failed run and pause before the next; returns the next backoff."""
        self._tally.failures += 1
        self._last_error = retry.describe(exc, f"target {self.target.name}")
        if self._closing:
            log.error("%s; %d paths stay unsent at shutdown", self._last_error, len(self.pending))
            self._state = "stopped"
            return backoff
        policy = retry.decide(exc, backoff, self.settings.limits)
        self._state = policy.state
        level = policy.level
        if policy.unexpected:
            self._tally.restarts += 1
            if self._last_error == self._tally.logged:
                level = logging.DEBUG  # once per distinct error, not once per retry
            self._tally.logged = self._last_error
            log.debug("%s: traceback", self.target.name, exc_info=exc)
        if policy.reconcile:
            self.submit(Batch(full=True))
        log.log(level, "%s; retrying in %.2f s", self._last_error, policy.pause)
        await self._sleep_unless_closing(policy.pause)
        return policy.backoff

    async def _sleep_unless_closing(self, seconds: float) -> None:
        # A change arriving during backoff must not cut it short; only close() does.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout=seconds)

    def restore_saved(self) -> int:
        """Queue what the state directory says is still pending; returns how many paths."""
        saved = self.journal.load()
        self.pending.extend(saved)
        if saved:
            self._since = time.monotonic()
            self._idle.clear()
            self._wake.set()
        return len(saved.changes) + saved.full

    def unconfirmed(self) -> Batch:
        """Everything the target has not confirmed: pending, in flight and set aside.

        A full sync that ended refused (exit 23 or 11) stays owed, across a restart too."""
        extra = [f.batch for f in self._flights.values()]
        batch = unconfirmed_kinds(self.pending.peek(), [*extra, Batch(self._aside.changes())])
        return batch if not self._full_owed or batch.full else Batch(batch.changes, full=True)

    async def _send(self, lane: int, batch: Batch, seq: int | None, *, takes_all: bool) -> None:
        """Run one batch taken at journal sequence ``seq``, confirmed on success: all of
        it if the batch ``takes_all`` that was pending, else the batch's own paths."""
        deleted = frozenset(c.path for c in batch.changes if c.kind is Kind.DELETED)
        self._flights[lane] = lanes.Flight(batch, self._since, deleted=deleted)
        if not self.pending:
            self._since = None
        self._state = "syncing"
        started = time.monotonic()
        try:
            entries, whole = (
                ([], []) if batch.full else listing.entries(batch.changes, self._runner.entries_in)
            )
            if whole:  # before the first await: no other lane can take a batch meanwhile
                self._flights[lane] = self._flights[lane]._replace(whole=frozenset(whole))
            result = await self._runner.run(batch, entries, bool(whole))
            if result.root_missing and not batch.full:
                # Someone deleted the replica: rsync made its root again for this batch
                # alone, or cannot make it (then this run fails and is retried). Only a
                # full sync rebuilds the rest, once the root is there again.
                log.warning(
                    "%s: the replica's root directory was gone (%s); queueing a full sync "
                    "to rebuild it",
                    self.target.name,
                    "rsync could not make it" if result.root_failed else "rsync made it again",
                )
                self.submit(Batch(full=True))
            if result.refused and batch.changes:
                refused = await self._runner.isolate(batch.changes, result)
                if refused.changes:
                    self._last_error = self._aside.add(refused)
            elif result.refused:
                # A full sync moved what it could (23) or stopped at a file the receiver
                # cannot write (11); repeating it at once fixes neither: it is retried
                # slowly, and the changes meanwhile flow (or are set aside) on their own.
                self._last_error = (
                    f"target {self.target.name}: full sync incomplete: rsync exit "
                    f"{result.code} ({rsync.describe(result.code)}): {rsync.reason(result.stderr)}"
                )
                log.error("%s", self._last_error)
                self._full_owed = True
                if not self._closing:  # retried; save() keeps it owed in the state dir
                    loop = asyncio.get_running_loop()
                    loop.call_later(self.settings.permanent_retry, self.submit, Batch(full=True))
            else:
                rsync.raise_for(result, f"target {self.target.name}")
        except BaseException as exc:
            if isinstance(exc, SyncError):
                self._observe(batch, started, exc)
            self.pending.restore(batch)
            since = self._flights[lane].since
            if since is not None and (self._since is None or since < self._since):
                self._since = since
            raise
        finally:
            del self._flights[lane]
            self._wake.set()  # a lane waiting for these paths to be free may go now
        if result.left_temp:  # delivered, but a first try died mid-file on the receiver
            self.submit(Batch(full=True))
        if takes_all:
            self.journal.confirm(seq, full=batch.full and not result.refused)
        else:
            self.journal.confirm_paths(batch, seq)
        if batch.covered:
            self.submit(uncovered(batch, lambda p: os.path.lexists(self.source + b"/" + p)))
        self._tally.sent(len(batch.changes))
        if batch.full and not result.refused:
            self._full_owed = False
        if not result.refused and not self._full_owed:
            self._last_error = None
        self._state = "idle"
        self._observe(batch, started, None, result.code)
        if batch.full:
            done = "incomplete" if result.refused else "done"
            log.info("%s: full sync %s in %.3f s", self.target.name, done, result.seconds)
        else:
            log.info(
                "%s: sent %d paths in %.3f s", self.target.name, len(batch.changes), result.seconds
            )

    @property
    def closing(self) -> bool:
        """Whether close() was called: the worker ends once it has tried a last time."""
        return self._closing

    @property
    def full_sync(self) -> FullSyncRunner | None:
        """What runs a full sync's first rsync (a progress reporter), if not plain rsync."""
        return self._runner.full_sync

    @full_sync.setter
    def full_sync(self, runner: FullSyncRunner | None) -> None:
        self._runner.full_sync = runner

    def _observe(
        self, batch: Batch, started: float, exc: SyncError | None, code: int | None = None
    ) -> None:
        """Tell the observers how a run went; an observer's bug never stops the worker."""
        if not self.observers:
            return
        partial = self._last_error if code in rsync.REFUSED else None
        report = run_report(
            self.source,
            self.target.name,
            batch,
            started=started,
            exc=exc,
            code=code,
            partial=partial,
        )
        for observer in self.observers:
            try:
                observer(report)
            except Exception:
                log.exception("%s: a run observer failed", self.target.name)

    def _mark_idle(self) -> None:
        if not self._flights and not self.pending:
            self._since = None
            self._idle.set()
            if self._state not in ("failing", "stopped"):
                self._state = "idle"
