"""The ctypes binding: event parsing on handmade buffers, and one real instance."""

from __future__ import annotations

import os
import select
import struct
from pathlib import Path

import pytest

from trigsync import inotify as ino


def event(wd: int, mask: int, cookie: int, name: bytes) -> bytes:
    """Like the kernel: the name NUL-terminated and padded to a multiple of 16 bytes."""
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded


def test_parse_events_handmade_buffer() -> None:
    buf = b"".join(
        [
            event(1, ino.IN_CREATE, 0, b"plain"),
            event(2, ino.IN_MOVED_FROM | ino.IN_ISDIR, 77, b"caf\xe9"),
            event(2, ino.IN_DELETE_SELF, 0, b""),
            event(-1, ino.IN_Q_OVERFLOW, 0, b""),
            event(3, ino.IN_CLOSE_WRITE, 0, b"sixteen-chars-ab"),
            event(4, ino.IN_CREATE, 0, b"new\nline and space"),
        ]
    )
    assert ino.parse_events(buf) == [
        (1, ino.IN_CREATE, 0, b"plain"),
        (2, ino.IN_MOVED_FROM | ino.IN_ISDIR, 77, b"caf\xe9"),
        (2, ino.IN_DELETE_SELF, 0, b""),
        (-1, ino.IN_Q_OVERFLOW, 0, b""),
        (3, ino.IN_CLOSE_WRITE, 0, b"sixteen-chars-ab"),
        (4, ino.IN_CREATE, 0, b"new\nline and space"),
    ]


def test_parse_events_ignores_truncated_tail() -> None:
    whole = event(5, ino.IN_ATTRIB, 0, b"x")
    assert ino.parse_events(whole + whole[:20]) == [(5, ino.IN_ATTRIB, 0, b"x")]
    assert ino.parse_events(b"") == []


def test_real_instance_sees_create(tmp_path: Path) -> None:
    fd = ino.init()
    try:
        mask = ino.IN_CREATE | ino.IN_ONLYDIR | ino.IN_DONT_FOLLOW
        wd = ino.add_watch(fd, bytes(tmp_path), mask)
        assert ino.add_watch(fd, bytes(tmp_path), mask) == wd  # same inode, same wd
        with pytest.raises(BlockingIOError):
            os.read(fd, 4096)  # non-blocking by default
        (tmp_path / "caf\udce9").write_bytes(b"")  # surrogateescape gives the raw byte
        assert select.select([fd], [], [], 2.0)[0] == [fd]
        events = ino.parse_events(os.read(fd, 65536))
        assert (wd, ino.IN_CREATE, 0, b"caf\xe9") in events
        ino.rm_watch(fd, wd)
        assert select.select([fd], [], [], 2.0)[0] == [fd]
        assert (wd, ino.IN_IGNORED, 0, b"") in ino.parse_events(os.read(fd, 65536))
    finally:
        os.close(fd)


def test_add_watch_errors_are_oserrors(tmp_path: Path) -> None:
    fd = ino.init()
    try:
        with pytest.raises(FileNotFoundError):
            ino.add_watch(fd, bytes(tmp_path / "missing"), ino.IN_CREATE)
        (tmp_path / "file").write_bytes(b"x")
        with pytest.raises(NotADirectoryError):
            ino.add_watch(fd, bytes(tmp_path / "file"), ino.IN_CREATE | ino.IN_ONLYDIR)
    finally:
        os.close(fd)
