"""fanotify without the kernel: parsing its records, the handle map, and turning merged,
cookie-less records into the inotify events the translator reads."""

from __future__ import annotations

import errno
import os
import stat
import struct

import pytest

from trigsync import fanotify as fan
from trigsync import inotify as ino
from trigsync.fanevents import EventConverter, HandleMap
from trigsync.fanotify import Record
from trigsync.watchtree import WatchTree

FSID = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def handle(n: int) -> bytes:
    """A directory handle as an event carries it: fsid, handle_bytes, type, f_handle."""
    return FSID + struct.pack("Ii", 8, 1) + struct.pack("<Q", n)


def info(kind: int, dir_handle: bytes, name: bytes | None) -> bytes:
    body = dir_handle + (b"" if name is None else name + b"\0")
    body += b"\0" * (-(len(body) + 4) % 4)
    return fan.INFO_HEADER.pack(kind, 0, len(body) + 4) + body


def event(mask: int, *infos: bytes) -> bytes:
    body = b"".join(infos)
    size = fan.METADATA.size + len(body)
    return fan.METADATA.pack(size, 3, 0, fan.METADATA.size, mask, -1, 1234) + body


# -- parsing ------------------------------------------------------------------------------


def test_parse_name_rename_self_and_overflow_records() -> None:
    buf = b"".join(
        [
            event(fan.FAN_CREATE, info(fan.INFO_DFID_NAME, handle(1), b"a\xffb")),
            event(
                fan.FAN_RENAME | fan.FAN_ONDIR,
                info(fan.INFO_OLD_DFID_NAME, handle(1), b"old"),
                info(fan.INFO_NEW_DFID_NAME, handle(2), b"new"),
            ),
            event(fan.FAN_ATTRIB | fan.FAN_ONDIR, info(fan.INFO_DFID_NAME, handle(2), b".")),
            event(fan.FAN_Q_OVERFLOW),
        ]
    )
    assert list(fan.parse_events(buf)) == [
        Record(fan.FAN_CREATE, handle(1), b"a\xffb"),
        Record(fan.FAN_RENAME | fan.FAN_ONDIR, handle(1), b"old", handle(2), b"new"),
        Record(fan.FAN_ATTRIB | fan.FAN_ONDIR, handle(2), b"."),
        Record(fan.FAN_Q_OVERFLOW, b"", b""),
    ]


def test_parse_ignores_a_truncated_trailing_event() -> None:
    one = event(fan.FAN_DELETE, info(fan.INFO_DFID_NAME, handle(3), b"gone"))
    assert list(fan.parse_events(one + one[:30])) == [Record(fan.FAN_DELETE, handle(3), b"gone")]


def test_parse_handle_equals_what_name_to_handle_at_gives(tmp_path: os.PathLike[str]) -> None:
    path = os.fsencode(tmp_path)
    try:
        raw, _mount = fan.handle_of(path)
    except OSError as exc:  # pragma: no cover - a filesystem without handles
        pytest.skip(f"no file handles here: {exc.strerror}")
    key = fan.fsid_of(path) + raw
    record = next(fan.parse_events(event(fan.FAN_CREATE, info(fan.INFO_DFID_NAME, key, b"x"))))
    assert record.handle == key


def test_parse_keeps_only_the_tree_and_sees_it_grow() -> None:
    mine, other, later = handle(1), handle(99), handle(7)
    keep = {mine}
    buf = b"".join(
        [
            event(fan.FAN_MODIFY, info(fan.INFO_DFID_NAME, other, b"noise")),
            event(
                fan.FAN_RENAME,
                info(fan.INFO_OLD_DFID_NAME, other, b"in"),
                info(fan.INFO_NEW_DFID_NAME, mine, b"in"),
            ),
            event(fan.FAN_CREATE | fan.FAN_ONDIR, info(fan.INFO_DFID_NAME, mine, b"new")),
            event(fan.FAN_CREATE, info(fan.INFO_DFID_NAME, later, b"inside-new")),
            event(fan.FAN_Q_OVERFLOW),
        ]
    )
    got = []
    for record in fan.parse_events(buf, keep):
        got.append(record.name)
        if record.name == b"new":
            keep.add(later)  # watched while the read is consumed
    assert got == [b"in", b"new", b"inside-new", b""]


# -- the handle map -------------------------------------------------------------------------


