"""The fanotify backend's lazy, bounded map of directories, without the kernel: a handle
is resolved to a path by a fake ``locate``, its missing parents are added from the root
down, handles outside the tree are remembered until a directory is renamed, and the
cache forgets only leaves that nothing pending names."""

from __future__ import annotations

import errno
import os

from trigsync import fanotify as fan
from trigsync import inotify as ino
from trigsync.excludes import Excludes
from trigsync.fanevents import EventConverter, HandleMap
from trigsync.fanlazy import LazyDirs
from trigsync.fanotify import Record
from trigsync.watchtree import WatchTree

ROOT = b"/src"


class FakeFs:
    """Directories by absolute path, each with a handle; ``add_watch`` is what
    FanotifyFs does (the path's handle into the map)."""

    def __init__(self, handles: HandleMap, dirs: dict[bytes, bytes]) -> None:
        self.handles = handles
        self.dirs = dirs  # path -> handle
        self.removed: list[int] = []

    def add_watch(self, path: bytes, mask: int) -> int:
        handle = self.dirs.get(path)
        if handle is None:
            raise FileNotFoundError(errno.ENOENT, "gone", os.fsdecode(path))
        return self.handles.add(handle)

    def rm_watch(self, wd: int) -> None:
        self.removed.append(wd)
        self.handles.discard(wd)

    def lstat(self, path: bytes) -> os.stat_result:
        raise FileNotFoundError(errno.ENOENT, "no files here")

    def listdir(self, path: bytes) -> list[tuple[bytes, bool, int]]:
        return []


class World:
    def __init__(self, *paths: bytes, excludes: Excludes | None = None, cap: int = 100) -> None:
        self.handles = HandleMap()
        self.tree = WatchTree()
        self.fs = FakeFs(self.handles, {})
        self.located: list[bytes] = []
        for p in (ROOT, *paths):
            self.mkdir(p)
        self.tree.set_root(self.fs.add_watch(ROOT, 0))
        self.dirs = LazyDirs(
            ROOT,
            self.handles,
            self.tree,
            self.fs,
            self.locate,
            excludes=excludes or Excludes(),
            mask=ino.TREE_EVENTS,
            cap=cap,
        )

    def mkdir(self, path: bytes) -> bytes:
        self.fs.dirs[path] = h = b"h:" + path
        return h

    def locate(self, handle: bytes) -> bytes | None:
        self.located.append(handle)
        for path, h in self.fs.dirs.items():
            if h == handle:
                return path
        return None  # ESTALE: deleted

    def path(self, wd: int | None) -> bytes | None:
        node = None if wd is None else self.tree.get(wd)
        return None if node is None else self.tree.path(node)


def test_a_handle_is_placed_with_its_missing_parents_once() -> None:
    w = World(b"/src/a", b"/src/a/b", b"/src/a/b/c")
    assert len(w.tree) == 1
    wd = w.dirs.wd(b"h:/src/a/b/c")
    assert wd is not None and w.path(wd) == b"a/b/c"
    assert len(w.tree) == 4  # root, a, a/b, a/b/c: every known directory has its parents
    parent = w.tree.get(wd).parent  # type: ignore[union-attr]
    assert parent is not None and w.dirs.wd(b"h:/src/a/b") == parent.wd
    assert len(w.located) == 1  # only a/b/c: its parents were placed by name
    assert w.dirs.wd(b"h:/src/a/b/c") == wd
    assert len(w.located) == 1


def test_handles_outside_the_tree_are_remembered_and_skipped() -> None:
    w = World(b"/elsewhere", b"/srcfoo")
    for h in (b"h:/elsewhere", b"h:/srcfoo", b"h:/deleted"):
        assert w.dirs.wd(h) is None
        assert h not in w.dirs  # parse_events drops its next events unparsed
    assert w.dirs.wd(b"h:/elsewhere") is None
    assert len(w.located) == 3
    assert len(w.tree) == 1


def test_excluded_directories_and_what_is_below_them_are_outside() -> None:
    w = World(b"/src/skip", b"/src/skip/inner", b"/src/keep", excludes=Excludes(["skip/"]))
    assert w.dirs.wd(b"h:/src/skip/inner") is None
    assert w.dirs.wd(b"h:/src/skip") is None
    assert w.path(w.dirs.wd(b"h:/src/keep")) == b"keep"
    assert len(w.tree) == 2


