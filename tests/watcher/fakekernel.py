"""An in-memory tree that queues inotify events as Linux does, for driving the translator.

It implements ``trigsync.fsops.Fs``. Each operation changes the tree at once and queues
the events the kernel would queue, on the watches that exist at that moment; the
translator reads them later, so its lstat and listings see the tree as it is by then,
which is the race the real watcher lives with. Rules followed (inotify(7)): events go to
the watch of the parent directory; a rename over an existing name raises no event for
the name it replaced; an unlinked file raises nothing more (IN_EXCL_UNLINK); a removed
directory's own watch gets IN_DELETE_SELF then IN_IGNORED; a watch follows its inode
wherever it is moved, even out of the tree, until it is removed; a file may have several
names (hard links), and a write or chmod is reported only on the name it went through.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from dataclasses import dataclass, field

from trigsync import inotify as ino

ROOT = b"/src"
ROOT_INO, OUTSIDE_INO = 1, 2
FILE, DIR = "f", "d"  # the test_changes model's entry kinds; a symlink counts as a file

Event = tuple[int, int, int, bytes]


@dataclass
class Inode:
    kind: str  # "f" regular file, "l" symlink, "d" directory
    version: int = 0
    mtime: float = 0.0
    entries: dict[bytes, int] = field(default_factory=dict)
    wd: int | None = None


def _err(code: int, path: bytes) -> OSError:
    exc_type = {errno.ENOENT: FileNotFoundError, errno.ENOTDIR: NotADirectoryError}
    return exc_type.get(code, OSError)(code, os.strerror(code), os.fsdecode(path))


class FakeKernel:
    """The tree below ROOT, an unwatched place outside it, and one inotify queue."""

    def __init__(self) -> None:
        self.inodes: dict[int, Inode] = {ROOT_INO: Inode("d"), OUTSIDE_INO: Inode("d")}
        # inode -> its names as (parent inode, name): one for a directory, 1+ for a file
        self.where: dict[int, list[tuple[int, bytes]]] = {}
        self.open: set[int] = set()  # files open for writing
        self.queue: list[Event] = []
        self.now = 0.0
        self._ino = itertools.count(3)
        self._wd = itertools.count(1)
        self._cookie = itertools.count(1)
        self._out = itertools.count(1)
        self.watches: dict[int, int] = {}  # wd -> inode

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_000_000.0 + self.now

    # -- Fs -------------------------------------------------------------------------------

    def _lookup(self, path: bytes) -> int:
        if path in (ROOT, ROOT + b"/"):
            return ROOT_INO
        if not path.startswith(ROOT + b"/"):
            raise _err(errno.ENOENT, path)
        return self.resolve(path[len(ROOT) + 1 :], full=path)

    def resolve(self, rel: bytes, *, full: bytes = b"") -> int:
        ino_ = ROOT_INO
        for part in rel.split(b"/"):
            node = self.inodes[ino_]
            if node.kind != "d":
                raise _err(errno.ENOTDIR, full or rel)
            if part not in node.entries:
                raise _err(errno.ENOENT, full or rel)
            ino_ = node.entries[part]
        return ino_

    def lstat(self, path: bytes) -> os.stat_result:
        number = self._lookup(path)
        node = self.inodes[number]
        mode = {"f": stat.S_IFREG | 0o644, "l": stat.S_IFLNK | 0o777, "d": stat.S_IFDIR | 0o755}
        m = int(node.mtime)
        nlink = len(self.where.get(number, ())) or 1
        return os.stat_result(
            (mode[node.kind], number, 1, nlink, 0, 0, 0, m, m, m),
            {"st_mtime": node.mtime, "st_atime": node.mtime, "st_ctime": node.mtime},
        )

    def add_watch(self, path: bytes, mask: int) -> int:
        node = self.inodes[self._lookup(path)]
        if node.kind != "d":
            raise _err(errno.ENOTDIR, path)
        if node.wd is None:
            node.wd = next(self._wd)
            self.watches[node.wd] = self._lookup(path)
        return node.wd

    def rm_watch(self, wd: int) -> None:
        number = self.watches.pop(wd, None)
        if number is None:
            raise _err(errno.EINVAL, b"")
        self.inodes[number].wd = None
        self.queue.append((wd, ino.IN_IGNORED, 0, b""))

    def listdir(self, path: bytes) -> list[tuple[bytes, bool, int]]:
        node = self.inodes[self._lookup(path)]
        if node.kind != "d":
            raise _err(errno.ENOTDIR, path)
        return [(name, self.inodes[i].kind == "d", i) for name, i in node.entries.items()]

    # -- what processes do ------------------------------------------------------------------

    def _emit(self, parent: int, mask: int, name: bytes, cookie: int = 0) -> None:
        wd = self.inodes[parent].wd
        if wd is not None:
            self.queue.append((wd, mask, cookie, name))

    def _place(self, rel: bytes) -> tuple[int, bytes] | None:
        """(parent inode, name) for a new entry at ``rel``, if its parent is a directory."""
        up, _, name = rel.rpartition(b"/")
        try:
            parent = self.resolve(up) if up else ROOT_INO
        except OSError:
            return None
        if self.inodes[parent].kind != "d" or name in self.inodes[parent].entries:
            return None
        return parent, name

    def _new(self, kind: str, parent: int, name: bytes, version: int = 0) -> int:
        number = next(self._ino)
        self.inodes[number] = Inode(kind, version, self.wall())
        self.inodes[parent].entries[name] = number
        self.where[number] = [(parent, name)]
        return number

    def exists(self, rel: bytes) -> bool:
        try:
            self.resolve(rel)
        except OSError:
            return False
        return True

    def create(self, rel: bytes) -> None:
        """open(O_CREAT|O_WRONLY): the file stays open until close()."""
        place = self._place(rel)
        if place is not None:
            self.open.add(self._new("f", *place))
            self._emit(place[0], ino.IN_CREATE, place[1])

    def write(self, rel: bytes) -> None:
        """A write(2), opening the file first if it is not open yet."""
        if not self.exists(rel) or self.inodes[self.resolve(rel)].kind != "f":
            return
        number = self.resolve(rel)
        self.open.add(number)
        node = self.inodes[number]
        node.version += 1
        node.mtime = self.wall()
        self._emit_at(rel, ino.IN_MODIFY)

    def _emit_at(self, rel: bytes, mask: int) -> None:
        """An event on the name ``rel`` was reached through (one of a file's names)."""
        place = self._parent_of(rel)
        assert place is not None
        self._emit(place[0], mask, place[1])

    def close(self, rel: bytes) -> None:
        if self.exists(rel) and self.resolve(rel) in self.open:
            self.open.discard(self.resolve(rel))
            self._emit_at(rel, ino.IN_CLOSE_WRITE)

    def chmod(self, rel: bytes) -> None:
        if self.exists(rel):
            number = self.resolve(rel)
            node = self.inodes[number]
            node.version += 1
            isdir = ino.IN_ISDIR if node.kind == "d" else 0
            self._emit_at(rel, ino.IN_ATTRIB | isdir)
            if node.wd is not None:
                self.queue.append((node.wd, ino.IN_ATTRIB | isdir, 0, b""))

    def mkdir(self, rel: bytes) -> None:
        place = self._place(rel)
        if place is not None:
            self._new("d", *place)
            self._emit(place[0], ino.IN_CREATE | ino.IN_ISDIR, place[1])

    def symlink(self, rel: bytes, version: int) -> None:
        place = self._place(rel)
        if place is not None:
            self._new("l", *place, version=version)
            self._emit(place[0], ino.IN_CREATE, place[1])

    def link(self, old: bytes, new: bytes) -> None:
        """link(2): one more name for a regular file."""
        place = self._place(new)
        if place is None or not self.exists(old):
            return
        number = self.resolve(old)
        if self.inodes[number].kind == "f":
            self.inodes[place[0]].entries[place[1]] = number
            self.where[number].append(place)
            self._emit(place[0], ino.IN_CREATE, place[1])

    def delete(self, rel: bytes) -> None:
        """unlink(2), or rm -rf of a directory."""
        place = self._parent_of(rel)
        if self.exists(rel) and place is not None:
            self._remove(*place)

    def _remove(self, parent: int, name: bytes) -> None:
        number = self.inodes[parent].entries[name]
        node = self.inodes[number]
        for child in list(node.entries):
            self._remove(number, child)
        del self.inodes[parent].entries[name]
        self._emit(parent, ino.IN_DELETE | (ino.IN_ISDIR if node.kind == "d" else 0), name)
        self._unname(number, (parent, name))

    def _unname(self, number: int, place: tuple[int, bytes]) -> None:
        """``place`` no longer names ``number``; with no name left, the inode is gone."""
        names = self.where[number]
        names.remove(place)
        if not names:
            del self.where[number]
            self.open.discard(number)
            self._gone(number)

    def _gone(self, number: int) -> None:
        node = self.inodes[number]
        if node.wd is not None:
            self.queue.append((node.wd, ino.IN_DELETE_SELF, 0, b""))
            self.queue.append((node.wd, ino.IN_IGNORED, 0, b""))
            del self.watches[node.wd]
            node.wd = None

    def _rename(self, old: tuple[int, bytes], parent: int, name: bytes) -> bool:
        """rename(2) of the name ``old`` to ``parent/name``, over what is there if allowed."""
        number = self.inodes[old[0]].entries[old[1]]
        node = self.inodes[number]
        victim = self.inodes[parent].entries.get(name)
        if victim == number:
            return False
        if victim is not None:
            other = self.inodes[victim]
            if (other.kind == "d") != (node.kind == "d") or other.entries:
                return False
        up = parent
        while up in self.where:  # not into itself
            if up == number:
                return False
            up = self.where[up][0][0]
        if parent == number:
            return False
        cookie = next(self._cookie)
        isdir = ino.IN_ISDIR if node.kind == "d" else 0
        old_parent, old_name = old
        del self.inodes[old_parent].entries[old_name]
        self._emit(old_parent, ino.IN_MOVED_FROM | isdir, old_name, cookie)
        names = self.where[number]
        names[names.index(old)] = (parent, name)
        self.inodes[parent].entries[name] = number
        self._emit(parent, ino.IN_MOVED_TO | isdir, name, cookie)
        if victim is not None:
            self._unname(victim, (parent, name))
        return True

    def rename(self, old: bytes, new: bytes) -> None:
        place, src = self._parent_of(new), self._parent_of(old)
        if self.exists(old) and place is not None and src is not None:
            self._rename(src, *place)

    def _parent_of(self, rel: bytes) -> tuple[int, bytes] | None:
        up, _, name = rel.rpartition(b"/")
        try:
            parent = self.resolve(up) if up else ROOT_INO
        except OSError:
            return None
        return (parent, name) if self.inodes[parent].kind == "d" else None

    def move_out(self, rel: bytes) -> None:
        src = self._parent_of(rel)
        if self.exists(rel) and src is not None:
            self._rename(src, OUTSIDE_INO, b"out%d" % next(self._out))

    def move_in(self, rel: bytes, seed: int) -> None:
        """Move in something that went out before, or a file or a small tree built outside."""
        place = self._parent_of(rel)
        if place is None:
            return
        away = self.inodes[OUTSIDE_INO].entries
        if away and seed % 3 == 0:
            old = (OUTSIDE_INO, sorted(away)[seed % len(away)])
        else:
            name = b"built%d" % next(self._out)
            if seed % 2:
                number = self._new("f", OUTSIDE_INO, name, version=seed)
            else:
                number = self._new("d", OUTSIDE_INO, name)
                self._new("f", number, b"f", version=seed)
                self._new("f", number, b"t.tmp", version=seed)
                sub = self._new("d", number, b"a")
                self._new("l", sub, b"f", version=seed)
            old = (OUTSIDE_INO, name)
        self._rename(old, *place)

    def atomic_save(self, rel: bytes, version: int) -> None:
        """An editor's save: write an excluded temp file, then rename it over ``rel``."""
        place = self._parent_of(rel)
        if place is None:
            return
        tmp = (rel.rpartition(b"/")[0] + b"/" if b"/" in rel else b"") + b".save.tmp"
        if self.exists(tmp):
            return
        self.create(tmp)
        self.write(tmp)
        self.inodes[self.resolve(tmp)].version = version
        self.close(tmp)
        self.rename(tmp, rel)

    # -- what a replica should hold -----------------------------------------------------------

    def snapshot(self, excluded: tuple[bytes, ...] = (b".tmp",)) -> dict[bytes, tuple[str, int]]:
        """Path -> (kind, version) below the root, without excluded names or below them."""
        out: dict[bytes, tuple[str, int]] = {}
        stack = [(ROOT_INO, b"")]
        while stack:
            number, base = stack.pop()
            for name, child in self.inodes[number].entries.items():
                if name.endswith(excluded):
                    continue
                path = base + b"/" + name if base else name
                node = self.inodes[child]
                out[path] = (DIR if node.kind == "d" else FILE, node.version)
                if node.kind == "d":
                    stack.append((child, path))
        return out
