"""partial.refused: which paths of a batch rsync refuses, by halves, within a run budget."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from trigsync import partial, rsync
from trigsync.changes import Change, Kind
from trigsync.errors import TransientSyncError

ENOSPC = b'rsync: [receiver] write failed on "/r/big": No space left on device (28)\n'


def _changes(n: int) -> list[Change]:
    return [Change(b"f%04d" % i, Kind.CHANGED) for i in range(n)]


def _isolate(
    changes: list[Change], bad: set[bytes] | None, code: int = 11
) -> tuple[partial.Refused, int]:
    """Isolate with a receiver that refuses ``bad`` (None: every path, a full disk)."""
    runs = 0

    async def send(half: Sequence[Change]) -> rsync.Result:
        nonlocal runs
        runs += 1
        refused = any(bad is None or c.path in bad for c in half)
        return rsync.Result(code if refused else 0, ENOSPC if refused else b"", 0.01)

    first = rsync.Result(code, ENOSPC, 0.01)
    return asyncio.run(partial.refused(changes, send, "t", first)), runs


@pytest.mark.parametrize("code", [11, 23])
def test_one_refused_path_among_many_costs_two_runs_per_halving(code: int) -> None:
    found, runs = _isolate(_changes(1000), {b"f0637"}, code)
    assert [c.path for c in found.changes] == [b"f0637"]
    assert runs <= 2 * 10 and found.result.code == code


def test_a_batch_of_one_is_refused_without_another_run() -> None:
    found, runs = _isolate(_changes(1), {b"f0000"})
    assert (len(found.changes), runs) == (1, 0)


def test_a_full_disk_costs_at_most_max_runs_and_keeps_every_path() -> None:
    changes = _changes(10_000)
    found, runs = _isolate(changes, None)
    assert runs <= partial.MAX_RUNS
    assert sorted(c.path for c in found.changes) == [c.path for c in changes]
    assert b"No space left on device" in found.result.stderr


def test_several_refused_paths_are_found_within_the_budget_or_at_the_next_retry() -> None:
    # Three branches of ten halvings each exceed MAX_RUNS: the search stops with small
    # parts set aside, and the retry a minute later (those parts as its batch) ends it.
    bad = {b"f0003", b"f0500", b"f0998"}
    found, runs = _isolate(_changes(1000), bad)
    assert runs <= partial.MAX_RUNS
    assert bad <= {c.path for c in found.changes} and len(found.changes) <= 50
    again, _ = _isolate(found.changes, bad)
    assert {c.path for c in again.changes} == bad


def test_a_half_failing_otherwise_fails_the_isolation() -> None:
    async def send(half: Sequence[Change]) -> rsync.Result:
        return rsync.Result(12, b"rsync: connection unexpectedly closed\n", 0.01)

    first = rsync.Result(11, ENOSPC, 0.01)
    with pytest.raises(TransientSyncError):
        asyncio.run(partial.refused(_changes(4), send, "t", first))


@pytest.mark.parametrize(
    ("code", "stdout", "stderr", "refused", "missing"),
    [
        (11, b"", ENOSPC, True, False),
        (23, b"", b'rsync: [generator] recv_generator: mkdir "/r/a" failed: x (13)\n', True, False),
        (11, b"", b'rsync: [Receiver] mkdir "/r" failed: Permission denied (13)\n', False, True),
        (0, b"created directory /r\n\n", b"", False, True),
        (0, b"\n\n", b"", False, False),
        (0, b"\ncreated directory x", b"", False, True),
    ],
)
def test_what_a_result_says_about_refused_paths_and_the_replica_root(
    code: int, stdout: bytes, stderr: bytes, refused: bool, missing: bool
) -> None:
    result = rsync.Result(code, stderr, 0.1, stdout)
    assert (result.refused, result.root_missing) == (refused, missing)


def test_the_reason_is_the_receivers_failure_not_the_senders_broken_pipe() -> None:
    stderr = ENOSPC + b"rsync error: error in file IO (code 11)\n"
    stderr += b"rsync: [sender] write error: Broken pipe (32)\n"
    assert "No space left on device" in rsync.reason(stderr)
