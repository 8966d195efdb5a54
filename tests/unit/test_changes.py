"""The merge table and the pending set, including a model-based property test."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from trigsync.changes import (
    MERGE,
    Batch,
    Change,
    Kind,
    Move,
    PendingSet,
    ancestors,
    merge,
    uncovered,
)


def batch(*pairs: tuple[bytes, Kind]) -> Batch:
    return Batch(tuple(Change(p, k) for p, k in pairs))


def test_table_covers_every_pair() -> None:
    for old in (None, *Kind):
        for new in Kind:
            assert (old, new) in MERGE


def test_many_writes_are_one_entry() -> None:
    pending = PendingSet()
    for _ in range(1000):
        pending.extend(batch((b"f", Kind.CHANGED)))
    assert pending.take() == batch((b"f", Kind.CHANGED))


def test_create_then_delete_is_nothing() -> None:
    pending = PendingSet()
    pending.extend(batch((b"tmp", Kind.NEW), (b"tmp", Kind.CHANGED), (b"tmp", Kind.DELETED)))
    assert not pending
    assert not pending.take()


def test_delete_then_create_is_replaced_until_deleted_again() -> None:
    """The target may hold the old one (a directory's files too): not NEW, not CHANGED."""
    assert merge(Kind.DELETED, Kind.NEW) is Kind.REPLACED
    assert merge(Kind.DELETED, Kind.CHANGED) is Kind.REPLACED
    assert merge(Kind.REPLACED, Kind.NEW) is Kind.REPLACED
    assert merge(Kind.REPLACED, Kind.DELETED) is Kind.DELETED


def test_every_pair_of_kinds_merges() -> None:
    for pending in [None, *Kind]:
        for new in Kind:
            merge(pending, new)  # a KeyError here is a kind the table forgot


def test_replaced_survives_a_rename_of_its_parent() -> None:
    pending = PendingSet()
    pending.extend(batch((b"a/d", Kind.DELETED), (b"a/d", Kind.NEW)))
    pending.extend(
        Batch((Change(b"a", Kind.DELETED), Change(b"b", Kind.CHANGED)), moves=(Move(b"a", b"b"),))
    )
    assert Change(b"b/d", Kind.REPLACED) in pending.take().changes


def test_deleted_directory_swallows_children() -> None:
    pending = PendingSet()
    pending.extend(batch((b"d/a", Kind.CHANGED), (b"d/e/f", Kind.NEW), (b"d-x", Kind.CHANGED)))
    pending.extend(batch((b"d", Kind.DELETED)))
    assert set(pending.take().changes) == {Change(b"d", Kind.DELETED), Change(b"d-x", Kind.CHANGED)}


def test_full_sync_travels_alone() -> None:
    pending = PendingSet()
    pending.extend(batch((b"a", Kind.CHANGED)))
    pending.extend(Batch(full=True))
    assert pending.take() == Batch(full=True)
    assert not pending


def test_restore_weakens_created() -> None:
    pending = PendingSet()
    pending.extend(batch((b"a", Kind.NEW)))
    failed = pending.take()
    pending.restore(failed)
    pending.extend(batch((b"a", Kind.DELETED)))
    # The failed run may have delivered "a": its deletion must still travel.
    assert pending.take() == batch((b"a", Kind.DELETED))


def test_restore_keeps_newer_changes_on_top() -> None:
    pending = PendingSet()
    pending.extend(batch((b"a", Kind.DELETED)))
    failed = pending.take()
    pending.extend(batch((b"a", Kind.NEW)))
    pending.restore(failed)
    assert pending.get(b"a") is Kind.REPLACED  # the target may still hold the old "a"


def test_created_during_a_run_may_reach_the_target() -> None:
    # A full sync in flight copies whatever exists when it runs, including "x".
    pending = PendingSet()
    pending.extend(batch((b"x", Kind.NEW)), in_flight=True)
    pending.extend(batch((b"x", Kind.DELETED)))
    assert pending.take() == batch((b"x", Kind.DELETED))


def test_made_again_while_its_deletion_runs_is_replaced() -> None:
    """rm -r a; mkdir a while the run deleting "a" is in flight: that run found "a" on the
    source again and sent it (not recursively), so the target kept a/'s old files, and a
    NEW "a" (CHANGED once in flight) was sent without deleting them: they stayed for good
    (test_attack7b, a directory made again at max connections 1, 1 run in 6)."""
    pending = PendingSet()
    pending.extend(batch((b"a", Kind.DELETED)))
    in_flight = pending.take()
    pending.extend(
        batch((b"a", Kind.NEW), (b"n", Kind.NEW)),
        in_flight=True,
        deleted_in_flight=lambda path: any(c.path == path for c in in_flight.changes),
    )
    assert pending.get(b"a") is Kind.REPLACED  # the replace run: recursive, with --delete
    assert pending.get(b"n") is Kind.CHANGED  # in flight, but nobody deletes it


def test_ancestors() -> None:
    assert list(ancestors(b"a/b/c")) == [b"a/b", b"a"]
    assert list(ancestors(b"a")) == []


# --- model-based: whatever the events and failures, the target converges ---------------

NAMES = [b"a", b"b", b"a/x", b"b/x", b"a/x/z"]
FILE, DIR = "f", "d"


def parent(path: bytes) -> bytes | None:
    return next(ancestors(path), None)


def subtree(fs: dict[bytes, tuple[str, int]], path: bytes) -> list[bytes]:
    return sorted((p for p in fs if p.startswith(path + b"/")), key=len, reverse=True)


def apply_moves(target: dict[bytes, tuple[str, int]], moves: tuple[Move, ...]) -> None:
    """What a target does with rename hints: rename its copy where it can, like rename(2)."""
    for move in moves:
        old, new = move.old, move.new
        up = parent(new)
        if old == new or old not in target or (up is not None and target.get(up, ("",))[0] != DIR):
            continue
        if new.startswith(old + b"/"):
            continue  # EINVAL: into itself
        if new in target and (target[new][0] != target[old][0] or subtree(target, new)):
            continue  # EISDIR / ENOTDIR / ENOTEMPTY
        moved = {old: target.pop(old)}
        for child in subtree(target, old):
            moved[child] = target.pop(child)
        for path, entry in moved.items():
            target[new + path[len(old) :]] = entry


def apply_to_target(
    source: dict[bytes, tuple[str, int]], target: dict[bytes, tuple[str, int]], paths: list[bytes]
) -> None:
    """What rsync --files-from --delete-missing-args --force --relative does."""
    for path in paths:
        if path in source:
            for anc in ancestors(path):
                target[anc] = source[anc]
            if target.get(path, (None,))[0] == DIR and source[path][0] == FILE:
                for child in subtree(target, path):
                    del target[child]
            target[path] = source[path]
        else:
            for child in subtree(target, path):
                del target[child]
            target.pop(path, None)


ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["write", "mkdir", "delete", "rename", "read", "begin", "finish", "fail", "overflow"]
        ),
        st.sampled_from(NAMES),
        st.integers(0, len(NAMES) - 1),
    ),
    max_size=80,
)


