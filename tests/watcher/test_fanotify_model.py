"""The translator behind the fanotify converter, driven by the same hostile sequences as
``test_translate_model``, through a fake kernel that queues what fanotify would.

fanotify differs from inotify in what matters here: every directory of the filesystem
reports (no watches), a directory is known by its handle, a name's unread events are
merged into one record (their order lost), a rename is one record with both ends and no
cookie, and a directory's own attribute change and deletion come as records on its own
handle with the name ".". Whatever happens, once the writers are quiet the target must
equal the source.
"""

from __future__ import annotations

import errno
import os

from hypothesis import example, given, settings

from tests.watcher.fakekernel import ROOT, FakeKernel, _err
from tests.watcher.test_translate_model import Model, Script, i, scripts
from trigsync import fanotify as fan
from trigsync import inotify as ino
from trigsync.changes import PendingSet
from trigsync.excludes import Excludes
from trigsync.fanevents import EventConverter, HandleMap
from trigsync.fanotify import Record
from trigsync.translate import Translator

_BITS = (
    (ino.IN_CREATE, fan.FAN_CREATE),
    (ino.IN_DELETE, fan.FAN_DELETE),
    (ino.IN_MODIFY, fan.FAN_MODIFY),
    (ino.IN_CLOSE_WRITE, fan.FAN_CLOSE_WRITE),
    (ino.IN_ATTRIB, fan.FAN_ATTRIB),
    (ino.IN_ISDIR, fan.FAN_ONDIR),
)


def handle(number: int) -> bytes:
    return b"inode%d" % number


class FakeFanotify(FakeKernel):
    """The fake tree, with one fanotify queue over the whole filesystem."""

    def __init__(self) -> None:
        super().__init__()
        self.handles = HandleMap()
        self.records: list[Record] = []
        self._renaming: dict[int, tuple[bytes, bytes]] = {}  # cookie -> old end

    # -- Fs: a "watch" is a handle in the map, and costs the kernel nothing ----------------

    def add_watch(self, path: bytes, mask: int) -> int:
        number = self._lookup(path)
        if self.inodes[number].kind != "d":
            raise _err(errno.ENOTDIR, path)
        return self.handles.add(handle(number))

    def rm_watch(self, wd: int) -> None:
        self.handles.discard(wd)

    # -- what the kernel queues --------------------------------------------------------------

    def _queue(self, record: Record) -> None:
        if not record.mask & fan.FAN_RENAME:
            for n, old in enumerate(self.records):
                same = (old.handle, old.name) == (record.handle, record.name)
                ondir_alike = (old.mask ^ record.mask) & fan.FAN_ONDIR == 0
                if same and ondir_alike and not old.mask & fan.FAN_RENAME:
                    self.records[n] = old._replace(mask=old.mask | record.mask)
                    return
        self.records.append(record)

    def _emit(self, parent: int, mask: int, name: bytes, cookie: int = 0) -> None:
        ondir = fan.FAN_ONDIR if mask & ino.IN_ISDIR else 0
        if mask & ino.IN_MOVED_FROM:
            self._renaming[cookie] = (handle(parent), name)
        elif mask & ino.IN_MOVED_TO:
            old, old_name = self._renaming.pop(cookie)
            self._queue(Record(fan.FAN_RENAME | ondir, old, old_name, handle(parent), name))
        elif mask & ino.IN_ATTRIB and ondir:
            pass  # reported on the directory itself (chmod below)
        else:
            bits = sum(f for i_, f in _BITS if mask & i_)
            self._queue(Record(bits, handle(parent), name))

    def chmod(self, rel: bytes) -> None:
        super().chmod(rel)
        if self.exists(rel) and self.inodes[self.resolve(rel)].kind == "d":
            number = self.resolve(rel)
            self._queue(Record(fan.FAN_ATTRIB | fan.FAN_ONDIR, handle(number), b"."))

    def _gone(self, number: int) -> None:
        super()._gone(number)
        if self.inodes[number].kind == "d":
            self._queue(Record(fan.FAN_DELETE_SELF | fan.FAN_ONDIR, handle(number), b"."))


class FanModel(Model):
    """``Model`` with the fanotify fake kernel and the converter before the translator."""

    def __init__(self) -> None:
        self.kernel = k = FakeFanotify()
        self.translator = Translator(
            ROOT, k, excludes=Excludes(["*.tmp"]), clock=k.clock, wall=k.wall, kernel="fanotify"
        )
        self.converter = EventConverter(ROOT, k.handles, self.translator.tree, k.lstat)
        self.translator.start()
        self.pending = PendingSet()
        self.target = {}
        self.flight = None

    def read(self, count: int | None = None) -> None:
        records = self.kernel.records  # type: ignore[attr-defined]
        n = len(records) if count is None else count % (len(records) + 1)
        taken, records[:n] = records[:n], []
        self.translator.feed(self.converter.convert(taken))
        batch = self.translator.take()
        assert all(c.path and not c.path.startswith(b"/") for c in batch.changes)
        assert not any(c.path.endswith(b".tmp") for c in batch.changes), batch
        self.pending.extend(batch, in_flight=self.flight is not None)


def run(script: Script) -> FanModel:
    model = FanModel()
    for op in script:
        model.step(*op)
    model.settle()
    return model


@settings(max_examples=1000, deadline=None, derandomize=bool(os.environ.get("CI")))
@given(scripts)
# create f; rename f -> g; create f again: the second create merges into the first
# record, ahead of the rename, and f must not be lost.
@example(
    [
        ("create", i(b"f"), 0, 0),
        ("close", i(b"f"), 0, 0),
        ("rename", i(b"f"), i(b"g"), 0),
        ("create", i(b"f"), 0, 0),
        ("close", i(b"f"), 0, 0),
    ]
)
# f on the target; deleted and created again before a read (one merged record): had the
# create been replayed first, f would go out NEW, and NEW then deleted would be nothing.
@example(
    [
        ("create", i(b"f"), 0, 0),
        ("close", i(b"f"), 0, 0),
        ("begin", 0, 0, 0),
        ("finish", 0, 0, 0),
        ("delete", i(b"f"), 0, 0),
        ("create", i(b"f"), 0, 0),
        ("close", i(b"f"), 0, 0),
        ("read", 0, 0, 63),
        ("delete", i(b"f"), 0, 0),
    ]
)
@example([("move_in", i(b"b"), 0, 0), ("move_out", i(b"b"), 0, 0), ("move_in", i(b"b"), 0, 0)])
@example([("create", i(b"f"), 0, 0), ("write", i(b"f"), 0, 0), ("tick", 0, 0, 1)])
def test_target_converges_to_source_through_fanotify(script: Script) -> None:
    model = run(script)
    assert model.target == model.kernel.snapshot()
