"""One worker per target: it batches pending changes, runs rsync, retries with backoff.

There is no fixed delay by default: an idle target gets a change at once, and while a
batch is in flight the next changes accumulate into the next batch. A target that
fails keeps its pending set and retries forever; it never holds back other targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import lanes, listing, partial, rsync
from .changes import Batch, Change, Kind, PendingSet, uncovered
from .errors import BusySyncError, PermanentSyncError, SyncError
from .rsync import PARTIAL
from .standby import Standby
from .state import StateStore
from .status import TargetStatus
from .targets import Target

log = logging.getLogger(__name__)

# How long after a run that sent unlisted paths (whole directories, the whole tree) a new
# path still counts as possibly delivered. inotify events reach us within milliseconds;
# the margin covers a busy event loop. Erring long only costs a needless delete entry.
UNLISTED_GRACE = 1.0
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
        self.store = store
        # Several syncs may feed one URL from different sources: key the state by both.
        self.key = f"{os.fsdecode(source)} -> {target.name}"
        self._transport = target.transport()
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._state = "idle"
        self._since: float | None = None  # monotonic time of the oldest unsent change
        # up to max_parallel runs with disjoint paths, by lane
        self._flights: dict[int, lanes.Flight] = {}
        self._lanes = max(1, target.spec.max_parallel)
        self._single_until = 0.0  # the target refused a second connection: one run at a time
        self._last_error: str | None = None
        self._last_success: float | None = None
        self._batches = 0
        self._paths = 0
        self._failures = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._standby = Standby(
            enabled=settings.standby,
            timeout=options.timeout,
            env=self._transport.env,
            name=target.name,
        )
        self._aside: dict[bytes, Kind] = {}  # paths rsync refused (exit 23), retried slowly
        self._unlisted_until = 0.0

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
        in_flight = bool(self._flights) or time.monotonic() < self._unlisted_until
        self.pending.extend(batch, in_flight=in_flight)
        if self.store is not None:
            if self.pending.full and not was_full:
                self.store.mark_full(self.key, True)
            paths = [c.path for c in batch.changes]
            self.store.record(self.key, paths, map(self.pending.get, paths))
        if not self.pending and not self._flights:
            self._since = None  # e.g. created and deleted again before it was sent
            return
        self._idle.clear()
        self._wake.set()

    def close(self) -> None:
        """Ask the worker to send what is pending once more and stop."""
        self._closing = True
        self._standby.disable()
        self._closed.set()
        self._wake.set()

    async def wait_idle(self) -> None:
        """Wait until nothing is pending or in flight."""
        await self._idle.wait()

    def status(self) -> TargetStatus:
        now = time.monotonic()
        times = [self._since, *(f.since for f in self._flights.values())]
        oldest = min((t for t in times if t is not None), default=None)
        return TargetStatus(
            target=self.target.name,
            state=self._state,
            pending=len(self.pending),
            full_pending=self.pending.full,
            in_flight=sum(len(f.batch.changes) or 1 for f in self._flights.values()),
            lag=0.0 if oldest is None else now - oldest,
            last_error=self._last_error,
            last_success=self._last_success,
            batches=self._batches,
            paths_sent=self._paths,
            failures=self._failures,
        )

    async def run(self) -> None:
        """The worker loop; returns after close() once the pending set was tried a last time."""
        try:
            await asyncio.gather(*(self._loop(lane) for lane in range(self._lanes)))
        finally:
            await self._standby.drop()

    def _take(self) -> Batch | None:
        """The next batch, or None while everything pending touches a run in flight."""
        if not self._flights:
            return self.pending.take() or None
        flights = self._flights.values()
        if time.monotonic() < self._single_until or not lanes.worth_another_run(
            len(self.pending), self._waited(), connected=self._standby.ready
        ):
            return None
        if self.pending.full or self.pending.has_moves or lanes.alone(flights):
            return None  # these run alone
        return self.pending.take(lanes.busy(flights)) or None

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
                if wait > 0:
                    await asyncio.sleep(wait)  # lsyncd-style aggregation
            takes_all = not self._flights  # a batch that takes everything may confirm its rows
            seq = self.store.sequence(self.key) if self.store is not None and takes_all else None
            batch = self._take() if self.pending else None
            if batch is None:
                self._mark_idle()
                if self._closing and not self.pending:
                    self._state = "stopped"
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._next_lane_due())
                continue
            if self._closing and self._state in ("backoff", "failing"):
                # Shutting down while the target fails: keep the pending set for next start
                # rather than hold the stop up with one more doomed run.
                self.pending.restore(batch)
                log.warning(
                    "%s: %d paths stay pending for the next start",
                    self.target.name,
                    len(self.pending),
                )
                self._state = "stopped"
                return
            beside = bool(self._flights)  # a run beside others needs a connection of its own
            try:
                await self._send(lane, batch, seq)
            except BusySyncError as exc:
                if beside and not self._closing:
                    # The daemon's max connections: one run at a time, and no failure.
                    self._single_until = time.monotonic() + PARALLEL_REFUSED_PAUSE
                    log.info("%s; one run at a time for %.0f s", exc, PARALLEL_REFUSED_PAUSE)
                    continue
                backoff = await self._failed(exc, backoff)
            except SyncError as exc:
                backoff = await self._failed(exc, backoff)
            else:
                backoff = self.settings.backoff_min
            if self._state == "stopped":
                return

    async def _failed(self, exc: SyncError, backoff: float) -> float:
        """Record a failed run and pause before the next; returns the next backoff."""
        self._failures += 1
        self._last_error = str(exc)
        if self._closing:
            log.error("%s; %d paths stay unsent at shutdown", exc, len(self.pending))
            self._state = "stopped"
            return backoff
        if isinstance(exc, BusySyncError):
            self._state = "backoff"
            pause = random.uniform(0.02, 0.2)  # a slot frees within ~60 ms
            log.info("%s; retrying in %.2f s", exc, pause)
        elif isinstance(exc, PermanentSyncError):
            self._state = "failing"
            pause = self.settings.permanent_retry
            log.error("%s; retrying in %.0f s", exc, pause)
        else:
            if exc.cut_short:
                # The receiver may have died mid-file and left a temp file (.name.XXXXXX)
                # that no list run removes: reconcile once it answers again.
                self.submit(Batch(full=True))
            self._state = "backoff"
            pause = backoff * random.uniform(0.8, 1.2)
            backoff = min(backoff * 2, self.settings.backoff_max)
            log.warning("%s; retrying in %.1f s", exc, pause)
        await self._sleep_unless_closing(pause)
        return backoff

    async def _sleep_unless_closing(self, seconds: float) -> None:
        # A change arriving during backoff must not cut it short; only close() does.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout=seconds)

    def restore_saved(self) -> int:
        """Queue what the state directory says is still pending; returns how many paths."""
        if self.store is None:
            return 0
        saved = self.store.load(self.key)
        self.pending.extend(saved)
        if saved:
            self._since = time.monotonic()
            self._idle.clear()
            self._wake.set()
        return len(saved.changes) + saved.full

    def save(self) -> None:
        """Write the pending set as it is now (at a clean stop)."""
        if self.store is not None:
            pending = self.pending.peek()
            aside = tuple(Change(p, k) for p, k in self._aside.items())
            self.store.replace(self.key, Batch(pending.changes + aside, pending.full))

    async def _send(self, lane: int, batch: Batch, seq: int | None) -> None:
        """Run one batch; ``seq`` (if the batch took everything) is confirmed on success."""
        self._flights[lane] = lanes.Flight(batch, self._since)
        if not self.pending:
            self._since = None
        self._state = "syncing"
        try:
            entries, whole = (
                ([], []) if batch.full else listing.entries(batch.changes, self._entries_in)
            )
            if whole:  # before the first await: no other lane can take a batch meanwhile
                self._flights[lane] = self._flights[lane]._replace(whole=frozenset(whole))
            result = await self._run(batch, entries, bool(whole))
            if result.code == PARTIAL and batch.changes:
                await self._set_aside(await self._isolate(batch.changes))
            elif result.code == PARTIAL:
                # A full sync moved everything it could; repeating it would not fix the rest.
                self._last_error = f"target {self.target.name}: full sync incomplete: {rsync.reason(result.stderr)}"
                log.error("%s", self._last_error)
            else:
                rsync.raise_for(result, f"target {self.target.name}")
        except BaseException:
            self.pending.restore(batch)
            since = self._flights[lane].since
            if since is not None and (self._since is None or since < self._since):
                self._since = since
            raise
        finally:
            del self._flights[lane]
            self._wake.set()  # a lane waiting for these paths to be free may go now
        if self.store is not None and seq is not None:
            self.store.confirm(self.key, seq, full=batch.full)
        if batch.covered:
            self.submit(uncovered(batch, lambda p: os.path.lexists(self.source + b"/" + p)))
        self._batches += 1
        self._paths += len(batch.changes)
        self._last_success = time.time()
        if result.code != PARTIAL:
            self._last_error = None
        self._state = "idle"
        if batch.full:
            log.info("%s: full sync done in %.3f s", self.target.name, result.seconds)
        else:
            log.info(
                "%s: sent %d paths in %.3f s", self.target.name, len(batch.changes), result.seconds
            )

    async def _run(self, batch: Batch, entries: list[bytes], whole: bool) -> rsync.Result:
        try:
            result = await self._run_batch(batch, entries)
            if result.stalled is not None:
                await self.target.reset()  # the next run must not reuse a frozen connection
            return result
        finally:
            if batch.full or batch.moves or whole:
                # It may have sent paths it did not list, whose events may still be on
                # their way: see in_flight in submit().
                self._unlisted_until = time.monotonic() + UNLISTED_GRACE

    async def _run_batch(self, batch: Batch, entries: list[bytes]) -> rsync.Result:
        transport = self._transport
        if batch.moves:
            moved = await self.target.apply_moves(batch.moves, self.source, self.options)
            log.info(
                "%s: moved %d of %d renamed paths in place",
                self.target.name,
                moved,
                len(batch.moves),
            )
        if batch.full:
            argv = rsync.full_argv(self.source, self.options, transport)
            await self._standby.drop()  # it may hold a daemon's only connection slot
            return await rsync.run(argv, env=transport.env, stall=self._standby.stall)
        argv = rsync.batch_argv(self.source, self.options, transport)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: paths %r", self.target.name, entries)
        return await self._standby.run(argv, rsync.path_list(entries))

    def _entries_in(self, directory: bytes, limit: int) -> int | None:
        """How many entries a source directory holds (counting to ``limit`` + 1 at most),
        or None if it is not a directory (now)."""
        path = self.source + b"/" + directory
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return None
            with os.scandir(path) as it:
                return sum(1 for _ in itertools.islice(it, limit + 1))
        except OSError:
            return None

    async def _isolate(self, changes: Sequence[Change]) -> list[Change]:
        """Find the paths that make rsync exit 23; the rest are delivered on the way."""
        argv = rsync.batch_argv(self.source, self.options, self._transport)

        async def send(half: Sequence[Change]) -> rsync.Result:
            paths = rsync.path_list(c.path for c in half)
            return await rsync.run(
                argv, stdin=paths, env=self._transport.env, stall=self._standby.stall
            )

        return await partial.refused(changes, send, self.target.name)

    async def _set_aside(self, failing: list[Change]) -> None:
        """Paths rsync cannot deliver (unreadable, refused by the receiver) are retried
        slowly on their own, so they never hold back the paths that do go through."""
        if not failing:
            return
        names = ", ".join(repr(c.path) for c in failing[:3])
        more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        self._last_error = (
            f"target {self.target.name}: rsync exit 23 (partial transfer) for {names}{more}; "
            f"retrying them every {self.settings.permanent_retry:.0f} s"
        )
        log.error("%s", self._last_error)
        self._aside.update((c.path, c.kind) for c in failing)
        asyncio.get_running_loop().call_later(self.settings.permanent_retry, self._retry_aside)

    def _retry_aside(self) -> None:
        aside, self._aside = self._aside, {}
        self.submit(Batch(tuple(Change(p, k) for p, k in aside.items())))

    def _mark_idle(self) -> None:
        if not self._flights and not self.pending:
            self._since = None
            self._idle.set()
            if self._state not in ("failing", "stopped"):
                self._state = "idle"
