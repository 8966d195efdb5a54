"""Runs beside runs: disjoint paths only, and only when another run pays for itself."""

from __future__ import annotations

from trigsync.changes import Batch, Change, Kind, Move, PendingSet
from trigsync.lanes import (
    CHUNK,
    CHUNK_MIN,
    PARALLEL_AFTER,
    PARALLEL_AT,
    Flight,
    alone,
    busy,
    chunk,
    due_in,
    take,
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


def pending_of(*paths: bytes, full: bool = False) -> PendingSet:
    pending = PendingSet()
    pending.extend(Batch(tuple(Change(p, Kind.CHANGED) for p in paths), full))
    return pending


def test_take_with_nothing_in_flight_takes_everything() -> None:
    batch = take(pending_of(b"a", b"b"), [], single=False, waited=None)
    assert batch is not None and {c.path for c in batch.changes} == {b"a", b"b"}
    assert take(PendingSet(), [], single=False, waited=None) is None


def test_take_beside_a_flight_only_disjoint_paths_and_only_when_it_pays() -> None:
    many = [b"x%04d" % i for i in range(PARALLEL_AT)]
    batch = take(pending_of(b"a/b", *many), [flight(b"a")], single=False, waited=None)
    assert batch is not None and b"a/b" not in {c.path for c in batch.changes}
    assert take(pending_of(*many), [flight(b"a")], single=True, waited=None) is None
    assert take(pending_of(b"y"), [flight(b"a")], single=False, waited=0.0) is None
    late = PARALLEL_AFTER + 0.1
    assert take(pending_of(b"y", full=True), [flight(b"a")], single=False, waited=late) is None
    assert take(pending_of(b"y"), [flight(b"a")], single=False, waited=late) is not None


def test_a_storm_is_taken_in_chunks_that_run_side_by_side() -> None:
    storm = [b"d%05d/f" % i for i in range(4 * CHUNK + 10)]
    pending = pending_of(*storm)
    first = take(pending, [], single=False, waited=None)
    assert first is not None and first.paths == storm[:CHUNK]
    # The next chunk does not wait for the first run to end: it runs beside it.
    second = take(pending, [Flight(first, None)], single=False, waited=0.0)
    assert second is not None and second.paths == storm[CHUNK : CHUNK + len(second.changes)]
    sizes = [len(first.changes), len(second.changes)]
    while batch := take(pending, [], single=False, waited=None):
        sizes.append(len(batch.changes))
    assert sum(sizes) == len(storm) and not pending
    # What is left is shared out in smaller runs as it shrinks, none below CHUNK_MIN.
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < CHUNK, sizes
    assert min(sizes[:-1]) >= CHUNK_MIN, sizes


def test_a_chunk_is_at_most_chunk_and_never_splits_a_small_batch() -> None:
    assert chunk(10 * CHUNK, lanes=2) == CHUNK
    assert chunk(2 * CHUNK, lanes=2) == CHUNK // 2
    assert chunk(CHUNK_MIN, lanes=2) == CHUNK_MIN  # taken whole
    assert chunk(5, lanes=1) == CHUNK_MIN