def deliver(
    source: dict[bytes, tuple[str, int]],
    target: dict[bytes, tuple[str, int]],
    batch: Batch,
    upto: int | None = None,
) -> None:
    """A run reads the source as it is when it runs, not as it was when it was taken."""
    apply_moves(target, batch.moves)
    if batch.full and upto is None:
        target.clear()
        target.update(source)
    else:
        apply_to_target(source, target, batch.paths[:upto])


@settings(max_examples=1500, deadline=None)
@given(ops)
# Found by the live churn test: a directory deleted, its run taken, the directory back
# before the run reads the source: what the target held below it must still go.
@example(
    [
        ("mkdir", b"a", 0),
        ("write", b"a/x", 0),
        ("begin", b"a", 0),
        ("finish", b"a", 0),
        ("delete", b"a", 0),
        ("begin", b"a", 0),
        ("mkdir", b"a", 0),
        ("finish", b"a", 0),
    ]
)
# Found by the live churn test: a deletion and then a rename of its directory, in one read.
@example(
    [
        ("mkdir", b"a", 0),
        ("write", b"a/x", 0),
        ("begin", b"a", 0),
        ("finish", b"a", 0),
        ("delete", b"a/x", 0),
        ("rename", b"a", NAMES.index(b"b")),
    ]
)
def test_target_converges_to_source(script: list[tuple[str, bytes, int]]) -> None:
    """Random events, runs that overlap with later events, failures and overflows."""
    source: dict[bytes, tuple[str, int]] = {}
    target: dict[bytes, tuple[str, int]] = {}
    pending = PendingSet()
    flight: Batch | None = None
    # Events gather into one watcher batch until a run is taken or the script says "read",
    # so renames and the changes around them share batches, in order.
    events: list[Change] = []
    renames: list[Move] = []

    def event(path: bytes, kind: Kind) -> None:
        events.append(Change(path, kind))

    def read() -> None:
        pending.extend(Batch(tuple(events), moves=tuple(renames)), in_flight=flight is not None)
        events.clear()
        renames.clear()

    for version, (op, path, seed) in enumerate(script, 1):
        up = parent(path)
        parent_ok = up is None or source.get(up, ("",))[0] == DIR
        if op == "write" and parent_ok and source.get(path, (FILE,))[0] == FILE:
            kind = Kind.CHANGED if path in source else Kind.NEW
            source[path] = (FILE, version)
            event(path, kind)
        elif op == "mkdir" and parent_ok and path not in source:
            source[path] = (DIR, 0)
            event(path, Kind.NEW)
        elif op == "delete" and path in source:
            for child in subtree(source, path):
                del source[child]
                event(child, Kind.DELETED)
            del source[path]
            event(path, Kind.DELETED)
        elif op == "rename" and path in source:
            new = NAMES[seed]
            up_new = parent(new)
            if (
                new == path
                or new.startswith(path + b"/")
                or (up_new is not None and source.get(up_new, ("",))[0] != DIR)
                or (new in source and (source[new][0] != source[path][0] or subtree(source, new)))
            ):
                continue
            moved = {path: source.pop(path)}
            for child in subtree(source, path):
                moved[child] = source.pop(child)
            if new in source:
                event(new, Kind.DELETED)  # replaced
            # What the watcher reports: the old path gone, a hint, the new subtree CHANGED.
            event(path, Kind.DELETED)
            renames.append(Move(path, new, after=len(events)))
            for old_path, entry in sorted(moved.items(), key=lambda kv: len(kv[0])):
                source[new + old_path[len(path) :]] = entry
                event(new + old_path[len(path) :], Kind.CHANGED)
        elif op == "read":
            read()
        elif op == "overflow":
            read()
            pending.extend(Batch(full=True))
        elif op == "begin" and flight is None:
            read()
            # A run may take only the oldest few (lanes.CHUNK): a deleted directory and
            # the paths below it may then go in different runs.
            flight = pending.take(limit=seed % 4 or None)
        elif op == "finish" and flight is not None:
            read()
            deliver(source, target, flight)
            pending.extend(uncovered(flight, source.__contains__))
            flight = None
        elif op == "fail" and flight is not None:
            read()
            deliver(source, target, flight, upto=seed % (len(flight.changes) + 1))
            pending.restore(flight)
            flight = None
    read()
    if flight is not None:
        deliver(source, target, flight)
        pending.extend(uncovered(flight, source.__contains__))
    final = pending.take()
    deliver(source, target, final)
    deliver(source, target, uncovered(final, source.__contains__))
    assert target == source


