"""A thin ctypes binding to Linux fanotify (reporting directory handles and names), and a
fast parser for what its fd returns.

A directory is known by its handle: the filesystem's fsid followed by the bytes of its
``struct file_handle``, exactly as an event's info record carries them, so an event is
matched to a directory by slicing its buffer and one dict lookup, with no system call.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Container, Iterator
from typing import NamedTuple

FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_NOTIF = 0x00000000
FAN_REPORT_FID = 0x00000200
FAN_REPORT_DIR_FID = 0x00000400
FAN_REPORT_NAME = 0x00000800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME

FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_FILESYSTEM = 0x00000100

FAN_MODIFY = 0x00000002
FAN_ATTRIB = 0x00000004
FAN_CLOSE_WRITE = 0x00000008
FAN_MOVED_FROM = 0x00000040
FAN_MOVED_TO = 0x00000080
FAN_CREATE = 0x00000100
FAN_DELETE = 0x00000200
FAN_DELETE_SELF = 0x00000400
FAN_MOVE_SELF = 0x00000800
FAN_Q_OVERFLOW = 0x00004000
FAN_RENAME = 0x10000000
FAN_ONDIR = 0x40000000

INFO_DFID_NAME = 2
INFO_DFID = 3
INFO_OLD_DFID_NAME = 10
INFO_NEW_DFID_NAME = 12

# Everything a replicator needs, for files and directories. A rename comes as one
# FAN_RENAME event with both ends (there are no move cookies to pair halves with).
TREE_EVENTS = (
    FAN_CREATE
    | FAN_DELETE
    | FAN_RENAME
    | FAN_MODIFY
    | FAN_CLOSE_WRITE
    | FAN_ATTRIB
    | FAN_DELETE_SELF
    | FAN_MOVE_SELF
    | FAN_ONDIR
)

METADATA = struct.Struct("IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
INFO_HEADER = struct.Struct("BBH")  # info_type, pad, len
HANDLE_HEADER = struct.Struct("Ii")  # handle_bytes, handle_type
MAX_HANDLE_SZ = 128
AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400

_libc = ctypes.CDLL(None, use_errno=True)
_init = _libc.fanotify_init
_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_init.restype = ctypes.c_int
_mark = _libc.fanotify_mark
_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_mark.restype = ctypes.c_int
_name_to_handle_at = _libc.name_to_handle_at
_name_to_handle_at.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_int,
]
_name_to_handle_at.restype = ctypes.c_int
_open_by_handle_at = _libc.open_by_handle_at
_open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_open_by_handle_at.restype = ctypes.c_int


class Record(NamedTuple):
    """One event: its mask, the directory handle and entry name (for a rename, of the old
    end), and for a rename the new end's handle and name."""

    mask: int
    handle: bytes
    name: bytes
    new_handle: bytes = b""
    new_name: bytes = b""


def _error(err: int, path: bytes | None = None) -> OSError:
    if path is None:
        return OSError(err, os.strerror(err))
    return OSError(err, os.strerror(err), os.fsdecode(path))


def init() -> int:
    """A non-blocking fanotify group reporting directory handles and names; its fd.

    Raises OSError: EPERM without CAP_SYS_ADMIN, EINVAL on a kernel older than 5.17.
    """
    flags = FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME
    fd = int(_init(flags, os.O_RDONLY | os.O_CLOEXEC))
    if fd < 0:
        raise _error(ctypes.get_errno())
    return fd


def mark_filesystem(fd: int, path: bytes, mask: int = TREE_EVENTS) -> None:
    """Report ``mask`` for every object on the filesystem that holds ``path``."""
    if _mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, path) < 0:
        raise _error(ctypes.get_errno(), path)


