"""The fanotify backend's directories, found when their first event comes (issue 16).

One filesystem mark watches every directory, so nothing has to be listed before the
first change is caught: the tree starts as its root alone, and an event whose directory
handle is not known yet is resolved on demand (``locate``: open_by_handle_at through the
mount that holds the source, then the readlink of /proc/self/fd) into a path, whose
missing directories are then added to the tree from the root down, so every known
directory has its parents known too. A handle found elsewhere on the filesystem, in an excluded
directory, or deleted is remembered in ``HandleMap.outside`` (bounded), which a
directory renamed into the tree clears.

The tree is a bounded cache (``cap`` directories): past it, ``trim`` forgets the oldest
leaves that no event touched since the last trim and no pending state names (a file
held open, a move waiting for its partner, a known hard link). What a forgotten
directory costs, and what bounding loses:

- its next event pays one resolution again (three system calls, and one more for each
  of its parents that is not known either);
- a forgotten directory that is then deleted cannot be resolved (ESTALE): the events
  from inside it that were still queued are dropped, but the deletion is reported on
  its parent, by name, and a deleted directory takes its contents with it on a target;
  the topmost deleted directory always has a parent that still exists;
- a handle resolves to where its directory is *now*, which may be past events still
  queued: an event inside a directory renamed since is reported under the new name.
  The rename itself is reported too, and its new end is listed again, so every target
  converges as it does after any race between a listing and events;
- hard links among files that existed before start are not looked for (no walk of the
  tree is made): a write through one of their names reaches the others at the next
  full sync, as it already did for every tree past ``scanner.MAX_INODES`` entries.
"""

from __future__ import annotations

from collections.abc import Callable

from .excludes import Excludes
from .fanevents import HandleMap
from .fsops import Fs
from .watchtree import WatchTree

# About 400 bytes a directory (node, name, children, handle, three map entries): ~40 MB.
CAP = 100_000
MAX_OUTSIDE = 65_536  # handles known not to be ours: ~100 bytes each


class LazyDirs:
    """Finds the tree's directories by handle, on demand, and keeps at most ``cap``."""

    def __init__(
        self,
        real_root: bytes,
        handles: HandleMap,
        tree: WatchTree,
        fs: Fs,
        locate: Callable[[bytes], bytes | None],
        *,
        excludes: Excludes,
        mask: int,
        cap: int = CAP,
    ) -> None:
        self._prefix = real_root if real_root == b"/" else real_root + b"/"
        self._real = real_root
        self.handles = handles
        self._tree = tree
        self._fs = fs
        self._locate = locate
        self._excludes = excludes
        self._mask = mask
        self.cap = cap
        self.touched: set[int] = set()  # since the last trim
        self.resolved = 0  # handles looked up through ``locate`` (for tests and stats)

    def __contains__(self, handle: object) -> bool:
        """Whether an event on ``handle`` may be the tree's: ``fanotify.parse_events``
        skips the others before building a record."""
        return handle in self.handles.known or handle not in self.handles.outside

    def wd(self, handle: bytes) -> int | None:
        """The watch number of the tree's directory ``handle``, None if it is not one."""
        wd = self.handles.get(handle)
        if wd is None:
            if handle in self.handles.outside:
                return None
            wd = self._resolve(handle)
            if wd is None:
                outside = self.handles.outside
                if len(outside) >= MAX_OUTSIDE:
                    outside.clear()
                outside[handle] = None
                return None
        self.touched.add(wd)
        return wd

    def _resolve(self, handle: bytes) -> int | None:
        self.resolved += 1
        where = self._locate(handle)
        if where is None or self._tree.root is None:
            return None
        if where == self._real:
            rel = b""
        elif where.startswith(self._prefix):
            rel = where[len(self._prefix) :]
        else:
            return None
        parts = rel.split(b"/") if rel else []
        # The last directory is the handle's own, so it needs no handle looked up by
        # name (the cost of a storm across a large tree is one resolution per directory),
        # unless readlink says it was deleted since it was opened.
        last = len(parts) - 1 if not where.endswith(b" (deleted)") else -1
        node, base = self._tree.root, b""
        for n, part in enumerate(parts):
            path = base + b"/" + part if base else part
            child = node.children.get(part)
            if child is None:
                if self._excludes and self._excludes.excludes(path, is_dir=True):
                    return None
                try:
                    wd = (
                        self.handles.add(handle)
                        if n == last
                        else self._fs.add_watch(self._prefix + path, self._mask)
                    )
                except OSError:
                    return None  # gone or replaced since: its events say more
                child = self._tree.attach(wd, node, part)
            node, base = child, path
        # The name may hold another directory by now: then the handle is not placed.
        return node.wd if self.handles.get(handle) == node.wd else None

    def trim(self, in_use: Callable[[], set[int]]) -> int:
        """Forget directories down to 3/4 of ``cap`` if there are more than ``cap``;
        returns how many were forgotten. Only leaves go, so every directory kept still
        has its parents; a pass may leave more than the goal (their parents go next)."""
        tree = self._tree
        if len(tree) <= self.cap:
            if len(self.touched) > self.cap:
                self.touched.clear()
            return 0
        keep = in_use() | self.touched
        self.touched = set()
        excess = len(tree) - self.cap * 3 // 4
        victims = []
        for wd in tree.wds():  # oldest first
            node = tree.get(wd)
            if node is None or node is tree.root or node.children or node.moving:
                continue
            if wd in keep:
                continue
            victims.append(wd)
            if len(victims) >= excess:
                break
        for wd in victims:
            tree.drop(wd)
            self._fs.rm_watch(wd)
        return len(victims)
