"""The fanotify event source of the watcher, and the choice between it and inotify.

One FAN_MARK_FILESYSTEM mark per filesystem under the source reports every change there,
with no watch per directory, so no ``max_user_watches`` limit applies. The tree's
directories are still listed at start (their handles are how events are matched to the
tree, and the translator needs the tree either way), but nothing is asked of the kernel
per directory beyond one name_to_handle_at. A filesystem mark reports nothing when a
filesystem is mounted or unmounted below the source: ``rootwatch.py`` (the mount table's
POLLPRI, for both backends) makes the translator walk the tree again, which marks a new
filesystem as its first directory is listed.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable

from . import fanotify as fan
from . import inotify as ino
from .errors import WatchError
from .fanevents import Event, EventConverter, HandleMap
from .fsops import InotifyFs
from .rootwatch import MOUNTINFO, below, parse_mountinfo
from .watchtree import WatchTree

log = logging.getLogger(__name__)

BACKENDS = ("auto", "fanotify", "inotify")
# What name_to_handle_at or a filesystem mark says of a filesystem fanotify cannot watch.
_UNMARKABLE = (errno.EOPNOTSUPP, errno.ENODEV, errno.EXDEV)


class FanotifyFs(InotifyFs):
    """``Fs`` on the real filesystem where a "watch" is a directory's handle in the map;
    the first directory seen on each mount gets its filesystem marked."""

    def __init__(self, fd: int, handles: HandleMap) -> None:
        super().__init__(fd)
        self.handles = handles
        self._fsid: dict[int, bytes] = {}  # mount id -> fsid, each of them marked
        self._marked: set[bytes] = set()

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
            if exc.errno not in _UNMARKABLE:
                raise
            # A filesystem below the source that fanotify cannot watch: left unwatched
            # (as the scanner does with a directory it cannot watch), every change on it
            # would be lost after one warning.
            raise WatchError(
                f"{os.fsdecode(path)} is on a filesystem that fanotify cannot watch "
                f'({exc.strerror}); set watch_backend = "inotify" (or "auto", which '
                "looks at the filesystems mounted below the source when it starts)"
            ) from exc
        return self.handles.add(fsid + handle)

    def _mark(self, path: bytes) -> bytes:
        fsid = fan.fsid_of(path)
        if fsid not in self._marked:
            # Bind mounts of one filesystem share its fsid and its one mark.
            fan.mark_filesystem(self.fd, path)
            self._marked.add(fsid)
        return fsid

    def rm_watch(self, wd: int) -> None:
        self.handles.discard(wd)

    def forget_mounts(self) -> None:
        """A filesystem was mounted or unmounted below the source: the kernel reuses a
        freed mount id at once, and a filesystem mounted again has a new superblock
        without our mark (ext4's fsid stays the same), so both caches are stale."""
        self._fsid.clear()
        self._marked.clear()  # marking a marked filesystem again changes nothing


class FanotifySource:
    """The fanotify fd of one watcher, and how its reads become inotify events."""

    name = "fanotify"

    def __init__(self, root: bytes) -> None:
        self.fd = fan.init()
        self.handles = HandleMap()
        self.fs = FanotifyFs(self.fd, self.handles)
        self._root = root
        self._converter: EventConverter | None = None

    def bind(self, tree: WatchTree) -> None:
        self._converter = EventConverter(self._root, self.handles, tree, os.lstat)

    def remounted(self) -> None:
        self.fs.forget_mounts()

    def events(self, data: bytes) -> Iterable[Event]:
        assert self._converter is not None
        return self._converter.convert(fan.parse_events(data, self.handles.known))


class InotifySource:
    """The inotify fd of one watcher."""

    name = "inotify"

    def __init__(self, root: bytes) -> None:
        self.fd = ino.init()
        self.fs = InotifyFs(self.fd)

    def bind(self, tree: WatchTree) -> None:
        pass

    def remounted(self) -> None:
        pass

    def events(self, data: bytes) -> Iterable[Event]:
        return ino.parse_events(data)


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