def test_handle_map_is_stable_and_forgets() -> None:
    handles = HandleMap()
    a = handles.add(handle(1))
    assert handles.add(handle(1)) == a  # the same directory (a bind mount): the same number
    b = handles.add(handle(2))
    assert b != a and len(handles) == 2
    handles.discard(a)
    assert handles.get(handle(1)) is None and len(handles) == 1
    assert handles.add(handle(1)) not in (a, b)  # numbers are never reused
    handles.discard(12345)  # unknown: nothing happens


# -- conversion -------------------------------------------------------------------------------


class Tree:
    """A converter over root (handle 1) with directory ``d`` (handle 2), and a fake lstat."""

    def __init__(self, existing: dict[bytes, int] | None = None) -> None:
        self.handles = HandleMap()
        self.tree = WatchTree()
        self.root = self.tree.set_root(self.handles.add(handle(1)))
        self.d = self.tree.attach(self.handles.add(handle(2)), self.root, b"d")
        self.existing = existing or {}
        self.lstats: list[bytes] = []
        self.conv = EventConverter(b"/src", self.handles, self.tree, self.lstat)

    def lstat(self, path: bytes) -> os.stat_result:
        self.lstats.append(path)
        mode = self.existing.get(path)
        if mode is None:
            raise FileNotFoundError(errno.ENOENT, "gone", path)
        return os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0))

    def run(self, *records: Record) -> list[tuple[int, int, int, bytes]]:
        return list(self.conv.convert(records))


R, W = 1, 2  # the watch numbers of root and d
FILE, DIR = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755


def test_events_outside_the_tree_are_dropped_without_a_system_call() -> None:
    t = Tree()
    neighbour = [Record(fan.FAN_MODIFY | fan.FAN_CLOSE_WRITE, handle(99), b"log")] * 1000
    assert t.run(*neighbour) == []
    assert t.lstats == []


def test_merged_create_write_close_is_replayed_close_last() -> None:
    t = Tree()
    mask = fan.FAN_CLOSE_WRITE | fan.FAN_CREATE | fan.FAN_MODIFY | fan.FAN_ATTRIB
    assert t.run(Record(mask, handle(2), b"f")) == [
        (W, ino.IN_CREATE, 0, b"f"),
        (W, ino.IN_MODIFY, 0, b"f"),
        (W, ino.IN_ATTRIB, 0, b"f"),
        (W, ino.IN_CLOSE_WRITE, 0, b"f"),
    ]


def test_merged_create_and_delete_ends_in_the_state_the_name_is_in_now() -> None:
    mask = fan.FAN_CREATE | fan.FAN_DELETE | fan.FAN_CLOSE_WRITE
    gone = Tree()
    assert gone.run(Record(mask, handle(2), b"f")) == [
        (W, ino.IN_CREATE, 0, b"f"),
        (W, ino.IN_CLOSE_WRITE, 0, b"f"),
        (W, ino.IN_DELETE, 0, b"f"),
    ]
    back = Tree({b"/src/d/f": FILE})  # deleted, then created again: a target may have it
    assert back.run(Record(mask, handle(2), b"f")) == [
        (W, ino.IN_DELETE, 0, b"f"),
        (W, ino.IN_CREATE, 0, b"f"),
        (W, ino.IN_CLOSE_WRITE, 0, b"f"),
    ]


def test_rename_is_paired_under_a_cookie_of_its_own() -> None:
    t = Tree()
    out = t.run(
        Record(fan.FAN_RENAME, handle(1), b"a", handle(2), b"b"),
        Record(fan.FAN_RENAME | fan.FAN_ONDIR, handle(2), b"x", handle(1), b"y"),
    )
    (f1, t1), (f2, t2) = out[:2], out[2:]
    assert f1[:2] == (R, ino.IN_MOVED_FROM) and t1[:2] == (W, ino.IN_MOVED_TO)
    assert f1[2] == t1[2] != f2[2] == t2[2]
    assert f2[1] == ino.IN_MOVED_FROM | ino.IN_ISDIR and t2[1] == ino.IN_MOVED_TO | ino.IN_ISDIR
    assert (f1[3], t1[3], f2[3], t2[3]) == (b"a", b"b", b"x", b"y")


def test_rename_across_the_tree_boundary_is_one_half() -> None:
    t = Tree()
    out_of_tree = t.run(Record(fan.FAN_RENAME, handle(2), b"a", handle(99), b"a"))
    into_tree = t.run(Record(fan.FAN_RENAME, handle(99), b"z", handle(1), b"z"))
    assert [e[:2] for e in out_of_tree] == [(W, ino.IN_MOVED_FROM)]
    assert [e[:2] for e in into_tree] == [(R, ino.IN_MOVED_TO)]


