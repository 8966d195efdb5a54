"""What the source path names: a symlink swapped on its way, a filesystem mounted in it.

inotify sees neither. A mount raises no event at all, and an unmount raises one only on
the filesystem that leaves (none for a bind mount, late for a lazy one), so the watches
below a new mount point stay on the directory it hides. A deploy's
``ln -sfn releases/2 current.tmp; mv -T current.tmp current`` changes only the directory
that holds ``current``, which nothing watches. So, beside the tree's own watches:

- /proc/self/mountinfo, which signals POLLPRI on every change of the mount table (proc(5)),
  in an epoll set whose fd the event loop can wait on; and
- a second inotify instance on each directory that holds a symlink of the source path.

Either one waking up only asks for ``check()``: the source path is stat()ed again, and
the mounts at or below it are compared. Neither costs anything while nothing changes.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import select
from collections.abc import Iterable

from . import inotify as ino
from .errors import WatchError

log = logging.getLogger(__name__)

MOUNTINFO = b"/proc/self/mountinfo"
# A change of the names in a directory holding a symlink of the path, or of that directory.
ANCHOR_EVENTS = (
    ino.IN_CREATE
    | ino.IN_MOVED_TO
    | ino.IN_MOVED_FROM
    | ino.IN_DELETE
    | ino.IN_DELETE_SELF
    | ino.IN_MOVE_SELF
    | ino.IN_ONLYDIR
)
_OCTAL = re.compile(rb"\\([0-7]{3})")

Mount = tuple[bytes, bytes]  # mount id, mount point


class Verdict(enum.Enum):
    SAME = 0  # nothing that concerns the source
    MOUNTS = 1  # a filesystem was mounted or unmounted below it
    ROOT = 2  # the source path names another directory now


def parse_mountinfo(data: bytes) -> list[Mount]:
    """(mount id, mount point) for each line of /proc/PID/mountinfo."""
    mounts = []
    for line in data.splitlines():
        fields = line.split(b" ", 5)
        if len(fields) >= 5:
            # The kernel writes space, tab, newline and backslash as \ooo.
            point = _OCTAL.sub(lambda m: bytes([int(m[1], 8)]), fields[4])
            mounts.append((fields[0], point))
    return mounts


def below(mounts: Iterable[Mount], real_root: bytes) -> frozenset[Mount]:
    """The mounts whose mount point is ``real_root`` (a resolved path) or lies below it."""
    if real_root == b"/":
        return frozenset(mounts)
    prefix = real_root + b"/"
    return frozenset(m for m in mounts if m[1] == real_root or m[1].startswith(prefix))


def symlink_dirs(root: bytes) -> list[bytes]:
    """The directories that hold a symlink among the components of ``root``."""
    dirs = []
    path = b""
    for part in os.path.abspath(root).strip(b"/").split(b"/"):
        parent, path = path or b"/", path + b"/" + part
        if part and os.path.islink(path):
            dirs.append(parent)
    return dirs


class RootWatch:
    """Tells when ``root`` names another directory, or the mounts below it changed."""

    def __init__(self, root: bytes) -> None:
        self.root = root
        self._identity = identity(root)
        self._real = os.path.realpath(root)
        self._mounts = frozenset[Mount]()
        self._unresolved = False
        self._epoll: select.epoll | None = None
        self._mountinfo = -1
        self._anchors = -1
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        # Opened before the tree is watched: a change during the scan still wakes us.
        try:
            self._mountinfo = os.open(MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
            self._mounts = below(_read_mounts(), self._real)
        except OSError as exc:
            log.warning(
                "cannot read %s (%s): a filesystem mounted inside %s while trigsync runs "
                "is not noticed; mount /proc",
                os.fsdecode(MOUNTINFO),
                exc.strerror,
                os.fsdecode(self.root),
            )
        else:
            self._epoll = select.epoll()
            # Only POLLPRI: the file is always readable, and the check clears the event.
            self._epoll.register(self._mountinfo, select.EPOLLPRI)
        dirs = symlink_dirs(self.root)
        if dirs:
            self._anchors = ino.init()
            for path in dirs:
                try:
                    ino.add_watch(self._anchors, path, ANCHOR_EVENTS)
                except OSError as exc:
                    log.warning(
                        "cannot watch %s (%s): if the symlink in it is replaced, trigsync "
                        "goes on watching what %s named before",
                        os.fsdecode(path),
                        exc.strerror,
                        os.fsdecode(self.root),
                    )

    def fds(self) -> list[int]:
        """The fds to wait on for reading; when one is readable, call ``check``."""
        fds = [] if self._epoll is None else [self._epoll.fileno()]
        return fds + ([self._anchors] if self._anchors >= 0 else [])

    def check(self) -> Verdict:
        """Clear what woke us, then say whether the source needs watching again.

        Raises WatchError if the source path shows another directory though no symlink
        on its way changed: that is no deploy to follow."""
        if self._epoll is not None:
            self._epoll.poll(0)  # takes the ready event off the set
        while self._anchors >= 0:
            try:
                if not os.read(self._anchors, 64 * 1024):
                    break
            except BlockingIOError:
                break
        now = identity(self.root)
        if now is None:
            if not self._unresolved:
                log.warning(
                    "source %s names no directory now; still watching %s until it does",
                    os.fsdecode(self.root),
                    os.fsdecode(self._real),
                )
            self._unresolved = True
            return Verdict.SAME
        self._unresolved = False
        if now != self._identity:
            if os.path.realpath(self.root) == self._real:
                # No symlink on the way changed: the directory at that very place did (a
                # filesystem unmounted from it, or mounted over it). Following it would
                # make every target equal to, say, the empty mount point below.
                raise WatchError(
                    f"source {os.fsdecode(self.root)} shows another directory now (a "
                    "filesystem was mounted or unmounted at it, or it was replaced); "
                    "trigsync stops rather than make every target equal to it: check the "
                    "source and restart trigsync"
                )
            log.warning(
                "source %s now names %s (was %s): watching it instead; every target gets "
                "one reconciling sync",
                os.fsdecode(self.root),
                os.fsdecode(os.path.realpath(self.root)),
                os.fsdecode(self._real),
            )
            return Verdict.ROOT
        if self._epoll is None:
            return Verdict.SAME
        try:
            mounts = below(_read_mounts(), self._real)
        except OSError as exc:
            log.warning("cannot read %s: %s", os.fsdecode(MOUNTINFO), exc.strerror)
            return Verdict.SAME
        if mounts == self._mounts:
            return Verdict.SAME
        changed = sorted(os.fsdecode(point) for _, point in mounts ^ self._mounts)
        self._mounts = mounts
        log.warning(
            "a filesystem was mounted or unmounted at %s: watching the tree again; every "
            "target gets one reconciling sync",
            ", ".join(changed),
        )
        return Verdict.MOUNTS

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        for fd in (self._mountinfo, self._anchors):
            if fd >= 0:
                os.close(fd)
        self._mountinfo = self._anchors = -1


def identity(path: bytes) -> tuple[int, int] | None:
    """The (device, inode) that ``path`` names now, following symlinks; None if none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _read_mounts() -> list[Mount]:
    with open(MOUNTINFO, "rb") as f:
        return parse_mountinfo(f.read())
