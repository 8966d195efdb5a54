"""A child that cannot start for want of fds (EMFILE, ENFILE) leaves no fd behind.

CPython's ``subprocess.Popen`` (3.11, Debian 12's) makes a child's pipes one by one
before anything guards them: when the second or third ``os.pipe()`` fails, the pipes
(and the ``/dev/null``) made before it stay open and unreferenced, up to four fds a
try. A target that retries its rsync at the fd limit then leaks at every try, until
the process holds nothing but leaked pipes and never starts rsync again (seen with 30
daemon targets under systemd's default 1024: 126 pipes, no child, every target failing
for good). So a start notes the lowest free fd numbers first (the kernel hands out the
lowest free one), and when it fails for want of fds before it ever yielded to another
task, it closes those of them that are now a pipe or ``/dev/null``: no other task ran
meanwhile, and no thread of ours makes either.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import resource
import stat
from collections.abc import Iterator

# Popen's fds before its last pipe: stdin's and stdout's pipes, or one and /dev/null;
# two more in case a thread opened a file meanwhile.
SLOTS = 6
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})


def lowest_free(count: int = SLOTS) -> list[int]:
    """The ``count`` lowest fd numbers that are free now (fewer at the limit): each
    dup takes the lowest free one, whatever the number of fds open."""
    taken: list[int] = []
    for base in (0, 1, 2):
        try:
            while len(taken) < count:
                taken.append(fcntl.fcntl(base, fcntl.F_DUPFD_CLOEXEC, 0))
        except OSError as exc:
            if exc.errno != errno.EBADF or taken:
                break  # at the limit: fewer
        else:
            break
    for fd in taken:
        os.close(fd)
    return taken


def _leaked(fd: int, null: int) -> bool:
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISFIFO(st.st_mode) or (stat.S_ISCHR(st.st_mode) and st.st_rdev == null)


@contextlib.contextmanager
def reclaimed() -> Iterator[None]:
    """Around one ``create_subprocess_exec``: what a start refused for want of fds left
    open is closed again before the error goes on."""
    free = lowest_free()
    yielded = False

    def mark() -> None:
        nonlocal yielded
        yielded = True

    handle = asyncio.get_running_loop().call_soon(mark)  # runs only once we yielded
    try:
        yield
    except OSError as exc:
        if exc.errno in _OUT_OF_FDS and not yielded:
            null = os.stat(os.devnull).st_rdev
            for fd in free:
                if _leaked(fd, null):
                    os.close(fd)
        raise
    finally:
        handle.cancel()


FD_WANTED = 65536  # each target's standbys, runs and watch hold a handful: room for many


def raise_fd_limit() -> tuple[int, int]:
    """Raise our soft fd limit towards the hard one, as daemons do: systemd's default
    soft limit of 1024 is met by about 60 daemon targets in a burst (each holds a few
    standbys and runs, three pipes each). Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_WANTED if hard == resource.RLIM_INFINITY else min(FD_WANTED, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return soft, wanted
    return soft, soft
