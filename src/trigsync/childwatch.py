"""How the event loop hears that a child exited: from a pidfd, not from a thread per child.

Python 3.11's asyncio (Debian 12's) waits for each subprocess in a thread of its own
(``ThreadedChildWatcher``): each rsync started costs a thread's start, and the loop
blocks until that thread runs. Back to back, a standby starts for every change, on a
machine whose cores are busy with rsync, so that wait lands on the next change's path.
``PidfdChildWatcher`` (Linux 5.3+) makes the exit an fd the loop already watches. From
Python 3.12 on it is asyncio's own choice, and this does nothing.

A child whose pidfd cannot be opened (the process is out of fds: a thread took the
ones the start had just freed) is waited for in a thread, as before: asyncio's own
watcher raised there, after the fork, and left the child running unwaited with its
pipes open (a standby rsync that then held a daemon connection for good).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import TypeVarTuple, Unpack


def use_pidfds() -> bool:
    """Make asyncio watch children through pidfds where it can; whether it now does."""
    if sys.version_info >= (3, 12):
        return True  # asyncio's default there (set_child_watcher is deprecated)
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # an older kernel, or a seccomp filter that refuses it
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(Watcher())
    return True


if sys.version_info < (3, 12):  # 3.14 has no PidfdChildWatcher; 3.12 needs none of this
    _Ts = TypeVarTuple("_Ts")

    class Watcher(asyncio.PidfdChildWatcher):
        """asyncio's pidfd watcher, with a thread for a child whose pidfd cannot be opened."""

        def add_child_handler(
            self,
            pid: int,
            callback: Callable[[int, int, Unpack[_Ts]], object],
            *args: *_Ts,
        ) -> None:
            try:
                super().add_child_handler(pid, callback, *args)
            except OSError:  # EMFILE, ENFILE: the child runs already, and must be waited for

                def wait() -> None:  # as ThreadedChildWatcher: the callback is made for it
                    callback(pid, exit_status(pid), *args)

                threading.Thread(target=wait, name=f"waitpid-{pid}", daemon=True).start()


def exit_status(pid: int) -> int:
    """Wait for child ``pid``; its exit status as asyncio reports it."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped elsewhere: what asyncio reports then
        return 255
    return os.waitstatus_to_exitcode(status)
