"""The fanotify event source of the watcher, and the choice between it and inotify.

One FAN_MARK_FILESYSTEM mark per filesystem under the source reports every change there,
with no watch per directory, so no ``max_user_watches`` limit applies. Nothing is listed
at start: a directory's handle is resolved when its first event comes (``fanlazy.py``),
through each mount of its filesystem at or below the source until one shows it there (a
bind mount from beside the source shows what the source's own mount puts outside it).
A filesystem mark reports nothing when a filesystem is mounted or unmounted below the
source: ``rootwatch.py`` (the mount table's POLLPRI, for both backends) makes the
translator start over from the root, which marks the filesystems mounted there now."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable

from . import fanotify as fan
from . import inotify as ino
from .errors import WatchError
from .excludes import Excludes
from .fanevents import Event, EventConverter, HandleMap
from .fanlazy import LazyDirs
from .fsops import InotifyFs
from .rootwatch import MOUNTINFO, below, parse_mountinfo
from .translate import Translator

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

log = logging.getLogger(__name__)

BACKENDS = ("auto", "fanotify", "inotify")
# What name_to_handle_at or a filesystem mark says of a filesystem fanotify cannot watch.
_UNMARKABLE = (errno.EOPNOTSUPP, errno.ENODEV, errno.EXDEV)


def _unwatchable(path: bytes, exc: OSError) -> OSError | WatchError:
    """A filesystem below the source that fanotify cannot watch: left unwatched, every
    change on it would be lost after one warning; so it is an error naming the fix."""
    if exc.errno not in _UNMARKABLE:
        return exc
    return WatchError(
        f"{os.fsdecode(path)} is on a filesystem that fanotify cannot watch "
        f'({exc.strerror}); set watch_backend = "inotify" (or "auto", which '
        "looks at the filesystems mounted below the source when it starts)"
    )


class FanotifyFs(InotifyFs):
    """``Fs`` on the real filesystem where a "watch" is a directory's handle in the map;
    the first directory seen on each mount gets its filesystem marked."""

    def __init__(self, fd: int, handles: HandleMap, root: bytes) -> None:
        super().__init__(fd)
        self.handles = handles
        self.root = root
        self.real_root = os.path.realpath(root)
        self._prefix = self.real_root.rstrip(b"/") + b"/"
        self._fsid: dict[int, bytes] = {}  # mount id -> fsid, each of them marked
        # fsid -> the mount points of mounts of it to resolve its handles through: the
        # one it was first marked through, then those at or below the source (a bind
        # mount there shows a directory that lies outside the source on the first);
        # and those opened since the last release(). None is held open longer than one
        # wake-up: an open directory keeps its filesystem from being unmounted.
        self._mounts: dict[bytes, list[bytes]] = {}
        self._open: dict[bytes, int] = {}

    def add_watch(self, path: bytes, mask: int) -> int:
        follow = not mask & ino.IN_DONT_FOLLOW
        # As IN_ONLYDIR does: a name that holds a symlink or a file by now (the event
        # said directory) must not get its handle in the map as a directory's.
        if not stat.S_ISDIR((os.stat if follow else os.lstat)(path).st_mode):
            raise NotADirectoryError(20, "Not a directory", os.fsdecode(path))
        try:
            handle, mount_id = fan.handle_of(path, follow=follow)
            fsid = self._fsid.get(mount_id)
            if fsid is None:
                fsid = self._fsid[mount_id] = self._mark(path)
        except OSError as exc:
            raise _unwatchable(path, exc) from exc
        if path == self.root:
            # The start, or a start over (lost events, a mount): nothing is listed, so
            # the filesystems mounted below are marked now, and what was found to lie
            # outside the tree may not any more.
            self._mark_mounts()
            self.handles.outside.clear()
        return self.handles.add(fsid + handle)

    def _mark_mounts(self) -> None:
        with open(MOUNTINFO, "rb") as f:
            mounts = below(parse_mountinfo(f.read()), self.real_root)
        for _, point in sorted(mounts, key=lambda m: len(m[1])):
            try:
                _, mount_id = fan.handle_of(point, follow=True)
                if mount_id not in self._fsid:
                    self._fsid[mount_id] = self._mark(point)
            except OSError as exc:
                if exc.errno in _UNMARKABLE:
                    raise _unwatchable(point, exc) from exc
                log.debug("cannot mark %r: %s", point, exc.strerror)

    def _mark(self, path: bytes) -> bytes:
        """Mark ``path``'s filesystem if it is not yet, and resolve its handles through
        the mount that holds ``path`` too (a mount of it met first may show only part of
        it: a bind mount); returns its fsid."""
        fsid = fan.fsid_of(path)
        points = self._mounts.get(fsid)
        if points is None:
            # Bind mounts of one filesystem share its fsid and its one mark.
            fan.mark_filesystem(self.fd, path)
            points = self._mounts[fsid] = []
        # The mount's root, not ``path``: an open directory is deleted only once
        # closed, and its FAN_DELETE_SELF would wait until then.
        if (point := _mount_point(path)) not in points:
            points.append(point)
        return fsid

    def locate(self, key: bytes) -> bytes | None:
        """Where the directory of handle ``key`` is now, below the source if a mount
        shows it there; None if deleted or unknown."""
        first = None
        for point in self._mounts.get(key[:8], ()):
            try:
                mount_fd = self._open.get(point)
                if mount_fd is None:
                    mount_fd = self._open[point] = os.open(point, _DIR)
                where = fan.path_of_handle(mount_fd, key)
            except OSError as exc:
                if exc.errno == errno.ESTALE:
                    return first  # deleted: so it is through every mount
                continue  # this mount is gone since: a check of the mounts follows
            # Through a bind mount, a directory outside what it shows reads as "/".
            if where == self.real_root or where.startswith(self._prefix):
                return where
            first = where if first is None else first
        return first

    def release(self) -> None:
        """Close the mounts opened to resolve handles with (at the end of a wake-up)."""
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def rm_watch(self, wd: int) -> None:
        self.handles.discard(wd)

    def forget_mounts(self) -> None:
        """A filesystem was mounted or unmounted below the source: the kernel reuses a
        freed mount id at once, and a filesystem mounted again has a new superblock
        without our mark (ext4's fsid stays the same), so both caches are stale."""
        self._fsid.clear()
        self._mounts.clear()  # marking a marked filesystem again changes nothing


def _mount_point(path: bytes) -> bytes:
    """The mount point of the mount that holds ``path``."""
    real = os.path.realpath(path)
    with open(MOUNTINFO, "rb") as f:
        points = [p for _, p in parse_mountinfo(f.read())]
    inside = [p for p in points if real == p or real.startswith(p.rstrip(b"/") + b"/")]
    return max(inside, key=len, default=real)


class FanotifySource:
    """The fanotify fd of one watcher, and how its reads become inotify events."""

    name = "fanotify"

    lazy = True

    def __init__(self, root: bytes) -> None:
        self.fd = fan.init()
        self.handles = HandleMap()
        self.fs = FanotifyFs(self.fd, self.handles, root)
        self._root = root
        self._converter: EventConverter | None = None
        self.dirs: LazyDirs | None = None
        self._translator: Translator | None = None

    def bind(self, translator: Translator, excludes: Excludes) -> None:
        self._translator = translator
        self.dirs = dirs = LazyDirs(
            self.fs.real_root,
            self.handles,
            translator.tree,
            self.fs,
            self.fs.locate,
            excludes=excludes,
            mask=ino.TREE_EVENTS,
        )
        self._converter = EventConverter(
            self._root, self.handles, translator.tree, os.lstat, dirs.wd
        )

    def remounted(self) -> None:
        self.fs.forget_mounts()

    def events(self, data: bytes) -> Iterable[Event]:
        assert self._converter is not None and self.dirs is not None
        return self._converter.convert(fan.parse_events(data, self.dirs))

    def trim(self) -> None:
        self.fs.release()
        if self.dirs is not None and self._translator is not None:
            self.dirs.trim(self._translator.dirs_in_use)

    def close(self) -> None:
        self.fs.release()


class InotifySource:
    """The inotify fd of one watcher."""

    name = "inotify"
    lazy = False

    def __init__(self, root: bytes) -> None:
        self.fd = ino.init()
        self.fs = InotifyFs(self.fd)

    def bind(self, translator: Translator, excludes: Excludes) -> None:
        pass

    def remounted(self) -> None:
        pass

    def events(self, data: bytes) -> Iterable[Event]:
        return ino.parse_events(data)

    def trim(self) -> None:
        pass

    def close(self) -> None:
        pass


Source = FanotifySource | InotifySource


def choose(setting: str, root: bytes) -> tuple[str, str]:
    """The backend to use for ``watch_backend = setting``, and why, for the log."""
    if setting == "inotify":
        return "inotify", "watch_backend = inotify"
    why_not = fan.probe(root) or _probe_mounts_below(root)
    if setting == "fanotify":
        if why_not is not None:
            raise WatchError(
                f'watch_backend = "fanotify" cannot be used for {os.fsdecode(root)}: '
                f'{why_not}; set watch_backend = "auto" or "inotify"'
            )
        return "fanotify", "watch_backend = fanotify"
    if why_not is not None:
        return "inotify", f"auto: {why_not}"
    return "fanotify", "auto: fanotify is allowed here, one mark watches the whole filesystem"


def _probe_mounts_below(root: bytes) -> str | None:
    """Why fanotify cannot watch a filesystem mounted below ``root``, if one is."""
    try:
        with open(MOUNTINFO, "rb") as f:
            mounts = below(parse_mountinfo(f.read()), os.path.realpath(root))
    except OSError:
        return None  # rootwatch says what this costs
    for _, point in sorted(mounts, key=lambda m: m[1]):
        why_not = fan.probe(point)
        if why_not is not None:
            return f"{os.fsdecode(point)} (mounted below the source): {why_not}"
    return None
