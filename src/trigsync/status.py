"""Immutable snapshots of the engine's state, per target and per sync.

Everything that reports on trigsync (the SIGUSR1 log line, ``trigsync status`` and
``check`` through the control socket, sd_notify's STATUS= line) reads these, never the
live objects. Fields added later carry defaults, so older builders keep working.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
    last_success: float | None = None  # wall-clock time
    batches: int = 0
    paths_sent: int = 0
    failures: int = 0
    restarts: int = 0  # unexpected errors (not an rsync exit) the worker carried on after
    journal_error: str | None = None  # why the state database lags memory, if it does
    paused: bool = False  # by `trigsync pause`: changes accumulate, nothing is sent


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


class SyncStatus(NamedTuple):
    source: str
    watches: int
    targets: tuple[TargetStatus, ...]


class EngineStatus(NamedTuple):
    syncs: tuple[SyncStatus, ...]
    pid: int = 0
    started: float | None = None  # wall-clock time the watches were placed (ready)
    heartbeat: float | None = None  # wall-clock time of the main loop's last tick
    down: tuple[str, ...] = ()  # parts whose task has ended: "watcher SRC", "worker KEY", "journal"
    stopping: bool = False  # SIGTERM came: the watchers are gone, the workers drain

    @property
    def idle(self) -> bool:
        return all(t.pending == 0 and t.in_flight == 0 for s in self.syncs for t in s.targets)
