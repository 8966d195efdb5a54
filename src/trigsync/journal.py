"""Journaling glue: one target's view of the state store, and the write-behind task.

Nothing here may stop replication: the store absorbs failed writes (it falls behind and
logs once), and the write-behind task catches up by rewriting every target's rows from
memory until a write succeeds again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from .changes import Batch, Change, Kind, PendingSet
from .state import StateStore

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
CATCH_UP_MAX = 30.0  # while behind, the retries double up to this pause


class Journal:
    """One target's rows in the state store; every method is a no-op without a store."""

    def __init__(self, store: StateStore | None, key: str) -> None:
        self.store = store
        self.key = key  # several syncs may feed one URL from different sources

    @property
    def error(self) -> str | None:
        """Why the rows on disk lag memory, if they do."""
        return self.store.error if self.store is not None else None

    def record(self, paths: Iterable[bytes], pending: PendingSet, became_full: bool) -> None:
        """Note the merged state of ``paths`` after they were added to ``pending``."""
        if self.store is None:
            return
        if became_full:
            self.store.mark_full(self.key, True)
        paths = list(paths)
        self.store.record(self.key, paths, map(pending.get, paths))

    def sequence(self) -> int | None:
        """The sequence a batch that takes everything pending confirms, or None."""
        return self.store.sequence(self.key) if self.store is not None else None

    def confirm(self, seq: int | None, *, full: bool) -> None:
        if self.store is not None and seq is not None:
            self.store.confirm(self.key, seq, full=full)

    def confirm_paths(self, batch: Batch, seq: int | None) -> None:
        """A run that took part of what was pending delivered ``batch`` as recorded up
        to ``seq``: its paths' noted changes need not reach the disk."""
        if self.store is not None and seq is not None:
            self.store.forget_noted(self.key, (c.path for c in batch.changes + batch.covered), seq)

    def load(self) -> Batch:
        return self.store.load(self.key) if self.store is not None else Batch()


Unconfirmed = Callable[[], Mapping[str, Batch]]  # every target's key -> all it has unconfirmed


def save(store: StateStore, unconfirmed: Unconfirmed) -> bool:
    """Write every target's unconfirmed set as it is now (at a clean stop)."""
    return store.rewrite(store.stage(unconfirmed()))


async def write_behind(store: StateStore, unconfirmed: Unconfirmed, tick: float = 1.0) -> None:
    """Write noted changes to the state database in the background, in batches; while the
    store is behind, retry a rewrite from memory with a doubling pause. Never returns."""
    dirty = asyncio.Event()
    store.on_dirty = dirty.set
    pause = tick
    while True:
        if not store.behind:
            await dirty.wait()
        await asyncio.sleep(pause if store.behind else tick)
        aged = store.take_aged()  # while behind, the rewrite covers it
        if not store.dirty:
            dirty.clear()
        try:
            if store.behind:
                staged = store.stage(unconfirmed())
                written = await _in_thread(store.rewrite, staged)
                pause = tick if written else min(pause * 2, CATCH_UP_MAX)
            else:
                await _in_thread(store.write, aged)
        except Exception as exc:  # a bug must not end journaling for the rest of the run
            store.behind = True
            if store.error != repr(exc):
                log.exception("journal: unexpected error; retrying from memory")
            store.error = repr(exc)


async def _in_thread(call: Callable[[T], R], arg: T) -> R:
    """Run ``call(arg)`` in a thread; cancelled, it still waits for the call to end, so
    that a write taken before the final save never lands after it."""
    job = asyncio.ensure_future(asyncio.to_thread(call, arg))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise


def unconfirmed_kinds(pending: Batch, extra: Iterable[Batch]) -> Batch:
    """``pending`` plus the changes of ``extra`` batches (in flight, set aside): paths
    already pending keep their pending kind, which is the newer."""
    seen: dict[bytes, Kind] = {}
    full = pending.full
    for batch in extra:
        full = full or batch.full
        seen.update((c.path, c.kind) for c in batch.changes)
    seen.update((c.path, c.kind) for c in pending.changes)
    return Batch(tuple(Change(p, k) for p, k in seen.items()), full)
