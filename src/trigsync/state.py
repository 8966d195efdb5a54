"""The durable pending set: SQLite in WAL mode, one row per pending path per target.

Rows are keyed by path, so a million writes to a hundred files are a hundred rows, and
a row is deleted only after its target confirmed the run that covered it. Each change
carries a sequence number; confirming a run deletes the rows it covered and keeps
those that changed meanwhile.

Changes reach the database in the background (``take_aged`` then ``write``, which may
run in a thread): an upsert per event costs more than the rest of the event path
together. A noted change waits one to two ticks (a second each) before it is
written, and one that its target confirmed meanwhile is never written at all: in a
20,000-file burst that is most of them, while a change for a target that is down
reaches the disk within two seconds. A crash can lose at most that window of rows,
and a crash is always followed by a reconciling full sync of every target, which
covers it.

A write that fails (the disk is full, the database is locked or broken) never stops
replication: the store falls ``behind``, logs the error once, and replication carries
on from memory. While behind, every target's rows are rewritten from memory in one
transaction (``rewrite``) until that succeeds; until then a crash is covered like any
other, by the reconciling full sync the next start runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .changes import Batch, Change, Kind
from .errors import SetupError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    target TEXT NOT NULL, path BLOB NOT NULL, kind INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (target, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target (
    name TEXT PRIMARY KEY, full INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


Dirty = dict[str, dict[bytes, tuple[Kind | None, int]]]  # target -> path -> (kind, seq)
Staged = dict[str, tuple[int, Batch]]  # target -> (seq, everything it has unconfirmed)
FAULTS = (sqlite3.Error, OSError)  # a full disk is sqlite3.OperationalError or ENOSPC


@dataclass(frozen=True, slots=True)
class LastRun:
    """How the previous run of this state directory ended."""

    clean: bool  # False after a crash, kill -9 or power loss
    stopped_at: float | None  # wall-clock time of a clean stop
    first_start: bool


class StateStore:
    """One SQLite database per state directory, shared by every target of every sync."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "state.db"
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a crash of this process; only power loss can
            # take back the last commits, and the reconciling sync at start covers that.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SetupError(
                f"cannot open state database {self.path}: {exc}; "
                "check the state directory (--state-dir) is writable and not on a network mount"
            ) from exc
        self._seq: dict[str, int] = {}
        self._confirmed: dict[str, int] = {}
        # Noted changes not yet written, the newer generation and the older one.
        self._dirty: Dirty = {}
        self._aging: Dirty = {}
        self._lock = threading.Lock()
        self.on_dirty: Callable[[], None] = lambda: None
        self.behind = False  # a write failed: the database lags memory until ``rewrite``
        self.error: str | None = None  # why, while behind

    def close(self) -> None:
        self._db.close()

    # -- run bookkeeping -----------------------------------------------------------------

    def begin_run(self) -> LastRun:
        """Mark this run as started; report how the last one ended."""
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        last = LastRun(
            clean=meta.get("running") == "0",
            stopped_at=float(meta["stopped_at"]) if "stopped_at" in meta else None,
            first_start="running" not in meta,
        )
        try:
            self._set_meta(running="1", pid=str(os.getpid()))
        except FAULTS as exc:
            raise SetupError(
                f"cannot write state database {self.path}: {exc}; "
                "free space in the state directory (--state-dir) or fix its permissions"
            ) from exc
        return last

    def end_run(self, unwatched_at: float) -> bool:
        """Record a clean stop, and since when the tree is no longer watched."""
        with self._writing():
            self._set_meta(running="0", stopped_at=repr(unwatched_at))
            return True
        return False

    def replicated_as(self, key: str, how: str) -> bool:
        """Whether the last run replicated ``key`` (source -> target) as ``how`` says (its
        excludes); records ``how`` for the next start. A target added, or excludes
        dropped, while trigsync was stopped holds files no ctime points at."""
        name = f"replicated {key}"
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        if row is None or row[0] != how:
            with self._writing():
                self._set_meta(**{name: how})
        return row is not None and row[0] == how

    def _set_meta(self, **values: str) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                values.items(),
            )

    # -- pending paths -------------------------------------------------------------------

    def load(self, target: str) -> Batch:
        """Everything still pending for ``target``. NEW comes back as CHANGED: a run
        that was cut short may have delivered it."""
        with self._lock:
            return self._load(target)

    def _load(self, target: str) -> Batch:
        row = self._db.execute("SELECT full, seq FROM target WHERE name = ?", (target,)).fetchone()
        full, seq = (bool(row[0]), int(row[1])) if row else (False, 0)
        self._seq[target] = seq
        rows = self._db.execute("SELECT path, kind FROM pending WHERE target = ?", (target,))
        changes = tuple(
            Change(bytes(path), Kind.CHANGED if kind == Kind.NEW else Kind(kind))
            for path, kind in rows
        )
        return Batch(changes, full)

    def record(self, target: str, paths: Iterable[bytes], kinds: Iterator[Kind | None]) -> int:
        """Note the merged state of ``paths`` (None: nothing pending); returns the sequence."""
        seq = self._seq.get(target, 0) + 1
        self._seq[target] = seq
        dirty = self._dirty.setdefault(target, {})
        for path, kind in zip(paths, kinds, strict=True):
            dirty[path] = (kind, seq)
        self.on_dirty()
        return seq

    def take_aged(self) -> Dirty:
        """Hand over, for ``write``, what was noted before the previous call; call it once
        per tick. What was noted since waits for the next tick, in case it is confirmed."""
        aged, self._aging, self._dirty = self._aging, self._dirty, {}
        return aged

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._aging)

    def write(self, dirty: Dirty) -> None:
        """Write noted changes in one transaction; safe to call from a thread."""
        with self._writing(), self._lock, self._db:
            for target, entries in dirty.items():
                if not entries:
                    continue
                floor = self._confirmed.get(target, 0)  # covered by a confirmed run already
                self._db.executemany(
                    "DELETE FROM pending WHERE target = ? AND path = ?",
                    [(target, p) for p, (k, s) in entries.items() if k is None or s <= floor],
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO pending(target, path, kind, seq) VALUES (?, ?, ?, ?)",
                    [
                        (target, p, int(k), s)
                        for p, (k, s) in entries.items()
                        if k is not None and s > floor
                    ],
                )
                self._save_target(target, max(s for _, s in entries.values()))

    def flush(self) -> None:
        self.write(self.take_aged())
        self.write(self.take_aged())

    def mark_full(self, target: str, full: bool) -> None:
        """A full sync is (or is no longer) needed; it covers every pending row."""
        if full:
            self._forget(target)
        with self._writing(), self._lock, self._db:
            if full:
                self._db.execute("DELETE FROM pending WHERE target = ?", (target,))
            self._db.execute(
                "INSERT INTO target(name, full) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET full = excluded.full",
                (target, int(full)),
            )

    def sequence(self, target: str) -> int:
        return self._seq.get(target, 0)

    def confirm(self, target: str, seq: int, *, full: bool) -> None:
        """The target confirmed a run that took everything recorded up to ``seq``."""
        for generation in (self._dirty, self._aging):
            if dirty := generation.get(target):
                generation[target] = {p: ks for p, ks in dirty.items() if ks[1] > seq}
        with self._writing(), self._lock:
            self._confirmed[target] = max(seq, self._confirmed.get(target, 0))
            with self._db:
                self._db.execute("DELETE FROM pending WHERE target = ? AND seq <= ?", (target, seq))
                if full:
                    self._db.execute("UPDATE target SET full = 0 WHERE name = ?", (target,))

    def forget_noted(self, target: str, paths: Iterable[bytes], seq: int) -> None:
        """Drop the changes noted (not written yet) for ``paths`` up to ``seq``: a run
        that took some of the pending paths delivered them. Storms are sent in chunks
        beside each other, and no run takes everything until the storm is over: without
        this every path of one would be written, at ~10 us a row, and deleted again.
        Rows already written stay until a run confirms everything (a crash meanwhile
        only sends them again)."""
        generations = [g for g in (self._dirty.get(target), self._aging.get(target)) if g]
        for path in paths if generations else ():
            for noted in generations:
                entry = noted.get(path)
                if entry is not None and entry[1] <= seq:
                    del noted[path]

    def stage(self, batches: Mapping[str, Batch]) -> Staged:
        """Take ``batches`` (all each target has unconfirmed) as the truth for ``rewrite``;
        call it on the thread that records, then ``rewrite`` may run in another."""
        staged: Staged = {}
        for target, batch in batches.items():
            seq = self._seq.get(target, 0) + 1
            self._seq[target] = seq
            self._forget(target)
            staged[target] = (seq, batch)
        return staged

    def rewrite(self, staged: Staged, *, complete: bool = True) -> bool:
        """Replace the staged targets' rows with what was staged, in one transaction (to
        catch up after a failed write, and at a clean stop); returns whether it was written.
        ``complete``: ``staged`` holds every target of the store, so success clears
        ``behind``; a rewrite of some targets only leaves the others' rows behind."""
        with self._writing(), self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for target, (seq, batch) in staged.items():
                    self._db.execute("DELETE FROM pending WHERE target = ?", (target,))
                    self._db.executemany(
                        "INSERT INTO pending(target, path, kind, seq) VALUES (?, ?, ?, ?)",
                        ((target, c.path, int(c.kind), seq) for c in batch.changes),
                    )
                    self._save_target(target, seq)
                    self._db.execute(
                        "UPDATE target SET full = ? WHERE name = ?", (int(batch.full), target)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            if self.behind and complete:
                paths = sum(len(b.changes) for _, b in staged.values())
                log.warning("state database %s: written again (%d pending paths)", self.path, paths)
                self.behind, self.error = False, None
            return True
        return False

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Absorb a failed write: note it, log it once, and leave the store behind."""
        try:
            yield
        except FAULTS as exc:
            self.behind = True
            if str(exc) != self.error:
                log.error(
                    "state database %s: cannot write: %s; replicating from memory, "
                    "journaling resumes once it can write again",
                    self.path,
                    exc,
                )
                log.debug("state database write failed", exc_info=True)
            self.error = str(exc)

    def _forget(self, target: str) -> None:
        self._dirty.pop(target, None)
        self._aging.pop(target, None)

    def count(self, target: str) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM pending WHERE target = ?", (target,)
        ).fetchone()
        return int(row[0])

    def _save_target(self, target: str, seq: int) -> None:
        self._db.execute(
            "INSERT INTO target(name, seq) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET seq = excluded.seq",
            (target, seq),
        )
