"""The hostile sequences of ``test_fanotify_model`` again, with the tree found lazily
(nothing listed at start, each directory resolved from its handle when an event names
it) and a cache of one directory (the root), so that directories are forgotten and found
again all the time: once the writers are quiet the target must still equal the source.
"""

from __future__ import annotations

import os

from hypothesis import given, settings

from tests.watcher.fakekernel import OUTSIDE_INO, ROOT, ROOT_INO
from tests.watcher.test_fanotify_model import FakeFanotify, FanModel
from tests.watcher.test_translate_model import Script, scripts
from trigsync import inotify as ino
from trigsync.changes import PendingSet
from trigsync.excludes import Excludes
from trigsync.fanevents import EventConverter
from trigsync.fanlazy import LazyDirs
from trigsync.translate import Translator


class LazyFanotify(FakeFanotify):
    def locate(self, handle: bytes) -> bytes | None:
        """Where the directory of ``handle`` is now, as open_by_handle_at + readlink
        would say; None once it is deleted (ESTALE)."""
        number = int(handle[len(b"inode") :])
        parts: list[bytes] = []
        while number in self.where:
            number, name = self.where[number][0]
            parts.append(name)
        top = {ROOT_INO: ROOT, OUTSIDE_INO: b"/outside"}.get(number)
        if top is None:
            return None
        return b"/".join([top, *reversed(parts)])


class LazyFanModel(FanModel):
    def __init__(self) -> None:
        self.kernel = k = LazyFanotify()
        excludes = Excludes(["*.tmp"])
        self.translator = t = Translator(
            ROOT, k, excludes=excludes, clock=k.clock, wall=k.wall, kernel="fanotify", lazy=True
        )
        t.start()
        assert len(t.tree) == 1
        self.dirs = LazyDirs(
            ROOT, k.handles, t.tree, k, k.locate, excludes=excludes, mask=ino.TREE_EVENTS, cap=1
        )
        self.converter = EventConverter(ROOT, k.handles, t.tree, k.lstat, self.dirs.wd)
        self.pending = PendingSet()
        self.target = {}
        self.flight = None

    def read(self, count: int | None = None) -> None:
        super().read(count)
        self.dirs.trim(self.translator.dirs_in_use)


@settings(max_examples=400, deadline=None, derandomize=bool(os.environ.get("CI")))
@given(scripts)
def test_target_converges_to_source_through_lazy_fanotify(script: Script) -> None:
    model = LazyFanModel()
    for op in script:
        model.step(*op)
    model.settle()
    assert model.target == model.kernel.snapshot()
