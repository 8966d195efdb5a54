"""The other names of hard-linked files inside the tree.

inotify (and fanotify) name only the path a file was written or chmodded through, but
every name of the same inode changed, and rsync without -H sends each name as its own
file. So for regular files with more than one link, the translator keeps which names
in the tree share one (dev, ino), learned from the lstat calls and listings it makes
anyway, and reports them all. Only such files are kept, up to ``limit`` names; past
that, the names left out are logged once and reach the replica at the next full sync.
"""

from __future__ import annotations

import logging
import os
import stat
from array import array
from collections import Counter
from collections.abc import Iterable

from .fsops import Fs
from .scanner import TreeScanner, new_inodes
from .watchtree import WatchTree

log = logging.getLogger(__name__)

Key = tuple[int, bytes]  # (parent watch descriptor, name)
Ident = tuple[int, int]  # (st_dev, st_ino)

MAX_NAMES = 65536
SEARCH_GAP = 1.0  # seconds between two walks of the tree for names not known


class HardLinks:
    """Names by inode, for regular files with st_nlink > 1."""

    def __init__(self, limit: int = MAX_NAMES) -> None:
        self.limit = limit
        self._names: dict[Ident, set[Key]] = {}
        self._ident: dict[Key, Ident] = {}
        self._nlink: dict[Ident, int] = {}  # links the inode had at its last lstat
        self._short: set[Ident] = set()  # fewer names known than it has links
        # Set when names were left out for lack of room: a write may then miss some.
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._ident)

    @property
    def incomplete(self) -> bool:
        """Whether some linked file has names (in the tree or not) that are not known."""
        return bool(self._short)

    def _count(self, ident: Ident) -> None:
        if len(self._names[ident]) < self._nlink[ident]:
            self._short.add(ident)
        else:
            self._short.discard(ident)

    def learn(self, key: Key, st: os.stat_result) -> None:
        """What an lstat of ``key`` showed: remember it if it has other links."""
        ident = (st.st_dev, st.st_ino)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink < 2:
            self.forget(key)
            return
        if self._ident.get(key) != ident:
            self.add(key, ident, st.st_nlink)
        else:
            self._nlink[ident] = st.st_nlink
            self._count(ident)

    def known(self, key: Key) -> bool:
        return key in self._ident

    def ident(self, key: Key) -> Ident | None:
        return self._ident.get(key)

    def nlink(self, ident: Ident) -> int:
        return self._nlink.get(ident, 0)

    def short(self, ident: Ident) -> bool:
        """Whether ``ident`` has more links than names known."""
        return ident in self._short

    def others(self, key: Key) -> list[Key]:
        """The other names known for ``key``'s inode."""
        ident = self._ident.get(key)
        if ident is None:
            return []
        return [k for k in self._names[ident] if k != key]

    def forget(self, key: Key, *, unlinked: bool = True) -> Ident | None:
        """The name now means another file, or none; returns what it meant."""
        ident = self._ident.pop(key, None)
        if ident is not None:
            names = self._names[ident]
            names.discard(key)
            if not names:
                del self._names[ident]
                del self._nlink[ident]
                self._short.discard(ident)
                return ident
            if unlinked:
                self._nlink[ident] -= 1
                if self._nlink[ident] < 2:  # the name left has no other link now
                    for other in names:
                        del self._ident[other]
                    del self._names[ident], self._nlink[ident]
                    self._short.discard(ident)
                    return ident
            self._count(ident)
        return ident

    def add_names(self, ident: Ident, keys: list[Key]) -> None:
        """All the names of ``ident``, none of them known yet (a walk after ``clear``)."""
        if len(self._ident) + len(keys) > self.limit:
            self._full()
            return
        self._ident.update(dict.fromkeys(keys, ident))
        self._names[ident] = set(keys)
        self._nlink[ident] = len(keys)

    def _full(self) -> None:
        if not self.overflowed:
            log.warning(
                "more than %d hard-linked names below the source: a change written "
                "through one of them reaches its other names only at the next full sync",
                self.limit,
            )
        self.overflowed = True

    def moved(self, key: Key) -> tuple[Ident, int] | None:
        """``key`` was renamed away: what to pass to ``add`` for its new name, if any."""
        ident = self._ident.get(key)
        if ident is None:
            return None
        nlink = self._nlink[ident]
        self.forget(key, unlinked=False)
        return ident, nlink

    def add(self, key: Key, ident: Ident, nlink: int) -> None:
        """``key`` is a name of ``ident``, which has ``nlink`` links."""
        self.forget(key)
        if len(self._ident) >= self.limit:
            self._full()
            return
        self._ident[key] = ident
        self._names.setdefault(ident, set()).add(key)
        self._nlink[ident] = nlink
        self._count(ident)

    def dirs(self) -> set[int]:
        """The directories of the names known."""
        return {k[0] for k in self._ident}

    def drop_dirs(self, wds: Iterable[int]) -> None:
        """Forget names in directories no longer watched."""
        gone = set(wds)
        for key in [k for k in self._ident if k[0] in gone]:
            self.forget(key, unlinked=False)

    def clear(self) -> None:
        self._names.clear()
        self._ident.clear()
        self._nlink.clear()
        self._short.clear()
        self.overflowed = False