def test_a_name_that_holds_another_directory_by_now_is_not_placed() -> None:
    w = World(b"/src/a")
    w.fs.dirs[b"/src/a"] = b"h:another"  # a/ replaced between the readlink and its handle
    w.fs.dirs[b"/moved-away"] = b"h:/src/a"
    assert w.dirs.wd(b"h:/src/a") is None


def test_a_directory_renamed_anywhere_forgets_what_was_outside() -> None:
    w = World(b"/elsewhere", b"/elsewhere/sub")
    conv = EventConverter(ROOT, w.handles, w.tree, w.fs.lstat, w.dirs.wd)
    assert list(conv.convert([Record(fan.FAN_CREATE, b"h:/elsewhere/sub", b"f")])) == []
    assert b"h:/elsewhere/sub" in w.handles.outside
    # elsewhere/ is moved into the source: its subdirectory is the tree's now.
    del w.fs.dirs[b"/elsewhere"], w.fs.dirs[b"/elsewhere/sub"]
    w.mkdir(b"/src/in")
    w.fs.dirs[b"/src/in/sub"] = b"h:/elsewhere/sub"
    rename = Record(fan.FAN_RENAME | fan.FAN_ONDIR, b"h:/", b"elsewhere", b"h:/src", b"in")
    w.fs.dirs[b"/"] = b"h:/"
    got = list(conv.convert([rename, Record(fan.FAN_CREATE, b"h:/elsewhere/sub", b"g")]))
    root = w.tree.root
    assert root is not None
    assert got[0] == (root.wd, ino.IN_MOVED_TO | ino.IN_ISDIR, 1, b"in")
    wd, mask, _, name = got[1]
    assert (w.path(wd), mask, name) == (b"in/sub", ino.IN_CREATE, b"g")


def test_a_directory_renamed_outside_the_tree_keeps_what_was_outside() -> None:
    w = World(b"/elsewhere", b"/elsewhere/sub", b"/other")
    conv = EventConverter(ROOT, w.handles, w.tree, w.fs.lstat, w.dirs.wd)
    assert list(conv.convert([Record(fan.FAN_CREATE, b"h:/other", b"f")])) == []
    rename = Record(fan.FAN_RENAME | fan.FAN_ONDIR, b"h:/elsewhere", b"sub", b"h:/other", b"s")
    assert list(conv.convert([rename])) == []
    # A neighbour renaming directories costs no resolution again of what was outside.
    assert b"h:/other" in w.handles.outside
    assert len(w.located) == 2


def test_trim_forgets_the_oldest_untouched_leaves_but_not_what_is_in_use() -> None:
    w = World(*(b"/src/d%d" % i for i in range(6)), cap=4)
    wds = [w.dirs.wd(b"h:/src/d%d" % i) or 0 for i in range(6)]
    assert len(w.tree) == 7
    # Everything was touched since the last trim: nothing goes yet.
    assert w.dirs.trim(set) == 0
    assert w.dirs.wd(b"h:/src/d5") == wds[5]  # touched again
    pinned = {wds[0]}  # say, a file held open in d0
    assert w.dirs.trim(lambda: set(pinned)) == 4  # down to 3/4 of the cap: 7 - 3
    kept = {w.path(wd) for wd in w.tree.wds()}
    assert kept == {b"", b"d0", b"d5"}
    assert w.fs.removed == wds[1:5]
    # A forgotten directory is found again on its next event, under its current name.
    w.fs.dirs[b"/src/renamed"] = w.fs.dirs.pop(b"/src/d2")
    assert w.path(w.dirs.wd(b"h:/src/d2")) == b"renamed"


def test_trim_forgets_only_leaves_so_parents_stay_known() -> None:
    w = World(b"/src/a", b"/src/a/b", b"/src/a/b/c", cap=1)
    w.dirs.wd(b"h:/src/a/b/c")
    w.dirs.trim(set)  # all touched
    assert w.dirs.trim(set) == 1
    assert [w.path(wd) for wd in w.tree.wds()] == [b"", b"a", b"a/b"]
    assert w.dirs.trim(set) == 1
    assert w.dirs.trim(set) == 1
    assert len(w.tree) == 1  # the root always stays
    assert w.dirs.trim(set) == 0


def test_a_moving_directory_is_not_forgotten() -> None:
    w = World(b"/src/a", cap=0)
    node = w.tree.get(w.dirs.wd(b"h:/src/a"))  # type: ignore[arg-type]
    assert node is not None
    node.moving = True  # its MOVED_FROM waits for a partner
    w.dirs.trim(set)
    assert w.dirs.trim(set) == 0
    assert len(w.tree) == 2
