"""fanotify records in, the inotify-shaped events the translator reads out.

Pure but for an injected ``lstat``, so it is tested without the kernel. The translator
(``translate.py``) then decides what the events mean, exactly as for inotify; this only
restores what fanotify leaves out:

- A directory is known by its handle. ``HandleMap`` gives each directory of the tree a
  number that plays the inotify watch descriptor, so an event below the source is one
  dict lookup away from its node, and one from anywhere else on the filesystem is
  dropped by that same lookup. It holds exactly the tree's directories (entries leave
  with their node), so it is bounded by the tree, never by the filesystem, and no handle
  is ever resolved (no open_by_handle_at, so no ESTALE for a deleted directory).
- There are no cookies: a FAN_RENAME carries both ends, and becomes a paired
  MOVED_FROM/MOVED_TO under a cookie of our own.
- Events for one name are merged while unread, and their order is lost. A merged mask
  is replayed in an order that ends in the state the name is in now (lstat decides
  between create-then-delete and delete-then-create). A name whose last event in a read
  removed it but that exists again (re-created, with its create merged into an earlier
  event) is reported created at the end of the read.
- Events on a directory itself come with its own handle and the name ".": an attribute
  change is reported to its parent under its name, as inotify would.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Callable, Container, Iterable, Iterator

from . import fanotify as fan
from . import inotify as ino
from .fanotify import Record
from .watchtree import WatchTree

Event = tuple[int, int, int, bytes]  # wd, mask, cookie, name: what inotify's parser gives

# Merged bits other than create and delete, replayed in this order: a close comes last,
# so writes before it are not mistaken for a file still open.
_BETWEEN = ((fan.FAN_MODIFY, ino.IN_MODIFY), (fan.FAN_ATTRIB, ino.IN_ATTRIB),
            (fan.FAN_CLOSE_WRITE, ino.IN_CLOSE_WRITE))  # fmt: skip


class HandleMap:
    """Directory handles (fsid + file handle bytes) to watch numbers, and back."""

    def __init__(self) -> None:
        self._wd: dict[bytes, int] = {}
        self._handle: dict[int, bytes] = {}
        self._next = itertools.count(1)
        # Handles found not to be the tree's (elsewhere, excluded, deleted), when the map
        # is filled lazily (``fanlazy.py``): a busy neighbour then costs one lookup per
        # event. Forgotten whenever a directory is renamed into the tree, since that may
        # bring any of them in.
        self.outside: dict[bytes, None] = {}

    def __len__(self) -> int:
        return len(self._wd)

    @property
    def known(self) -> Container[bytes]:
        """The handles of the tree's directories, for ``fanotify.parse_events``."""
        return self._wd

    def add(self, handle: bytes) -> int:
        """The number for ``handle``; the same directory always gets the same one."""
        wd = self._wd.get(handle)
        if wd is None:
            wd = self._wd[handle] = next(self._next)
            self._handle[wd] = handle
        return wd

    def get(self, handle: bytes) -> int | None:
        return self._wd.get(handle)

    def discard(self, wd: int) -> None:
        handle = self._handle.pop(wd, None)
        if handle is not None:
            del self._wd[handle]


class EventConverter:
    """Turns one fanotify group's records into inotify events for one tree."""

    def __init__(
        self,
        root: bytes,
        handles: HandleMap,
        tree: WatchTree,
        lstat: Callable[[bytes], os.stat_result],
        lookup: Callable[[bytes], int | None] | None = None,
    ) -> None:
        self._prefix = root if root == b"/" else root + b"/"
        self.handles = handles
        # A handle's watch number; a lazy map finds the directories not met yet.
        self._lookup = handles.get if lookup is None else lookup
        self._tree = tree
        self._lstat = lstat
        self._cookies = itertools.count(1)

    def convert(self, records: Iterable[Record]) -> Iterator[Event]:
        """Lazily, so that a directory the translator starts watching while it reads
        one event is known to the records after it."""
        removed: dict[tuple[int, bytes], None] = {}  # names whose last event removed them
        for r in records:
            mask = r.mask
            if mask & fan.FAN_Q_OVERFLOW:
                yield (-1, ino.IN_Q_OVERFLOW, 0, b"")
                continue
            isdir = ino.IN_ISDIR if mask & fan.FAN_ONDIR else 0
            if mask & fan.FAN_RENAME:
                new = self._lookup(r.new_handle)
                if new is not None and mask & fan.FAN_ONDIR and self.handles.outside:
                    # A directory moved into the tree (from elsewhere or an excluded
                    # name): the handles below it are the tree's now.
                    self.handles.outside.clear()
                old = self._lookup(r.handle)
                cookie = next(self._cookies)
                if old is not None:
                    removed[(old, r.name)] = None
                    yield (old, ino.IN_MOVED_FROM | isdir, cookie, r.name)
                if new is not None:
                    removed.pop((new, r.new_name), None)
                    yield (new, ino.IN_MOVED_TO | isdir, cookie, r.new_name)
                continue
            wd = self._lookup(r.handle)
            if wd is None:
                continue  # elsewhere on the filesystem, or in an excluded directory
            if r.name == b".":
                yield from self._self(wd, mask)
                continue
            key = (wd, r.name)
            deleted = bool(mask & fan.FAN_DELETE)
            if mask & fan.FAN_CREATE and deleted:
                st = self._exists(wd, r.name)
                # Made again only if what has the name now is of this record's kind: a
                # file's and a directory's events are never merged into one record.
                exists = st is not None and stat.S_ISDIR(st.st_mode) == bool(isdir)
                if exists:  # deleted, then created again
                    yield (wd, ino.IN_DELETE | isdir, 0, r.name)
                yield (wd, ino.IN_CREATE | isdir, 0, r.name)
                deleted = not exists
            elif mask & fan.FAN_CREATE:
                yield (wd, ino.IN_CREATE | isdir, 0, r.name)
            for fbit, ibit in _BETWEEN:
                if mask & fbit:
                    yield (wd, ibit | isdir, 0, r.name)
            if deleted:
                removed[key] = None
                yield (wd, ino.IN_DELETE | isdir, 0, r.name)
            else:
                removed.pop(key, None)
        for wd, name in removed:
            st = self._exists(wd, name)
            if st is not None:
                isdir = ino.IN_ISDIR if stat.S_ISDIR(st.st_mode) else 0
                yield (wd, ino.IN_CREATE | isdir, 0, name)

    def _self(self, wd: int, mask: int) -> Iterator[Event]:
        node = self._tree.get(wd)
        if node is None:
            return
        if mask & fan.FAN_ATTRIB:
            if node is self._tree.root:
                yield (wd, ino.IN_ATTRIB, 0, b"")
            elif node.parent is not None:
                yield (node.parent.wd, ino.IN_ATTRIB | ino.IN_ISDIR, 0, node.name)
        if mask & fan.FAN_DELETE_SELF:
            # A handle names one inode: it is gone for good, whatever has its name now.
            yield (wd, ino.IN_DELETE_SELF, 0, b"")
            self.handles.discard(wd)
        elif mask & fan.FAN_MOVE_SELF and node is self._tree.root:
            yield (wd, ino.IN_MOVE_SELF, 0, b"")

    def _exists(self, wd: int, name: bytes) -> os.stat_result | None:
        node = self._tree.get(wd)
        base = None if node is None else self._tree.path(node)
        if base is None:
            return None
        try:
            return self._lstat(self._prefix + (base + b"/" + name if base else name))
        except OSError:
            return None
