"""Pure change bookkeeping: kernel-level changes in, one pending entry per path out.

A ``Change`` says what happened to one path (relative to the sync root, as bytes).
A ``Batch`` is the plain-data unit that travels from the watcher to the targets:
a tuple of changes plus a flag that says "reconcile the whole tree".
``PendingSet`` merges changes by one table, so a thousand writes to a file are one
transfer and a file created and deleted before it was sent is nothing at all.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass


class Kind(enum.IntEnum):
    """What happened to a path since the target last saw it."""

    # The values are stored in the state directory: never renumber them.
    CHANGED = 1  # the target may hold this path, in any state: rsync decides
    NEW = 2  # trigsync saw it created since the target last confirmed it: no target has it
    DELETED = 3  # gone from the source
    # Deleted, then made again: a target may still hold the old one, and if the path is
    # a directory now, the old one's contents too; so a directory is sent whole.
    REPLACED = 4


@dataclass(frozen=True, slots=True)
class Change:
    """One path and what happened to it. ``path`` is relative, never empty, never absolute."""

    path: bytes
    kind: Kind


@dataclass(frozen=True, slots=True)
class Move:
    """A rename inside the tree: a hint that lets a target move its copy instead of
    receiving the bytes again. Correctness never depends on it: both paths are also
    listed as changes, so whatever a target did with the hint, rsync then fixes up."""

    old: bytes
    new: bytes
    after: int = 0  # how many of its batch's changes happened before it


@dataclass(frozen=True, slots=True)
class Batch:
    """Changes to deliver together. ``full`` asks for a reconciling sync of the whole tree."""

    changes: tuple[Change, ...] = ()
    full: bool = False
    moves: tuple[Move, ...] = ()
    # Entries left out because a deleted directory above them covers them; see covered_by.
    covered: tuple[Change, ...] = ()

    def __bool__(self) -> bool:
        return self.full or bool(self.changes)

    @property
    def paths(self) -> list[bytes]:
        return [c.path for c in self.changes]


# (pending kind or None, new kind) -> merged kind, or None to forget the path.
# NEW then DELETED is dropped: no target has the path, so there is nothing to send. Only
# a path trigsync saw created may be NEW; anything that may already exist on a target (a
# rename's new end, a move in from outside) is CHANGED, so its deletion always travels.
# DELETED then made again is REPLACED, until it is deleted again: a directory moved out
# and another made at its name must not keep the old one's files on the replica.
MERGE: dict[tuple[Kind | None, Kind], Kind | None] = {
    (None, Kind.CHANGED): Kind.CHANGED,
    (None, Kind.NEW): Kind.NEW,
    (None, Kind.DELETED): Kind.DELETED,
    (None, Kind.REPLACED): Kind.REPLACED,
    (Kind.CHANGED, Kind.CHANGED): Kind.CHANGED,
    (Kind.CHANGED, Kind.NEW): Kind.CHANGED,
    (Kind.CHANGED, Kind.DELETED): Kind.DELETED,
    (Kind.CHANGED, Kind.REPLACED): Kind.REPLACED,
    (Kind.NEW, Kind.CHANGED): Kind.NEW,
    (Kind.NEW, Kind.NEW): Kind.NEW,
    (Kind.NEW, Kind.DELETED): None,
    (Kind.NEW, Kind.REPLACED): Kind.REPLACED,
    (Kind.DELETED, Kind.CHANGED): Kind.REPLACED,
    (Kind.DELETED, Kind.NEW): Kind.REPLACED,
    (Kind.DELETED, Kind.DELETED): Kind.DELETED,
    (Kind.DELETED, Kind.REPLACED): Kind.REPLACED,
    (Kind.REPLACED, Kind.CHANGED): Kind.REPLACED,
    (Kind.REPLACED, Kind.NEW): Kind.REPLACED,
    (Kind.REPLACED, Kind.DELETED): Kind.DELETED,
    (Kind.REPLACED, Kind.REPLACED): Kind.REPLACED,
}


def merge(pending: Kind | None, new: Kind) -> Kind | None:
    """The merged kind of a path that was ``pending`` and then saw ``new``."""
    return MERGE[pending, new]


def ancestors(path: bytes) -> Iterator[bytes]:
    """Proper ancestors of a relative path, nearest first: ``a/b/c`` gives ``a/b``, ``a``."""
    end = path.rfind(b"/")
    while end > 0:
        yield path[:end]
        end = path.rfind(b"/", 0, end)


class PendingSet:
    """Per-target pending state: at most one entry per path, plus a full-sync flag."""

    def __init__(self, *, max_paths: int = 1_000_000, max_moves: int = 10_000) -> None:
        self._kinds: dict[bytes, Kind] = {}
        self._moves: list[Move] = []
        self._new_index: dict[bytes, int] | None = None  # see _by_new; None: rebuild
        self._max_paths = max_paths
        self._max_moves = max_moves
        self.full = False

    def __len__(self) -> int:
        return len(self._kinds)

    def __bool__(self) -> bool:
        return self.full or bool(self._kinds)

    def get(self, path: bytes) -> Kind | None:
        return self._kinds.get(path)

    def add(self, path: bytes, kind: Kind) -> None:
        merged = MERGE[self._kinds.get(path), kind]
        if merged is None:
            del self._kinds[path]
        else:
            self._kinds[path] = merged

    def extend(
        self,
        batch: Batch,
        *,
        in_flight: bool = False,
        deleted_in_flight: Callable[[bytes], bool] = lambda _: False,
    ) -> None:
        """Merge a batch of newer changes into this set.

        While a run is ``in_flight`` it reads the source as it is now, so it may deliver a
        path created after it was taken: such a path is recorded as CHANGED, not NEW,
        and its deletion still travels. A path made again while a run deletes it is
        REPLACED: that run found it there again and sent it rather than deleting it, so
        the target may keep what the old one held (a directory's old files).
        """
        if batch.full:
            self.full = True
        moves = iter(batch.moves)
        move = next(moves, None)
        kinds = self._kinds
        # Directories with pending paths below them, once a rename needs to know: one
        # pass, so that thousands of renames in a batch (a deploy) cost no more than one.
        above: set[bytes] | None = None
        for i, change in enumerate(batch.changes):
            # A rename carries the pending state below it, so it must land in order:
            # after the changes that came before it, before those that came after.
            while move is not None and move.after <= i:
                if above is None:
                    above = {a for p in kinds for a in ancestors(p)}
                self._add_move(move, above)
                move = next(moves, None)
            kind = change.kind
            if kind is Kind.NEW and in_flight:
                kind = Kind.REPLACED if deleted_in_flight(change.path) else Kind.CHANGED
            merged = MERGE[kinds.get(change.path), kind]
            if merged is None:
                del kinds[change.path]
            else:
                kinds[change.path] = merged
                if above is not None:
                    above.update(ancestors(change.path))
        while move is not None:
            if above is None:
                above = {a for p in kinds for a in ancestors(p)}
            self._add_move(move, above)
            move = next(moves, None)
        if len(kinds) > self._max_paths:
            # Memory stays bounded: one full sync covers any number of paths.
            kinds.clear()
            self._moves.clear()
            self._new_index = None
            self.full = True

    def _add_move(self, move: Move, above: set[bytes]) -> None:
        if self._kinds.get(move.old) is Kind.NEW:
            # No target has the old path (it was created since the last confirmation, as
            # a deploy tool's temp file is): nothing to move, and nothing below it to
            # carry. The new end is listed as a change of its own.
            if move.old in above:
                prefix = move.old + b"/"
                for path in [p for p in self._kinds if p.startswith(prefix)]:
                    del self._kinds[path]
            return
        # A target that applies the move carries its copy of old's subtree along, including
        # paths whose pending deletion has not been sent: that pending state moves too.
        if move.old in above:
            for path in self._carry(move, self._kinds):
                above.update(ancestors(path))
        # a -> b then b -> c is a -> c: the target never had b.
        by_new = self._by_new()
        i = by_new.get(move.old)
        if i is not None:
            earlier = self._moves[i]
            self._moves[i] = Move(earlier.old, move.new)
            self._new_index = None
            return
        if len(self._moves) < self._max_moves:
            by_new.setdefault(move.new, len(self._moves))
            self._moves.append(Move(move.old, move.new))
        else:
            self._moves.clear()  # hints only: losing them costs bytes, never correctness
            self._new_index = None

    def _by_new(self) -> dict[bytes, int]:
        """Each pending move's position, by its new path (the first, if several)."""
        if self._new_index is None:
            self._new_index = {}
            for i, move in enumerate(self._moves):
                self._new_index.setdefault(move.new, i)
        return self._new_index

    @staticmethod
    def _carry(move: Move, kinds: dict[bytes, Kind]) -> list[bytes]:
        """Carry pending state below ``move.old`` to ``move.new``; returns the new paths."""
        prefix = move.old + b"/"
        carried = [(p, k) for p, k in kinds.items() if p.startswith(prefix)]
        out = []
        for path, kind in carried:
            new = move.new + path[len(move.old) :]
            merged = kind if new not in kinds else MERGE[kinds[new], kind]
            # Whatever it merges to, the target may now hold a copy at the new path.
            kinds[new] = (
                Kind.DELETED
                if merged in (None, Kind.DELETED)
                else Kind.REPLACED
                if merged is Kind.REPLACED
                else Kind.CHANGED
            )
            out.append(new)
        return out

    def peek(self) -> Batch:
        """Everything pending, left in place."""
        return Batch(tuple(Change(p, k) for p, k in self._kinds.items()), self.full)

    @property
    def has_moves(self) -> bool:
        return bool(self._moves)

    def take(
        self, busy: Callable[[bytes], bool] | None = None, *, limit: int | None = None
    ) -> Batch:
        """Remove and return what is pending, ready to send.

        Entries below a deleted directory are dropped: deleting the directory covers them,
        and listing them would make rsync complain that their parent is missing.
        A full sync covers every entry, so it travels alone. With ``busy``, paths it
        names (those another run in flight touches) stay pending for a later batch;
        rename hints then stay too, since they may touch any path. With ``limit``, at
        most that many entries are taken, the oldest first, unless a full sync or rename
        hints are pending (those take everything); the rest stay for the next batch.
        """
        if limit is not None and (busy is not None or not (self.full or self._moves)):
            kinds = self._take_some(busy, limit)
            moves: tuple[Move, ...] = ()
        elif busy is not None:
            keep = {p: k for p, k in self._kinds.items() if busy(p)}
            kinds = {p: k for p, k in self._kinds.items() if p not in keep}
            self._kinds = keep
            moves = ()
        else:
            kinds, self._kinds = self._kinds, {}
            moves, self._moves = tuple(self._moves), []
            self._new_index = None
            if self.full:
                self.full = False
                return Batch(full=True, moves=moves)
        deleted = {p for p, k in kinds.items() if k is Kind.DELETED}
        if not deleted:
            return Batch(tuple(Change(p, k) for p, k in kinds.items()), moves=moves)
        changes: list[Change] = []
        covered: list[Change] = []
        for p, k in kinds.items():
            (covered if any(a in deleted for a in ancestors(p)) else changes).append(Change(p, k))
        return Batch(tuple(changes), moves=moves, covered=tuple(covered))

    def _take_some(self, busy: Callable[[bytes], bool] | None, limit: int) -> dict[bytes, Kind]:
        """Up to ``limit`` of the oldest entries ``busy`` does not name, removed; costs
        what it takes (and the busy entries it passes), not what stays pending."""
        taken: dict[bytes, Kind] = {}
        for path, kind in self._kinds.items():
            if len(taken) >= limit:
                break
            if busy is None or not busy(path):
                taken[path] = kind
        for path in taken:
            del self._kinds[path]
        return taken

    def restore(self, batch: Batch) -> None:
        """Put back a batch that failed, beneath anything that changed since it was taken.

        The failed run may have delivered part of it, so NEW is weakened to CHANGED:
        a later delete of that path must still reach the target.
        """
        if batch.full:
            self.full = True
        restored: dict[bytes, Kind] = {
            c.path: Kind.CHANGED if c.kind is Kind.NEW else c.kind
            for c in batch.changes + batch.covered
        }
        for move in self._moves:  # moves made since the batch was taken carry it along
            self._carry(move, restored)
        self._moves[:0] = batch.moves
        self._new_index = None
        kinds = self._kinds
        for path, old in restored.items():
            newer = kinds.get(path)
            merged = old if newer is None else MERGE[old, newer]
            if merged is None:
                kinds.pop(path, None)
            else:
                kinds[path] = merged


def uncovered(batch: Batch, exists: Callable[[bytes], bool]) -> Batch:
    """The covered entries whose deleted directory came back before the run read it.

    rsync then sent that directory instead of deleting it, so what it held on the target
    is still there: those entries must travel after all (as CHANGED: rsync decides).
    """
    deleted = {c.path for c in batch.changes if c.kind is Kind.DELETED}
    back = {d for d in deleted if exists(d)}
    if not back:
        return Batch()
    return Batch(
        tuple(
            Change(c.path, Kind.CHANGED)
            for c in batch.covered
            if any(a in back for a in ancestors(c.path))
        )
    )


def changes_of(paths: Iterable[bytes], kind: Kind) -> tuple[Change, ...]:
    """The same kind of change for many paths."""
    return tuple(Change(p, kind) for p in paths)