def test_a_name_removed_then_recreated_in_an_earlier_merged_event_is_created() -> None:
    # create a; rename a -> b; create a again: the second create merges into the first
    # record, ahead of the rename, so replaying in order would lose a.
    t = Tree({b"/src/a": FILE, b"/src/b": FILE})
    out = t.run(
        Record(fan.FAN_CREATE | fan.FAN_CLOSE_WRITE, handle(1), b"a"),
        Record(fan.FAN_RENAME, handle(1), b"a", handle(1), b"b"),
    )
    assert out[-1] == (R, ino.IN_CREATE, 0, b"a")
    plain = Tree({b"/src/b": FILE})  # a plain rename: a is gone, nothing more
    out = plain.run(Record(fan.FAN_RENAME, handle(1), b"a", handle(1), b"b"))
    assert [e[1] for e in out] == [ino.IN_MOVED_FROM, ino.IN_MOVED_TO]


def test_a_recreated_directory_is_created_as_one() -> None:
    t = Tree({b"/src/x": DIR})
    out = t.run(Record(fan.FAN_DELETE | fan.FAN_ONDIR, handle(1), b"x"))
    assert out == [
        (R, ino.IN_DELETE | ino.IN_ISDIR, 0, b"x"),
        (R, ino.IN_CREATE | ino.IN_ISDIR, 0, b"x"),
    ]


def test_directory_self_events() -> None:
    t = Tree()
    dir_attrib = Record(fan.FAN_ATTRIB | fan.FAN_ONDIR, handle(2), b".")
    root_attrib = Record(fan.FAN_ATTRIB | fan.FAN_ONDIR, handle(1), b".")
    assert t.run(dir_attrib, root_attrib) == [
        (R, ino.IN_ATTRIB | ino.IN_ISDIR, 0, b"d"),  # to its parent, under its name
        (R, ino.IN_ATTRIB, 0, b""),
    ]
    gone = Record(fan.FAN_DELETE_SELF | fan.FAN_MOVE_SELF | fan.FAN_ONDIR, handle(2), b".")
    assert t.run(gone) == [(W, ino.IN_DELETE_SELF, 0, b"")]
    assert t.handles.get(handle(2)) is None  # a deleted directory's handle leaves the map
    moved = Record(fan.FAN_MOVE_SELF | fan.FAN_ONDIR, handle(1), b".")
    assert t.run(moved) == [(R, ino.IN_MOVE_SELF, 0, b"")]


def test_overflow_becomes_inotify_overflow() -> None:
    assert Tree().run(Record(fan.FAN_Q_OVERFLOW, b"", b"")) == [(-1, ino.IN_Q_OVERFLOW, 0, b"")]


def test_conversion_is_lazy_so_a_directory_watched_meanwhile_is_known() -> None:
    t = Tree()
    records = [
        Record(fan.FAN_CREATE | fan.FAN_ONDIR, handle(1), b"new"),
        Record(fan.FAN_CREATE, handle(7), b"inside"),
    ]
    out = []
    for ev in t.conv.convert(records):
        out.append(ev)
        if ev[3] == b"new":  # what the translator does on the mkdir: watch it
            t.tree.attach(t.handles.add(handle(7)), t.root, b"new")
    assert out[-1] == (t.handles.get(handle(7)), ino.IN_CREATE, 0, b"inside")


# -- mounts below the source ------------------------------------------------------------------


def test_mount_points_below_the_source_only() -> None:
    # The mount-table watch is rootwatch.py's, shared by both backends.
    from trigsync.rootwatch import below, parse_mountinfo

    info = parse_mountinfo(
        b"22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        b"40 22 0:5 / /srv/www rw - ext4 /dev/vdb rw\n"
        b"41 40 0:6 / /srv/www/up\\040loads rw - tmpfs none rw\n"
        b"42 22 0:7 / /srv/wwwx rw - tmpfs none rw\n"
        b"43 22 0:8 / /srv rw - tmpfs none rw\n"
    )

    def points(root: bytes) -> set[bytes]:
        return {point for _, point in below(info, root)}

    assert points(b"/srv/www") == {b"/srv/www", b"/srv/www/up loads"}
    assert points(b"/") == {b"/", b"/srv/www", b"/srv/www/up loads", b"/srv/wwwx", b"/srv"}
