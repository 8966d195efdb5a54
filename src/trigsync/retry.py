"""The retry policy, one pure table: a failed run's exception in; state, pause and log level out.

    exception                 state     pause                      next backoff   log
    BusySyncError             backoff   20-200 ms                  unchanged      INFO
    PermanentSyncError        failing   permanent_retry (60 s)     unchanged      ERROR
    other SyncError           backoff   backoff ± 20 %             doubled, cap   WARNING
    anything else (a bug,     failing   backoff ± 20 %             doubled, cap   ERROR once
    rsync cannot start)

Exits 23 and 11 that name paths (rsync.REFUSED) never come here: the paths are found by
halves and set aside (partial.py), the rest of the batch counts as sent. Exit 11 for the
replica's own root (rsync cannot make it again) is a TransientSyncError like any other.

Anything that is not an rsync exit (rsync cannot be started for EAGAIN or EMFILE, a bug
in a target) is retried like a transient failure but reported as failing, and logged
once per distinct message, so a loop that keeps hitting it does not flood the log.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from .errors import BusySyncError, PermanentSyncError, SyncError, TrigsyncError

Jitter = Callable[[float, float], float]


@dataclass(frozen=True, slots=True)
class Backoff:
    """The limits a worker's pauses stay within."""

    minimum: float = 0.2
    maximum: float = 30.0
    permanent: float = 60.0  # auth or module errors: retry slowly, report loudly


@dataclass(frozen=True, slots=True)
class Retry:
    """What to do after one failed run."""

    state: str  # backoff | failing
    pause: float  # seconds before the next try
    backoff: float  # the backoff to start from after the next failure
    level: int  # logging level of the line that reports it
    reconcile: bool = False  # queue one full sync once the target answers again
    unexpected: bool = False  # not an rsync exit: log once per message, traceback at DEBUG


def decide(
    exc: BaseException, backoff: float, limits: Backoff, jitter: Jitter = random.uniform
) -> Retry:
    """The policy for one failed run; ``backoff`` is the pause the last failure chose."""
    if isinstance(exc, BusySyncError):
        return Retry("backoff", jitter(0.02, 0.2), backoff, logging.INFO)  # a slot frees soon
    if isinstance(exc, PermanentSyncError):
        return Retry("failing", limits.permanent, backoff, logging.ERROR)
    pause = backoff * jitter(0.8, 1.2)
    following = min(backoff * 2, limits.maximum)
    if isinstance(exc, SyncError):
        # A receiver that died mid-file may hold a temp file (.name.XXXXXX) that no list
        # run removes: reconcile once it answers again.
        return Retry("backoff", pause, following, logging.WARNING, reconcile=exc.cut_short)
    return Retry("failing", pause, following, logging.ERROR, unexpected=True)


def describe(exc: BaseException, where: str) -> str:
    """One line for the log and the status snapshot."""
    if isinstance(exc, SyncError):
        return str(exc)  # rsync's errors name their target already
    if isinstance(exc, TrigsyncError):
        return f"{where}: {exc}"
    return f"{where}: internal error: {type(exc).__name__}: {exc}"
