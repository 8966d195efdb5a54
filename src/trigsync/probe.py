"""How a standby rsync says it has logged in, without a timer: the probe in a one-page pipe.

A standby is written one NUL at its start. rsync reads its stdin only once its login is
done, when it builds its file list, and skips the NUL as an empty name (io.c read_line,
RL_DUMP_COMMENTS). The pipe is shrunk to one page first: one byte then fills its only
slot, so the kernel reports the pipe writable again exactly when rsync has read the
byte. The event loop wakes on that, the moment the login ends. Polling the pipe's
unread count every 2 ms, as before, cost a wake-up per 2 ms while any login was under
way (always, back to back) and up to 2 ms of every change that waited for a login.

Once read, the pipe gets its usual size back, so a long list is not written a page at a
time.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import os
import termios
from collections.abc import Callable

log = logging.getLogger(__name__)

PROBE = b"\0"  # an empty name: rsync skips it
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, which Python has from 3.10 on Linux only
PIPE_DEFAULT = 65536  # a pipe's size as the kernel makes it (16 pages)

Proc = asyncio.subprocess.Process


def _pipe_fd(proc: Proc) -> int | None:
    transport = proc.stdin.transport if proc.stdin is not None else None
    pipe = transport.get_extra_info("pipe") if transport is not None else None
    if pipe is None:
        return None
    try:
        return int(pipe.fileno())
    except ValueError:  # closed
        return None


class Probe:
    """Writes the probe to a standby and calls ``on_login`` once rsync has read it.

    ``on_login`` is called at most once. A standby that dies first is not reported here
    (its own watcher does that). When the pipe cannot be shrunk, the standby counts as
    logged in from its start, as routing by age alone did.
    """

    def __init__(self, proc: Proc, on_login: Callable[[], None]) -> None:
        self._on_login = on_login
        self._dup: int | None = None  # ours to watch: the transport's fd stays its own
        fd = _pipe_fd(proc)
        if fd is None or proc.stdin is None:
            raise OSError("the standby has no stdin pipe")
        self._pipe = fd
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, 1)  # rounded up to one page: one slot
        except OSError as exc:
            log.debug("cannot shrink a standby's pipe (%s): it counts as logged in", exc)
            proc.stdin.write(PROBE)
            asyncio.get_running_loop().call_soon(self._logged_in)
            return
        proc.stdin.write(PROBE)  # fills the one slot: no longer writable
        self._dup = os.dup(fd)
        asyncio.get_running_loop().add_writer(self._dup, self._writable)

    def _writable(self) -> None:
        count = array.array("i", [0])
        try:
            fcntl.ioctl(self._pipe, termios.FIONREAD, count)
        except OSError:
            count[0] = -1
        callback = self._on_login
        self.cancel()
        if count[0] == 0:  # else the pipe broke: the standby died with the probe unread
            callback()

    def _logged_in(self) -> None:
        callback, self._on_login = self._on_login, _nothing
        callback()

    def cancel(self) -> None:
        """Stop watching: logged in, stopped, or taken before it was seen to log in. The
        pipe gets its usual size back, so its list is not written a page at a time."""
        self._on_login = _nothing
        dup, self._dup = self._dup, None
        if dup is None:
            return
        asyncio.get_running_loop().remove_writer(dup)
        os.close(dup)
        with contextlib.suppress(OSError):  # broken: the standby died
            fcntl.fcntl(self._pipe, F_SETPIPE_SZ, PIPE_DEFAULT)


def _nothing() -> None:
    pass
