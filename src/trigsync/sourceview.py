"""The source as rsync reads it: a mount of it where the kernel follows no symlink.

``ancestry.py`` checks each list before rsync gets it, which leaves a race of a few
milliseconds: a directory swapped for a symlink between the check and rsync's open is
still followed. Here the kernel closes it. The source's mount tree is cloned into a
detached mount (``open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)``: mounts below the source
come along) and marked ``MOUNT_ATTR_NOSYMFOLLOW``: a path resolved in it fails with
ELOOP at any symlink, while ``readlink`` still works, so rsync still copies symlinks as
symlinks. rsync gets it as ``/proc/self/fd/N/`` (the fd inherited at the same number).

A detached mount is in no mount table, not the host's nor ours (so ``rootwatch`` keeps
watching the real source, and a crash leaves nothing behind), needs no mount namespace
(whose ``unshare`` would fail in a threaded process, and would stop mounts made later
below the source from reaching us where ``/`` is not shared), and is gone when the last
rsync holding its fd exits. It is cloned again when the source path names another
directory (a deploy swapped its symlink) or the mount table changed (a filesystem
mounted below the source): the next run sees it. The fd number stays the same
(``dup2``), so a waiting standby's argv stays valid.

It needs CAP_SYS_ADMIN and Linux 5.14+; otherwise rsync reads the source path itself,
and one WARNING says the protection is weaker and why.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import select
import threading

from .rootwatch import identity

log = logging.getLogger(__name__)

# x86_64 and aarch64 (and every architecture since 5.x) share these numbers.
SYS_OPEN_TREE = 428
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOUNT_ATTR_NOSYMFOLLOW = 0x00200000
AT_FDCWD = -100
MOUNTINFO = b"/proc/self/mountinfo"
# Why a view cannot be made at all: no CAP_SYS_ADMIN, an old kernel, a seccomp filter.
UNSUPPORTED = frozenset({errno.EPERM, errno.ENOSYS, errno.EINVAL, errno.EACCES})


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()
_held: set[int] = set()  # every view's fd: each rsync inherits them (rsync.spawn)
_warned: set[bytes] = set()


def held() -> tuple[int, ...]:
    """The fds every rsync must inherit for its ``/proc/self/fd/N/`` source to resolve."""
    with _lock:
        return tuple(_held)


def _syscall_fd(number: int, *args: object) -> int:
    result = int(_libc.syscall(number, *args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def clone_nosymfollow(source: bytes) -> int:
    """A new fd of a detached, recursive clone of ``source``'s mounts, no symlink followed."""
    fd = _syscall_fd(
        SYS_OPEN_TREE,
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(source),
        ctypes.c_uint(OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC),
    )
    attr = _MountAttr(MOUNT_ATTR_NOSYMFOLLOW, 0, 0, 0)
    try:
        _syscall_fd(
            SYS_MOUNT_SETATTR,
            ctypes.c_int(fd),
            ctypes.c_char_p(b""),
            ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        )
    except BaseException:
        os.close(fd)
        raise
    return fd


class SourceView:
    """The path rsync reads ``source`` by: the nosymfollow view, or the source itself."""

    def __init__(self, source: bytes) -> None:
        self.source = source
        self._fd = -1
        self._off = platform.system() != "Linux"
        self._identity: tuple[int, int] | None = None
        self._mounts: select.poll | None = None
        self._mountinfo = -1

    def path(self) -> bytes:
        """The view of the source as it is now; the source itself if there is none.

        It is cloned again only when the source path names another directory (a deploy
        swapped its symlink) or a mount changed: dropping a detached mount costs the
        kernel an RCU grace period, which a clone per run paid in latency.
        """
        if self._off:
            return self.source
        now = identity(self.source)
        if self._fd >= 0 and now == self._identity and not self._mounts_changed():
            return self._as_path()
        try:
            fresh = clone_nosymfollow(self.source)
        except OSError as exc:
            if self._fd < 0:
                if exc.errno in UNSUPPORTED:
                    self._give_up(exc)
                return self.source  # else gone for now: the watcher tells what became of it
            # Gone for now (a deploy between two symlinks): the last clone still stands,
            # and the watcher tells what became of the source.
            log.debug("cannot clone %s again: %s", os.fsdecode(self.source), exc.strerror)
            return self._as_path()
        self._identity = now
        with _lock:
            if self._fd < 0:
                self._fd = os.dup(fresh)  # a number of its own, kept for this view's life
                os.set_inheritable(self._fd, False)  # passed to rsync only (pass_fds)
                _held.add(self._fd)
                self._watch_mounts()
            else:
                os.dup2(fresh, self._fd, inheritable=False)
        os.close(fresh)
        return self._as_path()

    def _watch_mounts(self) -> None:
        try:
            self._mountinfo = os.open(MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no /proc: a clone per run then
        self._mounts = select.poll()
        self._mounts.register(self._mountinfo, select.POLLPRI)
        self._mounts.poll(0)  # clears the event a fresh open reports

    def _mounts_changed(self) -> bool:
        """Whether this namespace's mounts changed since the last call (POLLPRI clears)."""
        return self._mounts is None or bool(self._mounts.poll(0))

    def unview(self, text: bytes) -> bytes:
        """rsync's output with the view's path shown as the source's (logs name the source)."""
        if self._fd < 0:
            return text
        return text.replace(self._as_path(), self.source)

    def _as_path(self) -> bytes:
        return b"/proc/self/fd/%d" % self._fd

    def _give_up(self, exc: OSError) -> None:
        self._off = True
        if self.source in _warned:
            return
        _warned.add(self.source)
        log.warning(
            "source %s: rsync reads it without the kernel's no-symlink view (%s); a "
            "directory swapped for a symlink is kept out by a check before each run "
            "only, which leaves a race of milliseconds: run trigsync as root on Linux "
            "5.14 or later",
            os.fsdecode(self.source),
            exc.strerror,
        )

    def close(self) -> None:
        if self._mountinfo >= 0:
            os.close(self._mountinfo)
            self._mountinfo, self._mounts = -1, None
        with _lock:
            if self._fd >= 0:
                _held.discard(self._fd)
                os.close(self._fd)
                self._fd = -1