def test_pending_deletes_move_with_a_renamed_directory() -> None:
    # The target holds a/x; a/x is deleted (unsent), then a is renamed to b. A target that
    # renames its copy now has b/x, so the deletion must travel as b/x.
    pending = PendingSet()
    pending.extend(batch((b"a/x", Kind.DELETED)))
    pending.extend(
        Batch((Change(b"a", Kind.DELETED), Change(b"b", Kind.CHANGED)), moves=(Move(b"a", b"b"),))
    )
    taken = pending.take()
    assert taken.moves == (Move(b"a", b"b"),)
    assert set(taken.changes) == {
        Change(b"a", Kind.DELETED),
        Change(b"b", Kind.CHANGED),
        Change(b"b/x", Kind.DELETED),
    }


def test_a_rename_lands_after_the_changes_that_came_before_it() -> None:
    # One watcher batch: a/f is deleted, then a is renamed to b. A target that renames
    # its copy of a carries f along, so the deletion must follow it to b/f.
    pending = PendingSet()
    pending.extend(
        Batch(
            (
                Change(b"a/f", Kind.DELETED),
                Change(b"a", Kind.DELETED),
                Change(b"b", Kind.CHANGED),
            ),
            moves=(Move(b"a", b"b", after=2),),
        )
    )
    assert Change(b"b/f", Kind.DELETED) in pending.take().changes


