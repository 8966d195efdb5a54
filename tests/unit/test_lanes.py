"""Runs beside runs: disjoint paths only, and only when another run pays for itself."""

from __future__ import annotations

from trigsync.changes import Batch, Change, Kind, Move
from trigsync.lanes import (
    PARALLEL_AFTER,
    PARALLEL_AT,
    Flight,
    alone,
    busy,
    due_in,
    worth_another_run,
)


def flight(*paths: bytes, whole: frozenset[bytes] = frozenset()) -> Flight:
    return Flight(Batch(tuple(Change(p, Kind.CHANGED) for p in paths)), None, whole)


def test_the_same_path_its_parents_and_its_children_wait() -> None:
    test = busy([flight(b"a/b")])
    assert test(b"a/b") and test(b"a") and test(b"a/b/c")
    assert not test(b"a/x") and not test(b"b") and not test(b"a/bc")


def test_every_entry_of_a_directory_listed_whole_waits() -> None:
    test = busy([flight(b"d/f1", whole=frozenset({b"d"}))])
    assert test(b"d/new") and test(b"d/f2")
    assert not test(b"d/sub/deeper") and not test(b"e/f1")


def test_full_syncs_and_renames_run_alone() -> None:
    assert alone([Flight(Batch(full=True), None)])
    assert alone([Flight(Batch(moves=(Move(b"a", b"b"),)), None)])
    assert not alone([flight(b"a")])


def test_another_run_pays_under_load_or_after_a_wait() -> None:
    assert worth_another_run(PARALLEL_AT, 0.0)
    assert worth_another_run(1, PARALLEL_AFTER)
    assert not worth_another_run(PARALLEL_AT - 1, PARALLEL_AFTER / 2)
    assert not worth_another_run(0, None)
    # A connected standby has paid for the run already.
    assert worth_another_run(1, 0.0, connected=True)
    assert not worth_another_run(0, None, connected=True)


def test_a_waiting_lane_looks_again_when_the_oldest_change_is_old_enough() -> None:
    assert due_in(0.05) == PARALLEL_AFTER - 0.05
    assert due_in(PARALLEL_AFTER) is None  # already old enough: wait for a wake-up
    assert due_in(None) is None