def handle_of(path: bytes, *, follow: bool = False) -> tuple[bytes, int]:
    """``path``'s handle without its fsid (as an event carries it) and its mount id."""
    buf = ctypes.create_string_buffer(HANDLE_HEADER.size + MAX_HANDLE_SZ)
    HANDLE_HEADER.pack_into(buf, 0, MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    flags = AT_SYMLINK_FOLLOW if follow else 0
    if _name_to_handle_at(AT_FDCWD, path, buf, ctypes.byref(mount_id), flags) < 0:
        raise _error(ctypes.get_errno(), path)
    size = HANDLE_HEADER.unpack_from(buf, 0)[0]
    return buf.raw[: HANDLE_HEADER.size + size], mount_id.value


def path_of_handle(mount_fd: int, key: bytes) -> bytes:
    """Where the directory known by ``key`` (fsid + handle, as events carry it) is now,
    as seen through ``mount_fd``'s mount: OSError ESTALE if it was deleted.

    Needs CAP_DAC_READ_SEARCH. Three system calls (open_by_handle_at with O_PATH, readlink
    of /proc/self/fd, close), so callers keep what it finds.
    """
    fd = int(_open_by_handle_at(mount_fd, key[8:], os.O_PATH | os.O_CLOEXEC))
    if fd < 0:
        raise _error(ctypes.get_errno())
    try:
        return os.readlink(b"/proc/self/fd/%d" % fd)
    finally:
        os.close(fd)


def fsid_of(path: bytes) -> bytes:
    """The fsid that events on ``path``'s filesystem carry (glibc packs it as val[0] |
    val[1] << 32)."""
    return struct.pack("<Q", os.statvfs(path).f_fsid)


_INIT_REFUSED = {
    errno.EPERM: "fanotify needs CAP_SYS_ADMIN (run as root, with that capability)",
    errno.EINVAL: "the kernel's fanotify cannot report names (needs Linux 5.17+)",
    errno.ENOSYS: "the kernel has no fanotify",
}
_MARK_REFUSED = {
    # Since Linux 5.13 anyone may create a group, but a filesystem mark needs the cap.
    # Root in a container (or a unit with a CapabilityBoundingSet) has dropped it too.
    errno.EPERM: "fanotify needs CAP_SYS_ADMIN to watch a whole filesystem "
    "(run as root, with that capability)",
    errno.ENODEV: "its filesystem cannot be watched whole by fanotify (no fsid)",
    errno.EOPNOTSUPP: "its filesystem cannot be watched whole by fanotify (no file handles)",
    errno.EXDEV: "its filesystem cannot be watched whole by fanotify (a subvolume)",
    errno.EINVAL: "the kernel's fanotify cannot report renames (needs Linux 5.17+)",
}


def probe(path: bytes) -> str | None:
    """None if this process can watch ``path``'s filesystem with fanotify, else why not."""
    try:
        fd = init()
    except OSError as exc:
        return _INIT_REFUSED.get(exc.errno or 0, f"fanotify_init failed: {exc.strerror}")
    try:
        # FAN_RENAME is the newest bit we need: an older kernel rejects the mask.
        mark_filesystem(fd, path, TREE_EVENTS)
        handle, _ = handle_of(path, follow=True)
    except OSError as exc:
        return _MARK_REFUSED.get(exc.errno or 0, f"fanotify_mark failed: {exc.strerror}")
    finally:
        os.close(fd)
    try:
        # Directories are found from the handles events carry (open_by_handle_at), which
        # needs a capability of its own: without it, every change below the top would
        # be taken for one elsewhere on the filesystem.
        mount_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            path_of_handle(mount_fd, fsid_of(path) + handle)
        finally:
            os.close(mount_fd)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return (
                "fanotify needs CAP_DAC_READ_SEARCH to find directories by handle "
                "(run as root, with that capability)"
            )
        return f"open_by_handle_at failed: {exc.strerror}"
    return None


def parse_events(buf: bytes, keep: Container[bytes] | None = None) -> Iterator[Record]:
    """Split a read() of a fanotify fd into records; a truncated trailing event is ignored.

    Handles are returned with their fsid in front (the info record's bytes after its
    header, up to the name), so they compare equal to ``fsid_of + handle_of``. With
    ``keep``, an event whose directories are all outside it is skipped as early as can
    be: on a busy filesystem most events are someone else's. Lazy, so that ``keep`` may
    grow while the records are consumed (a directory just created is watched).
    """
    unpack_meta = METADATA.unpack_from
    unpack_handle = HANDLE_HEADER.unpack_from
    meta_size = METADATA.size
    end = len(buf)
    pos = 0
    while pos + meta_size <= end:
        event_len, _vers, _res, meta_len, mask, _fd, _pid = unpack_meta(buf, pos)
        if event_len < meta_size or pos + event_len > end:
            break
        stop = pos + event_len
        p = pos + meta_len
        if keep is not None and not mask & (FAN_RENAME | FAN_Q_OVERFLOW) and p + 20 <= stop:
            # One info record: fsid (8 bytes), handle_bytes, handle_type, f_handle, name.
            hend = p + 20 + unpack_handle(buf, p + 12)[0]
            if buf[p + 4 : hend] not in keep:
                pos = stop
                continue
        record = _record(buf, mask, p, stop)
        pos = stop
        mine = keep is None or record.handle in keep or record.new_handle in keep
        if mine or mask & FAN_Q_OVERFLOW:
            yield record


def _record(buf: bytes, mask: int, p: int, stop: int) -> Record:
    handle = name = new_handle = new_name = b""
    while p + 4 <= stop:
        info_type, _pad, info_len = INFO_HEADER.unpack_from(buf, p)
        if info_len < 4:
            break
        hend = p + 20 + HANDLE_HEADER.unpack_from(buf, p + 12)[0]
        key = buf[p + 4 : hend]
        if info_type in (INFO_DFID_NAME, INFO_OLD_DFID_NAME, INFO_NEW_DFID_NAME):
            nul = buf.find(b"\0", hend, p + info_len)
            entry = buf[hend : nul if nul >= 0 else p + info_len]
        else:
            entry = b"."
        if info_type == INFO_NEW_DFID_NAME:
            new_handle, new_name = key, entry
        elif info_type in (INFO_DFID_NAME, INFO_OLD_DFID_NAME, INFO_DFID):
            handle, name = key, entry
        p += info_len
    return Record(mask, handle, name, new_handle, new_name)
