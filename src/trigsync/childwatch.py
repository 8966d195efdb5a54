"""How the event loop hears that a child exited: from a pidfd, not from a thread per child.

Python 3.11's asyncio (Debian 12's) waits for each subprocess in a thread of its own
(``ThreadedChildWatcher``): each rsync started costs a thread's start, and the loop
blocks until that thread runs. Back to back, a standby starts for every change, on a
machine whose cores are busy with rsync, so that wait lands on the next change's path.
``PidfdChildWatcher`` (Linux 5.3+) makes the exit an fd the loop already watches. From
Python 3.12 on it is asyncio's own choice, and this does nothing.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings


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
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    return True
