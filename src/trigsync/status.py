"""Immutable snapshots of the engine's state, per target and per sync.

Everything that reports on trigsync (the SIGUSR1 log line, ``trigsync status`` and
``check`` through the control socket, sd_notify's STATUS= line) reads these, never the
live objects. Fields added later carry defaults, so older builders keep working.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import NamedTuple

from .changes import Batch
from .errors import BusySyncError, PermanentSyncError, SyncError


class TargetStatus(NamedTuple):
    """An immutable snapshot of one target's state."""

    target: str
    state: str  # idle | syncing | backoff | failing | stopped
    pending: int
    full_pending: bool
    in_flight: int
    lag: float  # seconds since the oldest change not yet confirmed by the target
    last_error: str | None
    last_success: float | None = None  # wall-clock time
    batches: int = 0
    paths_sent: int = 0
    failures: int = 0
    restarts: int = 0  # unexpected errors (not an rsync exit) the worker carried on after
    journal_error: str | None = None  # why the state database lags memory, if it does
    paused: bool = False  # by `trigsync pause`: changes accumulate, nothing is sent
    canary_rtt: float | None = None  # seconds the last canary took to arrive, if it did
    canary_error: str | None = None  # why the last canary failed, if it did
    progress: str | None = None  # a full sync under way: percent, bytes, rate, ETA, files


@dataclass(slots=True)
class Tally:
    """A worker's running counts, copied into each TargetStatus."""

    batches: int = 0
    paths_sent: int = 0
    failures: int = 0
    restarts: int = 0  # unexpected errors (not an rsync exit) the worker carried on after
    last_success: float | None = None
    logged: str | None = None  # the last unexpected error logged at ERROR

    def snapshot(self, status: TargetStatus) -> TargetStatus:
        """``status`` with the counts filled in."""
        return status._replace(
            last_success=self.last_success,
            batches=self.batches,
            paths_sent=self.paths_sent,
            failures=self.failures,
            restarts=self.restarts,
        )

    def sent(self, paths: int) -> None:
        self.batches += 1
        self.paths_sent += paths
        self.last_success = time.time()
        self.logged = None  # the same error after a success is news again


def handing_over(old: TargetStatus, new: TargetStatus) -> TargetStatus:
    """One target while a reload's new worker waits for the old one's run in flight: the
    old run and its backlog, the new worker's waiting changes, and the user's pause."""
    return old._replace(
        target=new.target,
        pending=old.pending + new.pending,
        full_pending=old.full_pending or new.full_pending,
        lag=max(old.lag, new.lag),
        paused=new.paused,
    )


class SyncStatus(NamedTuple):
    source: str
    watches: int
    targets: tuple[TargetStatus, ...]
    overflows: int = 0  # inotify queue overflows since start (each costs a full sync)


class EngineStatus(NamedTuple):
    syncs: tuple[SyncStatus, ...]
    pid: int = 0
    started: float | None = None  # wall-clock time the watches were placed (ready)
    heartbeat: float | None = None  # wall-clock time of the main loop's last tick
    down: tuple[str, ...] = ()  # parts whose task has ended: "watcher SRC", "worker KEY", "journal"
    stopping: bool = False  # SIGTERM came: the watchers are gone, the workers drain

    @property
    def idle(self) -> bool:
        return all(
            t.pending == 0 and t.in_flight == 0 and not t.full_pending
            for s in self.syncs
            for t in s.targets
        )


class RunReport(NamedTuple):
    """What one rsync run of one target did, as its observers (metrics, hooks) see it."""

    source: str
    target: str
    paths: tuple[bytes, ...]  # the batch's paths (none for a full sync)
    full: bool
    seconds: float
    kind: str  # ok | partial | transient | permanent | busy
    error: str | None = None
    code: int | None = None  # rsync's exit status, when it ran


def run_report(
    source: bytes,
    target: str,
    batch: Batch,
    *,
    started: float,
    exc: SyncError | None,
    code: int | None,
    partial: str | None,
) -> RunReport:
    """How one run went: ``exc`` if it failed, ``partial`` (the error) if rsync exit 23."""
    paths = tuple(c.path for c in batch.changes)
    seconds = time.monotonic() - started
    if exc is not None:
        return RunReport(
            os.fsdecode(source),
            target,
            paths,
            batch.full,
            seconds,
            failure_kind(exc),
            str(exc),
            exc.code,
        )
    kind = "partial" if partial is not None else "ok"
    return RunReport(os.fsdecode(source), target, paths, batch.full, seconds, kind, partial, code)


def failure_kind(exc: SyncError) -> str:
    """A failed run's kind for RunReport and the failures metric."""
    if isinstance(exc, BusySyncError):
        return "busy"
    return "permanent" if isinstance(exc, PermanentSyncError) else "transient"
