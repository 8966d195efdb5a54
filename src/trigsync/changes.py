"""Pure change bookkeeping: kernel-level changes in, one pending entry per path out.

A ``Change`` says what happened to one path (relative to the sync root, as bytes).
A ``Batch`` is the plain-data unit that travels from the watcher to the targets:
a tuple of changes plus a flag that says "reconcile the whole tree".
``PendingSet`` merges changes by one table, so a thousand writes to a file are one
transfer and a file created and deleted before it was sent is nothing at all.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


class Kind(enum.IntEnum):
    """What happened to a path since the target last saw it."""

    CHANGED = 1  # content or metadata changed; the target may hold an older copy
    CREATED = 2  # appeared on the source; the target cannot have it yet
    DELETED = 3  # gone from the source


@dataclass(frozen=True, slots=True)
class Change:
    """One path and what happened to it. ``path`` is relative, never empty, never absolute."""

    path: bytes
    kind: Kind


@dataclass(frozen=True, slots=True)
class Batch:
    """Changes to deliver together. ``full`` asks for a reconciling sync of the whole tree."""

    changes: tuple[Change, ...] = ()
    full: bool = False

    def __bool__(self) -> bool:
        return self.full or bool(self.changes)

    @property
    def paths(self) -> list[bytes]:
        return [c.path for c in self.changes]


# (pending kind or None, new kind) -> merged kind, or None to forget the path.
# CREATED then DELETED is dropped: the target never had the path, so there is nothing to send.
MERGE: dict[tuple[Kind | None, Kind], Kind | None] = {
    (None, Kind.CHANGED): Kind.CHANGED,
    (None, Kind.CREATED): Kind.CREATED,
    (None, Kind.DELETED): Kind.DELETED,
    (Kind.CHANGED, Kind.CHANGED): Kind.CHANGED,
    (Kind.CHANGED, Kind.CREATED): Kind.CHANGED,
    (Kind.CHANGED, Kind.DELETED): Kind.DELETED,
    (Kind.CREATED, Kind.CHANGED): Kind.CREATED,
    (Kind.CREATED, Kind.CREATED): Kind.CREATED,
    (Kind.CREATED, Kind.DELETED): None,
    (Kind.DELETED, Kind.CHANGED): Kind.CHANGED,
    (Kind.DELETED, Kind.CREATED): Kind.CHANGED,
    (Kind.DELETED, Kind.DELETED): Kind.DELETED,
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

    def __init__(self) -> None:
        self._kinds: dict[bytes, Kind] = {}
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

    def extend(self, batch: Batch, *, in_flight: bool = False) -> None:
        """Merge a batch of newer changes into this set.

        While a run is ``in_flight`` it reads the source as it is now, so it may deliver a
        path created after it was taken: such a path is recorded as CHANGED, not CREATED,
        and its deletion still travels.
        """
        if batch.full:
            self.full = True
        kinds = self._kinds
        for change in batch.changes:
            kind = Kind.CHANGED if in_flight and change.kind is Kind.CREATED else change.kind
            merged = MERGE[kinds.get(change.path), kind]
            if merged is None:
                del kinds[change.path]
            else:
                kinds[change.path] = merged

    def take(self) -> Batch:
        """Remove and return everything pending, ready to send.

        Entries below a deleted directory are dropped: deleting the directory covers them,
        and listing them would make rsync complain that their parent is missing.
        A full sync covers every entry, so it travels alone.
        """
        kinds, self._kinds = self._kinds, {}
        if self.full:
            self.full = False
            return Batch(full=True)
        deleted = {p for p, k in kinds.items() if k is Kind.DELETED}
        if deleted:
            changes = tuple(
                Change(p, k)
                for p, k in kinds.items()
                if not any(a in deleted for a in ancestors(p))
            )
        else:
            changes = tuple(Change(p, k) for p, k in kinds.items())
        return Batch(changes)

    def restore(self, batch: Batch) -> None:
        """Put back a batch that failed, beneath anything that changed since it was taken.

        The failed run may have delivered part of it, so CREATED is weakened to CHANGED:
        a later delete of that path must still reach the target.
        """
        if batch.full:
            self.full = True
        kinds = self._kinds
        for change in batch.changes:
            old = Kind.CHANGED if change.kind is Kind.CREATED else change.kind
            newer = kinds.get(change.path)
            merged = old if newer is None else MERGE[old, newer]
            if merged is None:
                kinds.pop(change.path, None)
            else:
                kinds[change.path] = merged


def changes_of(paths: Iterable[bytes], kind: Kind) -> tuple[Change, ...]:
    """The same kind of change for many paths."""
    return tuple(Change(p, kind) for p in paths)