class LinkNames:
    """Which other paths a write through one name changed, and finding the names not known.

    Names are learned from the lstat calls the translator makes anyway (creates, files in
    new directories), from inode numbers listed twice by the walks of the whole tree
    (start, after lost events), and by an lstat of a written name while some linked
    file has names not known. A write through a file whose names are not all known asks for a walk of the
    tree's listings for its inode number, at most one walk every ``gap`` seconds, and
    none again for that file until its link count changes (its other names may be
    outside the tree).
    """

    def __init__(self, prefix: bytes, tree: WatchTree, fs: Fs, scanner: TreeScanner) -> None:
        self.map = HardLinks()
        self._prefix = prefix
        self._root = scanner.root
        self._tree = tree
        self._fs = fs
        self._scanner = scanner
        self._wanted: set[Ident] = set()  # a walk should look for these
        self._searched: dict[Ident, int] = {}  # the link count at its last walk
        self._walk_after = 0.0
        self.gap = SEARCH_GAP

    def path_of(self, key: Key) -> bytes | None:
        node = self._tree.get(key[0])
        base = None if node is None else self._tree.path(node)
        return None if base is None else base + b"/" + key[1] if base else key[1]

    def others(self, key: Key) -> list[bytes]:
        """The other known names of ``key``'s file, if it has any; asks for a walk if
        some of them are not known."""
        links = self.map
        if not links.known(key):
            if not links.incomplete:
                return []  # no linked file has a name not known: this one has no links
            path = self.path_of(key)
            try:  # maybe a name not known yet of a file linked at run time
                st = None if path is None else self._fs.lstat(self._prefix + path)
            except OSError:
                st = None
            if st is None:
                return []
            links.learn(key, st)
        ident = links.ident(key)
        if (
            ident is not None
            and links.short(ident)
            and self._searched.get(ident) != links.nlink(ident)
        ):
            self._wanted.add(ident)
        out = []
        for other in links.others(key):
            path = self.path_of(other)
            if path is None:
                links.forget(other, unlinked=False)  # its directory left the tree
            else:
                out.append(path)
        return out

    def next_due(self) -> float | None:
        return max(self._walk_after, 0.0) if self._wanted else None

    def search(self, now: float) -> list[bytes]:
        """Walk the tree for the wanted files' names, if due; returns the names found."""
        if not self._wanted or now < self._walk_after:
            return []
        wanted, self._wanted = self._wanted, set()
        self._walk_after = now + self.gap
        for ident in wanted:
            if len(self._searched) >= MAX_NAMES:
                self._searched.clear()
            self._searched[ident] = self.map.nlink(ident)
        found = []
        numbers = {ident[1] for ident in wanted}
        for node, name, path, _ in self._scanner.find(numbers):
            key = (node.wd, name)
            if self.map.known(key):
                continue
            try:
                st = self._fs.lstat(self._prefix + path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in wanted:
                self.map.learn(key, st)
                found.append(path)
        log.debug("looked for %d hard-linked files' other names: found %d", len(wanted), len(found))
        return found

    def rewalk(self) -> None:
        """After lost events: walk the tree again (see ``TreeScanner.rewalk``), relearn."""
        self.clear()
        inodes = new_inodes()
        self._scanner.rewalk(inodes)
        self.learn_walk(inodes)

    def learn_walk(self, inodes: array[int]) -> None:
        """Learn the linked files a walk of the tree listed under ``inodes``.

        A number listed twice is one file with two names if both directories are on one
        filesystem (the directory's st_dev stands for its files': one lstat per directory,
        none per file). A rare miss (a file bind-mounted over another) costs only a
        needless transfer of a name rsync then finds equal.
        """
        if len(set(inodes)) == len(inodes):
            return  # no hard links in the tree: nothing more to pay
        twice = {n for n, count in Counter(inodes).items() if count > 1}
        dev: dict[int, int | None] = {}  # by directory wd
        names: dict[Ident, list[Key]] = {}
        for node, name, path, number in self._scanner.find(twice):
            if node.wd not in dev:
                base = path.rpartition(b"/")[0]
                try:
                    dev[node.wd] = self._fs.lstat(self._prefix + base).st_dev
                except OSError:
                    dev[node.wd] = None  # gone since: its events say more
            if (d := dev[node.wd]) is not None:
                names.setdefault((d, number), []).append((node.wd, name))
        for ident, keys in names.items():
            if len(keys) > 1:
                self.map.add_names(ident, keys)

    def clear(self) -> None:
        self.map.clear()
        self._wanted.clear()
        self._searched.clear()
