"""Immutable snapshots of the engine's state, per target and per sync.

Everything that reports on trigsync (the SIGUSR1 log line today; status, health checks
and metrics later) reads these, never the live objects.
"""

from __future__ import annotations

from typing import NamedTuple


class TargetStatus(NamedTuple):
    """An immutable snapshot of one target's state."""

    target: str
    state: str  # idle | syncing | backoff | failing | stopped
    pending: int
    full_pending: bool
    in_flight: int
    lag: float  # seconds since the oldest change not yet confirmed by the target
    last_error: str | None
    last_success: float | None  # wall-clock time
    batches: int
    paths_sent: int
    failures: int
    restarts: int = 0  # unexpected errors (not an rsync exit) the worker carried on after
    journal_error: str | None = None  # why the state database lags memory, if it does


class SyncStatus(NamedTuple):
    source: str
    watches: int
    targets: tuple[TargetStatus, ...]


class EngineStatus(NamedTuple):
    syncs: tuple[SyncStatus, ...]

    @property
    def idle(self) -> bool:
        return all(t.pending == 0 and t.in_flight == 0 for s in self.syncs for t in s.targets)
