"""The retry policy alone: each kind of failure to its state, pause, backoff and log level."""

from __future__ import annotations

import logging

import pytest

from trigsync.errors import (
    BusySyncError,
    PermanentSyncError,
    SetupError,
    TransientSyncError,
)
from trigsync.retry import Backoff, Retry, decide, describe

LIMITS = Backoff(minimum=0.2, maximum=30.0, permanent=60.0)


def mid(low: float, high: float) -> float:
    return (low + high) / 2


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (BusySyncError("busy", code=5), Retry("backoff", 0.11, 4.0, logging.INFO)),
        (PermanentSyncError("auth", code=5), Retry("failing", 60.0, 4.0, logging.ERROR)),
        (TransientSyncError("refused", code=10), Retry("backoff", 4.0, 8.0, logging.WARNING)),
        (
            TransientSyncError("cut", code=12, cut_short=True),
            Retry("backoff", 4.0, 8.0, logging.WARNING, reconcile=True),
        ),
        (
            SetupError("cannot run 'rsync': Too many open files"),
            Retry("failing", 4.0, 8.0, logging.ERROR, unexpected=True),
        ),
        (RuntimeError("a bug"), Retry("failing", 4.0, 8.0, logging.ERROR, unexpected=True)),
    ],
)
def test_each_failure_maps_to_its_row(exc: Exception, expected: Retry) -> None:
    got = decide(exc, 4.0, LIMITS, jitter=mid)
    assert got == Retry(
        expected.state,
        pytest.approx(expected.pause),  # type: ignore[arg-type]
        expected.backoff,
        expected.level,
        expected.reconcile,
        expected.unexpected,
    )


def test_backoff_doubles_to_its_cap_and_jitter_stays_within_20_percent() -> None:
    backoff, pauses = LIMITS.minimum, []
    for _ in range(12):
        step = decide(OSError(24, "Too many open files"), backoff, LIMITS, jitter=max)
        pauses.append(step.pause)
        backoff = step.backoff
    assert backoff == LIMITS.maximum
    assert pauses[0] == pytest.approx(0.24) and pauses[-1] == pytest.approx(36.0)
    low = decide(RuntimeError(), 10.0, LIMITS, jitter=min)
    assert low.pause == pytest.approx(8.0)


def test_descriptions_are_one_line_naming_the_target() -> None:
    assert (
        describe(RuntimeError("boom"), "target t") == "target t: internal error: RuntimeError: boom"
    )
    assert describe(SetupError("cannot run 'x'"), "target t") == "target t: cannot run 'x'"
    assert describe(TransientSyncError("target t: rsync exit 10", code=10), "target t") == (
        "target t: rsync exit 10"
    )
