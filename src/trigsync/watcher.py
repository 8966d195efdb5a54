"""Recursive inotify watching of one source tree, as an async iterator of change batches.

New and moved-in directories are scanned whole, because files can land in them before
their watch exists. Moves are paired by cookie; a directory that leaves the tree has its
watches removed, so nothing below it is reported afterwards. A queue overflow asks for
one full sync, the only safe answer to lost events, once the burst is over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

from . import inotify as ino
from .changes import Batch, Change, Kind, Move
from .errors import WatchError, WatchLimitError
from .excludes import Excludes
from .scanner import TreeScanner
from .unclosed import UnclosedWrites
from .watchtree import Node, WatchTree

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
# Bounds one wake-up under a storm so batches keep flowing; the fd stays readable, so the
# loop wakes us again at once.
MAX_READS_PER_WAKEUP = 64
MAX_FRESH = 65536

BASE_MASK = ino.TREE_EVENTS

_NO_EXCLUDES = Excludes()


class WatcherStatistics(NamedTuple):
    watches: int
    events_read: int
    overflows: int


@dataclass(slots=True)
class _Move:
    """A MOVED_FROM waiting for its MOVED_TO."""

    path: bytes
    node: Node | None  # the directory's node, if it was one we watched
    excluded: bool
    deadline: float
    parent: Node | None = None  # where the node was when it left


class Watcher:
    """Watches ``root`` (an absolute path, as bytes) and everything below it."""

    def __init__(
        self,
        root: bytes,
        *,
        excludes: Excludes = _NO_EXCLUDES,
        move_timeout: float = 0.05,
        watch_modify: bool = False,
        modify_settle: float = 0.5,
        overflow_quiet: float = 0.5,
    ) -> None:
        self.root = root.rstrip(b"/") or b"/"
        self._prefix = self.root if self.root == b"/" else self.root + b"/"
        self._excludes = excludes
        self._move_timeout = move_timeout
        self._mask = BASE_MASK
        # Writes are reported at close; a modification with no close (truncate(2), mmap,
        # a log kept open) is reported after modify_settle, or at once with watch_modify.
        self._watch_modify = watch_modify
        # (parent wd, name) -> (first, last) IN_MODIFY time, for files awaiting a close
        self._modified = UnclosedWrites(modify_settle)
        self._fd = -1
        self._tree = WatchTree()
        self._scanner = TreeScanner(self.root, self._tree, excludes, self._mask)
        self._fresh: set[tuple[int, bytes]] = set()  # (parent wd, name) of empty new files
        self._created_now: set[tuple[int, bytes]] = set()  # files reported in this batch
        self._moves: dict[int, _Move] = {}  # by cookie, oldest first
        self._out: list[Change] = []
        self._renames: list[Move] = []
        self._full = False
        self._rewalk = False
        self._overflow_quiet = overflow_quiet
        self._overflow_last: float | None = None  # loop time of this episode's last overflow
        self._events_read = 0
        self._overflows = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._now = 0.0  # loop time at the start of the current wake-up

    @property
    def watch_count(self) -> int:
        return len(self._tree)

    def statistics(self) -> WatcherStatistics:
        return WatcherStatistics(len(self._tree), self._events_read, self._overflows)

    def start(self) -> None:
        """Create the inotify instance and watch every directory of the tree."""
        if self._fd >= 0:
            return
        self._fd = self._scanner.fd = ino.init()
        try:
            try:
                # The configured root may be a symlink; nothing below it is followed.
                wd = ino.add_watch(self._fd, self.root, self._mask & ~ino.IN_DONT_FOLLOW)
            except ino.NoWatchSpaceError:
                top = None
            except OSError as exc:
                raise WatchError(
                    f"cannot watch source directory {os.fsdecode(self.root)}: {exc.strerror}; "
                    "check that it exists, is a directory and is readable"
                ) from exc
            else:
                top = self._tree.set_root(wd)
            dirs, nospace = self._scanner.scan(top, b"", None)
            if top is None or nospace:
                fmt, args = ino.watch_limit_advice(self.root, dirs + 1)
                raise WatchLimitError(
                    fmt % args, sysctl="max_user_watches", suggested=int(str(args[-1]))
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop watching; a running batches() iterator ends."""
        self._cancel_timer()
        if self._fd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = self._scanner.fd = -1
        self._tree.clear()
        self._fresh.clear()
        self._modified.clear()
        self._moves.clear()
        if self._wake is not None:
            self._wake.set()

    async def batches(self) -> AsyncIterator[Batch]:
        """One batch per wake-up of the inotify fd (or of a move timeout), never empty."""
        self.start()
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        fd = self._fd
        self._loop, self._wake = loop, wake
        loop.add_reader(fd, wake.set)
        wake.set()  # events may have queued before we were iterated
        try:
            while True:
                await wake.wait()
                wake.clear()
                if self._fd < 0:
                    return
                batch = self._collect(loop)
                if batch:
                    yield batch
        finally:
            self._cancel_timer()
            if self._fd == fd:
                loop.remove_reader(fd)
            self._loop = self._wake = None

    # -- one wake-up ---------------------------------------------------------------------

    def _collect(self, loop: asyncio.AbstractEventLoop) -> Batch:
        self._now = loop.time()
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            events = ino.parse_events(data)
            self._events_read += len(events)
            for wd, mask, cookie, name in events:
                self._handle(wd, mask, cookie, name)
            if not data:
                break
        now = loop.time()
        if self._overflow_last is not None and now >= self._overflow_last + self._overflow_quiet:
            self._overflow_last = None
            self._full = self._rewalk = True
        if self._rewalk:
            self._rewalk_tree()
        if self._modified:
            self._flush_modified(now)
        while self._moves:
            cookie, move = next(iter(self._moves.items()))
            if move.deadline > now:
                break
            del self._moves[cookie]
            self._moved_out(move)
        self._cancel_timer()
        settle = self._modified.next_due()
        deadlines = [] if settle is None else [settle]
        if self._moves:
            deadlines.append(next(iter(self._moves.values())).deadline)
        if self._overflow_last is not None:
            deadlines.append(self._overflow_last + self._overflow_quiet)
        if deadlines:
            self._timer = loop.call_at(min(deadlines), self._wake_up)
        batch = Batch(tuple(self._out), self._full, tuple(self._renames))
        self._out = []
        self._renames = []
        self._created_now.clear()
        self._full = False
        return batch

    def _flush_modified(self, now: float) -> None:
        """Report files modified and not closed since, once their writes settled."""
        for wd, name in self._modified.due(now):
            node = self._tree.get(wd)
            base = None if node is None else self._tree.path(node)
            if base is not None:
                self._out.append(Change(base + b"/" + name if base else name, Kind.CHANGED))

    def _wake_up(self) -> None:
        self._timer = None
        if self._wake is not None:
            self._wake.set()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- events --------------------------------------------------------------------------

    def _handle(self, wd: int, mask: int, cookie: int, name: bytes) -> None:
        if mask & ino.IN_Q_OVERFLOW:
            if self._overflow_last is None:
                log.warning(
                    "inotify queue overflowed under %s: events were lost; every target gets "
                    "one reconciling sync once the burst is over (raise "
                    "fs.inotify.max_queued_events if this repeats)",
                    os.fsdecode(self.root),
                )
            # One episode, however many overflows: a full sync started while the burst
            # still overflows would only need another one after it.
            self._overflow_last = self._now
            self._overflows += 1
            return
        node = self._tree.get(wd)
        if node is None:
            return
        if not name:
            self._handle_self(node, mask)
            return
        base = self._tree.path(node)
        if base is not None:
            self._handle_named(node, name, base + b"/" + name if base else name, mask, cookie)

    def _handle_named(self, node: Node, name: bytes, path: bytes, mask: int, cookie: int) -> None:
        is_dir = bool(mask & ino.IN_ISDIR)
        if mask & ino.IN_MOVED_FROM:
            self._moved_from(node, name, path, is_dir, cookie)
        elif mask & ino.IN_MOVED_TO:
            self._moved_to(node, name, path, is_dir, cookie)
        elif self._excludes.excludes(path, is_dir=is_dir):
            pass
        elif mask & ino.IN_CREATE:
            if is_dir:
                self._scanner.add_tree(node, name, path, self._out)
            else:
                self._created_file(node, name, path)
        elif mask & ino.IN_MODIFY and not self._watch_modify:
            key = (node.wd, name)
            if key not in self._fresh and key not in self._created_now:
                self._modified.touch(key, self._now)
        elif mask & (ino.IN_CLOSE_WRITE | ino.IN_MODIFY | ino.IN_ATTRIB):
            # A fresh file's first sign of content or metadata is its creation. A change
            # to a file created in this same batch would merge into CREATED: drop it.
            key = (node.wd, name)
            if mask & ino.IN_CLOSE_WRITE:
                self._modified.discard(key)
            if key in self._created_now:
                return
            if key in self._fresh:
                self._fresh.discard(key)
                self._created_now.add(key)
                self._out.append(Change(path, Kind.CREATED))
            else:
                self._out.append(Change(path, Kind.CHANGED))
        elif mask & ino.IN_DELETE:
            self._fresh.discard((node.wd, name))
            self._modified.discard((node.wd, name))
            self._created_now.discard((node.wd, name))
            self._out.append(Change(path, Kind.DELETED))

    def _handle_self(self, node: Node, mask: int) -> None:
        if node is self._tree.root and mask & (
            ino.IN_DELETE_SELF | ino.IN_MOVE_SELF | ino.IN_IGNORED
        ):
            raise WatchError(
                f"source directory {os.fsdecode(self.root)} was deleted or moved away; "
                "recreate it and restart trigsync"
            )
        if mask & (ino.IN_DELETE_SELF | ino.IN_IGNORED):
            self._tree.drop(node.wd)
        elif mask & ino.IN_UNMOUNT:
            self._full = self._rewalk = True
        elif mask & ino.IN_ATTRIB and node is self._tree.root:
            self._out.append(Change(b".", Kind.CHANGED))

    def _created_file(self, parent: Node, name: bytes, path: bytes) -> None:
        try:
            st = os.lstat(self._prefix + path)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot stat new file %r: %s", path, exc.strerror)
        else:
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size == 0:
                # Still being written: its IN_CLOSE_WRITE reports it, once, as CREATED.
                if len(self._fresh) >= MAX_FRESH:
                    self._fresh.clear()
                self._fresh.add((parent.wd, name))
                return
        self._created_now.add((parent.wd, name))
        self._out.append(Change(path, Kind.CREATED))

    def _moved_from(
        self, parent: Node, name: bytes, path: bytes, is_dir: bool, cookie: int
    ) -> None:
        self._fresh.discard((parent.wd, name))
        self._created_now.discard((parent.wd, name))
        self._modified.discard((parent.wd, name))
        node = parent.children.get(name) if is_dir else None
        if node is not None:
            node.moving = True
        excluded = self._excludes.excludes(path, is_dir=is_dir)
        self._moves[cookie] = _Move(path, node, excluded, self._now + self._move_timeout, parent)

    def _moved_to(self, parent: Node, name: bytes, path: bytes, is_dir: bool, cookie: int) -> None:
        src = self._moves.pop(cookie, None)
        if src is not None and src.node is not None:
            src.node.moving = False
        if self._excludes.excludes(path, is_dir=is_dir):
            if src is not None:
                self._moved_out(src)  # into an excluded place: as good as gone
            return
        # A rename inside the tree: targets may move their copy, so the new paths are
        # CHANGED (the target may have them), never CREATED.
        kind = Kind.CREATED
        if src is not None and not src.excluded:
            self._out.append(Change(src.path, Kind.DELETED))
            self._renames.append(Move(src.path, path, after=len(self._out)))
            kind = Kind.CHANGED
            if src.node is not None:
                self._tree.move(src.node, parent, name)
        if is_dir:
            self._scanner.add_tree(parent, name, path, self._out, kind)
        else:
            self._out.append(Change(path, kind))

    def _moved_out(self, move: _Move) -> None:
        node = move.node
        if node is not None and (
            node.parent is not move.parent or node.name != move.path.rsplit(b"/", 1)[-1]
        ):
            # It came back in under another cookie (moved out and straight back): the
            # MOVED_TO re-attached the same watch, which must stay.
            move = dataclasses.replace(move, node=None)
        if move.node is not None:
            move.node.moving = False
            wds = self._tree.detach(move.node)
            for wd in wds:
                self._scanner.remove_watch(wd)
            if self._fresh:
                gone = set(wds)
                self._fresh = {k for k in self._fresh if k[0] not in gone}
        if not move.excluded:
            self._out.append(Change(move.path, Kind.DELETED))

    def _rewalk_tree(self) -> None:
        """After lost events: watch what is missing, forget what is gone, drop stale state."""
        self._rewalk = False
        for move in self._moves.values():
            if move.node is not None:
                move.node.moving = False
        self._moves.clear()
        self._fresh.clear()
        self._modified.clear()
        self._scanner.rewalk()