def test_thousands_of_renames_in_one_batch_cost_one_pass() -> None:
    # Finding 9: an in-place deploy renames 3,646 temp files over their names; merging
    # them took 3.5 s of CPU (each rename scanned every pending path), with nothing sent.
    import time

    changes: list[Change] = []
    moves: list[Move] = []
    for i in range(3646):
        d = b"pkg%d/mod%d/sub%d/" % (i // 480, i // 60, i // 12)
        changes.append(Change(d + b".f%d.py.XyZ123" % i, Kind.CHANGED))
    for i in range(3646):
        d = b"pkg%d/mod%d/sub%d/" % (i // 480, i // 60, i // 12)
        moves.append(Move(d + b".f%d.py.XyZ123" % i, d + b"f%d.py" % i, after=len(changes)))
        changes.append(Change(d + b".f%d.py.XyZ123" % i, Kind.DELETED))
        changes.append(Change(d + b"f%d.py" % i, Kind.CHANGED))
    pending = PendingSet()
    started = time.process_time()
    pending.extend(Batch(tuple(changes), moves=tuple(moves)))
    assert time.process_time() - started < 1.0
    taken = pending.take()
    assert len(taken.moves) == 3646
    assert len(taken.changes) == 2 * 3646


def test_a_limit_takes_the_oldest_entries_and_leaves_the_rest_in_order() -> None:
    pending = PendingSet()
    pending.extend(batch(*((b"f%d" % i, Kind.NEW) for i in range(10))))
    pending.extend(batch((b"f0", Kind.CHANGED)))  # a newer change keeps its place
    first = pending.take(limit=4)
    assert [c.path for c in first.changes] == [b"f0", b"f1", b"f2", b"f3"]
    assert len(pending) == 6
    assert [c.path for c in pending.take(limit=4).changes] == [b"f4", b"f5", b"f6", b"f7"]
    assert [c.path for c in pending.take(limit=4).changes] == [b"f8", b"f9"]
    assert not pending


def test_a_limit_never_splits_a_full_sync_or_renames() -> None:
    pending = PendingSet()
    pending.extend(Batch((Change(b"a", Kind.CHANGED), Change(b"b", Kind.CHANGED)), full=True))
    assert pending.take(limit=1).full and not pending
    pending.extend(
        Batch(
            (Change(b"a", Kind.DELETED), Change(b"b", Kind.CHANGED), Change(b"c", Kind.NEW)),
            moves=(Move(b"a", b"b"),),
        )
    )
    taken = pending.take(limit=1)
    assert taken.moves == (Move(b"a", b"b"),) and len(taken.changes) == 3 and not pending


def test_a_limited_take_beside_runs_costs_what_it_takes_not_what_stays() -> None:
    # A storm of 200,000 paths is sent in runs of a few thousand: each take must not look
    # at every pending path (200,000 x 50 takes), only at those it passes.
    pending = PendingSet()
    pending.extend(batch(*((b"d%d/f" % i, Kind.NEW) for i in range(100_000))))
    asked: list[bytes] = []

    def busy(path: bytes) -> bool:
        asked.append(path)
        return path == b"d1/f"

    taken = pending.take(busy, limit=1000)
    assert len(taken.changes) == 1000 and b"d1/f" not in taken.paths
    assert len(asked) == 1001
    assert pending.get(b"d1/f") is Kind.NEW and len(pending) == 99_000
