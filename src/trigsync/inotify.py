"""A thin ctypes binding to Linux inotify, and a fast parser for what its fd returns.

Paths and names are bytes throughout: the kernel hands us bytes, and decoding them would
lose non-UTF-8 names. Watch-limit errors are translated here, at the boundary.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from .errors import WatchLimitError

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_MASK_CREATE = 0x10000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000
IN_ONESHOT = 0x80000000

IN_CLOSE = IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
IN_MOVE = IN_MOVED_FROM | IN_MOVED_TO

# inotify_init1 takes the O_* values of the running architecture.
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# What a replicator watches on every directory: content, metadata, names, and the
# directory itself; never through symlinks, never for unlinked files still open.
TREE_EVENTS = (
    IN_CREATE
    | IN_CLOSE_WRITE
    | IN_MODIFY
    | IN_ATTRIB
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
    | IN_ONLYDIR
)

EVENT_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len

_libc = ctypes.CDLL(None, use_errno=True)
_inotify_init1 = _libc.inotify_init1
_inotify_init1.argtypes = [ctypes.c_int]
_inotify_init1.restype = ctypes.c_int
_inotify_add_watch = _libc.inotify_add_watch
_inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_inotify_add_watch.restype = ctypes.c_int
_inotify_rm_watch = _libc.inotify_rm_watch
_inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_inotify_rm_watch.restype = ctypes.c_int


class NoWatchSpaceError(OSError):
    """inotify_add_watch failed with ENOSPC: the user's max_user_watches is used up."""


def limit(name: str) -> int | None:
    """The current value of /proc/sys/fs/inotify/``name``, or None if it cannot be read."""
    try:
        with open(f"/proc/sys/fs/inotify/{name}", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


WATCH_LIMIT_ADVICE = (
    "inotify watch limit reached: fs.inotify.max_user_watches is %s but %s needs about %d "
    "watches; raise it with: sysctl -w fs.inotify.max_user_watches=%d (persist it in "
    "/etc/sysctl.d/)"
)


def watch_limit_advice(root: bytes, needed: int) -> tuple[str, tuple[object, ...]]:
    """A %-format and its arguments, for an exception message or a log call."""
    current = limit("max_user_watches")
    # The limit is per user, so other programs' watches count against it too.
    suggested = max(2 * needed, (current or 0) + needed)
    return WATCH_LIMIT_ADVICE, (current, os.fsdecode(root), needed, suggested)


def _error(err: int, path: bytes | None = None) -> OSError:
    if path is None:
        return OSError(err, os.strerror(err))
    return OSError(err, os.strerror(err), os.fsdecode(path))


def init(flags: int = IN_NONBLOCK | IN_CLOEXEC) -> int:
    """Create an inotify instance and return its fd."""
    fd = int(_inotify_init1(flags))
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.EMFILE:
        current = limit("max_user_instances")
        raise WatchLimitError(
            f"inotify instance limit reached: fs.inotify.max_user_instances is {current}; "
            f"raise it with: sysctl -w fs.inotify.max_user_instances={2 * (current or 128)} "
            "(persist it in /etc/sysctl.d/), or this process ran out of file descriptors "
            "(check ulimit -n)"
        ) from _error(err)
    raise _error(err)


def add_watch(fd: int, path: bytes, mask: int) -> int:
    """Add or update a watch and return its wd; the same inode always gives the same wd."""
    wd = int(_inotify_add_watch(fd, path, mask))
    if wd >= 0:
        return wd
    err = ctypes.get_errno()
    if err == errno.ENOSPC:
        raise NoWatchSpaceError(err, os.strerror(err), os.fsdecode(path))
    raise _error(err, path)


def rm_watch(fd: int, wd: int) -> None:
    """Remove a watch; the kernel then queues IN_IGNORED for it."""
    if _inotify_rm_watch(fd, wd) < 0:
        raise _error(ctypes.get_errno())


def parse_events(buf: bytes) -> list[tuple[int, int, int, bytes]]:
    """Split a read() of an inotify fd into (wd, mask, cookie, name) tuples.

    The kernel pads names with NULs to an alignment boundary; a name never contains NUL,
    so stripping them is exact. A truncated trailing event is ignored.
    """
    unpack = EVENT_HEADER.unpack_from
    size = EVENT_HEADER.size
    end = len(buf)
    pos = 0
    events: list[tuple[int, int, int, bytes]] = []
    append = events.append
    while pos + size <= end:
        wd, mask, cookie, length = unpack(buf, pos)
        pos += size
        if pos + length > end:
            break
        if length:
            append((wd, mask, cookie, buf[pos : pos + length].rstrip(b"\0")))
            pos += length
        else:
            append((wd, mask, cookie, b""))
    return events
