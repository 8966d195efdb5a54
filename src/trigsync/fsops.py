"""What turning events into changes asks of the system: lstat, watches, directory listings.

The translator (``translate.py``) reaches the filesystem and inotify only through ``Fs``,
so a model test can drive it with an in-memory tree; ``InotifyFs`` is the real one.
"""

from __future__ import annotations

import os
from typing import Protocol

from . import inotify as ino


class Fs(Protocol):
    """The system calls the translator makes; each raises OSError as the real one would."""

    def lstat(self, path: bytes) -> os.stat_result: ...

    def add_watch(self, path: bytes, mask: int) -> int:
        """Watch a directory; raises ``inotify.NoWatchSpaceError`` when watches run out."""
        ...

    def rm_watch(self, wd: int) -> None: ...

    def listdir(self, path: bytes) -> list[tuple[bytes, bool, int]]:
        """(name, is a directory (not following symlinks), inode number) for each entry;
        both come with the listing itself (d_type, d_ino), at no extra system call."""
        ...


class InotifyFs:
    """``Fs`` on the real filesystem and one inotify instance."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def lstat(self, path: bytes) -> os.stat_result:
        return os.lstat(path)

    def add_watch(self, path: bytes, mask: int) -> int:
        return ino.add_watch(self.fd, path, mask)

    def rm_watch(self, wd: int) -> None:
        ino.rm_watch(self.fd, wd)

    def listdir(self, path: bytes) -> list[tuple[bytes, bool, int]]:
        # A directory swapped for a symlink since its event is not listed through it (its
        # target's entries would go out as the tree's): ELOOP, as if it had vanished.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        out = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        # scandir(fd) names entries in str: back to the bytes they are.
                        name = os.fsencode(entry.name)
                        out.append((name, entry.is_dir(follow_symlinks=False), entry.inode()))
                    except OSError:
                        continue  # gone between readdir and its stat
        finally:
            os.close(fd)
        return out
