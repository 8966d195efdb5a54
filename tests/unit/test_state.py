"""The durable pending store: bounded rows, confirm keeps what changed meanwhile."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from trigsync.changes import Batch, Change, Kind
from trigsync.errors import SetupError
from trigsync.state import StateStore


def record(store: StateStore, paths: list[bytes], kind: Kind = Kind.CHANGED) -> int:
    return store.record("t", paths, iter([kind] * len(paths)))


def test_many_writes_to_few_paths_are_few_rows(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for i in range(100_000):
        record(store, [b"f%03d" % (i % 100)])
        if i % 10_000 == 0:
            store.flush()
    store.flush()
    assert store.count("t") == 100


def test_confirm_keeps_rows_changed_after_the_run_was_taken(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    record(store, [b"a", b"b"])
    taken = store.sequence("t")
    record(store, [b"b"])  # changed again while the run was in flight
    store.flush()
    store.confirm("t", taken, full=False)
    store.flush()
    assert store.load("t") == Batch((Change(b"b", Kind.CHANGED),))


def test_unflushed_changes_covered_by_a_confirmed_run_leave_no_row(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    dirty_before = record(store, [b"a"])
    store.take_aged()
    dirty = store.take_aged()
    assert dirty == {"t": {b"a": (Kind.CHANGED, dirty_before)}}
    store.confirm("t", dirty_before, full=False)
    store.write(dirty)  # a write-behind that lost the race with the confirm
    assert store.count("t") < 500  # the database filled up part way


def test_a_change_confirmed_within_a_tick_is_never_written(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    quick = record(store, [b"quick"])
    store.write(store.take_aged())  # tick 1: nothing is old enough yet
    slow = record(store, [b"slow"])
    store.confirm("t", quick, full=False)
    store.write(store.take_aged())  # tick 2: "quick" went, so nothing to write
    assert store.count("t") < 500  # the database filled up part way
    store.write(store.take_aged())  # tick 3: "slow" is still pending, so it lands
    assert store.load("t") == Batch((Change(b"slow", Kind.CHANGED),))
    assert store.sequence("t") == slow


def test_load_after_reopen_weakens_created_and_keeps_the_full_flag(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    record(store, [b"new"], Kind.NEW)
    record(store, [b"gone"], Kind.DELETED)
    store.flush()
    store.mark_full("t", True)
    record(store, [b"later"], Kind.NEW)
    store.flush()
    store.close()
    again = StateStore(tmp_path).load("t")
    assert again.full
    assert again.changes == (Change(b"later", Kind.CHANGED),)


def test_clean_and_unclean_runs(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.begin_run().first_start
    store.close()
    crashed = StateStore(tmp_path).begin_run()
    assert not crashed.clean and not crashed.first_start
    store = StateStore(tmp_path)
    store.begin_run()
    store.end_run(1234.5)
    store.close()
    last = StateStore(tmp_path).begin_run()
    assert last.clean and last.stopped_at == 1234.5


def fill_up(store: StateStore) -> None:
    """A real SQLITE_FULL ("database or disk is full"): the database may not grow."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def free_up(store: StateStore) -> None:
    store._db.execute("PRAGMA max_page_count = 1000000")


def test_a_full_disk_is_absorbed_logged_once_and_caught_up_from_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    fill_up(store)
    paths = [b"dir/%04d-%s" % (i, b"x" * 200) for i in range(500)]
    record(store, paths)
    store.flush()  # two failed writes
    store.mark_full("t", False)
    store.confirm("t", 0, full=False)
    assert store.behind and store.error is not None and "full" in store.error
    assert store.count("t") < 500  # the database filled up part way
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    # Still full: the catch-up fails quietly and the store stays behind.
    memory = Batch(tuple(Change(p, Kind.CHANGED) for p in paths))
    assert not store.rewrite(store.stage({"t": memory}))
    assert store.behind and len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    free_up(store)
    assert store.rewrite(store.stage({"t": memory}))
    assert not store.behind and store.error is None
    assert store.count("t") == 500
    assert set(c.path for c in StateStore(tmp_path).load("t").changes) == set(paths)


def test_begin_run_on_a_full_disk_is_a_setup_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.begin_run()
    store._db.execute("PRAGMA query_only = 1")  # any write fails, as on a read-only disk
    with pytest.raises(SetupError, match="cannot write state database"):
        store.begin_run()
    assert not store.end_run(1.0)


def test_a_rewrite_of_one_target_leaves_the_store_behind_for_the_others(
    tmp_path: Path,
) -> None:
    """A removed target's rows are emptied on a reload; while the disk was full, that
    must not mark the other targets' unwritten changes as written."""
    store = StateStore(tmp_path)
    fill_up(store)
    record(store, [b"dir/%04d-%s" % (i, b"x" * 200) for i in range(500)])
    store.flush()
    assert store.behind
    free_up(store)
    assert store.rewrite(store.stage({"gone": Batch()}), complete=False)
    assert store.behind  # "t" was never written: the write-behind must still catch it up
    assert store.rewrite(store.stage({"t": Batch((Change(b"a", Kind.CHANGED),))}))
    assert not store.behind


def test_the_paths_a_chunk_delivered_are_never_written(tmp_path: Path) -> None:
    # A storm goes in chunks beside each other, and no run takes everything until it
    # is over: what each chunk delivered must not be written (and deleted again) meanwhile.
    store = StateStore(tmp_path)
    record(store, [b"a", b"b", b"c"])
    taken = store.sequence("t")  # a run takes a and b only
    record(store, [b"b"])  # and b changes again while it runs
    store.forget_noted("t", [b"a", b"b"], taken)
    store.flush()
    assert store.load("t") == Batch((Change(b"b", Kind.CHANGED), Change(b"c", Kind.CHANGED)))
