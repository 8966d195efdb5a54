"""Watching and listing directories: what the watcher does when a tree appears or is lost.

A new directory is watched first and listed second, so a file created in between is
seen one way or the other. After lost events the whole tree is walked again. All I/O
goes through ``Fs``, so this runs unchanged under the model test's in-memory tree.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import operator
from array import array
from collections.abc import Callable

from . import inotify as ino
from .excludes import Excludes
from .fsops import Fs
from .watchtree import Node, WatchTree

log = logging.getLogger(__name__)

_VANISHED = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

# Called for each entry found below a new directory: (its directory's node, or None if
# that one has no watch; name; path; whether it is a directory).
Found = Callable[[Node | None, bytes, bytes, bool], None]
# Inode numbers a walk collects to find hard links: about 40 bytes each, for the walk only.
MAX_INODES = 1 << 20
_INODE = operator.itemgetter(2)


def new_inodes() -> array[int]:
    """Where a walk collects inode numbers: 8 bytes each, where a list of ints would hold
    40 (and scatter a million int objects among the tree's nodes, so their memory is
    never returned)."""
    return array("Q")


class TreeScanner:
    """Adds, prunes and re-walks the watches of one tree."""

    def __init__(
        self,
        root: bytes,
        tree: WatchTree,
        excludes: Excludes,
        mask: int,
        fs: Fs,
        *,
        lazy: bool = False,
    ) -> None:
        self.root = root
        # The tree holds only the directories events named (fanotify, ``fanlazy.py``).
        self.lazy = lazy
        self.prefix = root if root == b"/" else root + b"/"
        self.tree = tree
        self.excludes = excludes
        self.mask = mask
        self.fs = fs

    def remove_watch(self, wd: int) -> None:
        # EINVAL means the kernel already dropped it (deleted or unmounted).
        with contextlib.suppress(OSError):
            self.fs.rm_watch(wd)

    def rewalk(self, inodes: array[int] | None = None) -> None:
        """Watch what is missing and forget what is gone, from the root down."""
        root = self.tree.root
        if root is None:
            return
        seen = {root.wd}
        _, nospace = self.scan(root, b"", None, seen, inodes)
        for wd in [wd for wd in self.tree.wds() if wd not in seen]:
            self.tree.drop(wd)
            self.remove_watch(wd)
        if nospace:
            self.log_no_space(nospace)

    def add_tree(self, parent: Node, name: bytes, path: bytes, found: Found) -> None:
        """Watch a new directory first, then list everything below it into ``found``."""
        nospace = 0
        try:
            node = self.watch(parent, name, path)
        except ino.NoWatchSpaceError:
            node, nospace = None, 1
        seen: set[int] = set()
        _, more = self.scan(node, path, found, seen)
        if node is not None and node.children:
            self.prune(node, seen)
        if nospace or more:
            self.log_no_space(nospace + more)

    def prune(self, top: Node, seen: set[int]) -> None:
        """Forget directories below ``top`` that left while their events were suppressed."""
        stack = [top]
        while stack:
            for child in list(stack.pop().children.values()):
                if child.wd in seen:
                    stack.append(child)
                else:
                    for wd in self.tree.detach(child):
                        self.remove_watch(wd)

    def watch(self, parent: Node, name: bytes, path: bytes) -> Node | None:
        """Watch ``path``; None if it vanished or cannot be watched."""
        try:
            wd = self.fs.add_watch(self.prefix + path, self.mask)
        except ino.NoWatchSpaceError:
            raise
        except OSError as exc:
            if exc.errno not in _VANISHED:
                log.warning("cannot watch directory %r: %s", path, exc.strerror)
            return None
        return self.tree.attach(wd, parent, name)

    def scan(
        self,
        top: Node | None,
        top_path: bytes,
        found: Found | None,
        seen: set[int] | None = None,
        inodes: array[int] | None = None,
    ) -> tuple[int, int]:
        """Watch every directory below ``top``, passing each entry to ``found``, and its
        inode number (d_ino, which the listing gives for free) to ``inodes``.

        Returns (directories found, directories left unwatched for lack of watches).
        Below a directory that has no watch, entries are still listed but not watched.
        """
        dirs = nospace = 0
        excludes = self.excludes
        stack: list[tuple[Node | None, bytes]] = [(top, top_path)]
        while stack:
            node, base = stack.pop()
            try:
                # The root as "root/": a source given as a symlink is followed there
                # (listdir follows none, so that nothing below the root is).
                entries = self.fs.listdir(self.prefix + base)
            except OSError as exc:
                if exc.errno not in _VANISHED:
                    log.warning("cannot list directory %r: %s", base or b".", exc.strerror)
                continue
            if inodes is not None and len(inodes) >= MAX_INODES:
                inodes = None
                log.warning(
                    "more than %d files below %r: hard links past them are not looked for; "
                    "a change written through one name reaches the others at the next full sync",
                    MAX_INODES,
                    self.root,
                )
            if inodes is not None:
                inodes.extend(map(_INODE, entries))  # at C speed: a tree without links pays this
            for name, is_dir, _ in entries:
                path = base + b"/" + name if base else name
                if excludes and excludes.excludes(path, is_dir=is_dir):
                    continue
                if found is not None:
                    found(node, name, path, is_dir)
                if not is_dir:
                    continue
                dirs += 1
                child = None
                if node is not None:
                    try:
                        child = self.watch(node, name, path)
                    except ino.NoWatchSpaceError:
                        nospace += 1
                    else:
                        if child is None:
                            continue
                        if seen is not None:
                            seen.add(child.wd)
                stack.append((child, path))
        return dirs, nospace

    def find(self, numbers: set[int]) -> list[tuple[Node, bytes, bytes, int]]:
        """The files below the root whose inode number (d_ino) is in ``numbers``, as
        (directory node, name, path, number): a walk of listings only.

        Eager, it walks the watched directories; lazy, every directory that is not
        excluded (a name may be anywhere), and places in the tree the directories of
        the names it finds.
        """
        out = []
        excludes = self.excludes
        root = self.tree.root
        stack: list[tuple[Node | None, bytes]] = [] if root is None else [(root, b"")]
        while stack:
            node, base = stack.pop()
            try:
                entries = self.fs.listdir(self.prefix + base)
            except OSError:
                continue  # gone or unreadable: its events say more
            for name, is_dir, number in entries:
                path = base + b"/" + name if base else name
                if is_dir:
                    child = None if node is None else node.children.get(name)
                    if child is not None:
                        stack.append((child, path))
                    elif self.lazy and not (excludes and excludes.excludes(path, is_dir=True)):
                        stack.append((None, path))
                elif number in numbers and not (excludes and excludes.excludes(path, is_dir=False)):
                    if node is None and (node := self._place(base)) is None:
                        break  # gone since it was listed
                    out.append((node, name, path, number))
        return out

    def _place(self, path: bytes) -> Node | None:
        """The node of the directory at ``path``, watching what is missing on its way."""
        node = self.tree.root
        here = b""
        for part in path.split(b"/"):
            if node is None:
                return None
            here = here + b"/" + part if here else part
            child = node.children.get(part)
            node = child if child is not None else self.watch(node, part, here)
        return node

    def log_no_space(self, unwatched: int) -> None:
        fmt, args = ino.watch_limit_advice(self.root, len(self.tree) + unwatched)
        log.error(fmt, *args)
