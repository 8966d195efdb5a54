"""Running the real rsync binary: argv from ``rsync_argv``, exits read by ``rsync_exit``.

No shell is ever involved: argv is a list, and the changed paths travel on stdin as
``--files-from=- --from0``, so a file named ``$(rm -rf /)`` is only ever a name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import runwatch, sourceview, spawnfds
from .errors import SetupError

# The argv builders are rsync_argv's, and the exit table rsync_exit's; callers reach them
# through this module too.
from .rsync_argv import (
    Arg,
    Options,
    Transport,
    batch_argv,
    child_environment,
    full_argv,
    link_dest_argv,
    list_argv,
    path_list,
    verify_argv,
)
from .rsync_exit import (
    EXIT_CODES,
    FILE_IO,
    PARTIAL,
    REFUSED,
    Outcome,
    Result,
    busy,
    busy_limit,
    classify,
    cut_short,
    describe,
    raise_for,
    reason,
)

__all__ = [
    "EXIT_CODES",
    "FILE_IO",
    "PARTIAL",
    "REFUSED",
    "Arg",
    "Options",
    "Outcome",
    "Result",
    "Transport",
    "batch_argv",
    "busy",
    "busy_limit",
    "child_environment",
    "classify",
    "cut_short",
    "describe",
    "full_argv",
    "link_dest_argv",
    "list_argv",
    "path_list",
    "raise_for",
    "reason",
    "verify_argv",
]

log = logging.getLogger(__name__)


def check_binary(rsync_path: str) -> None:
    """Fail early, with the fix, when the rsync binary is missing."""
    from shutil import which

    if which(rsync_path) is None:
        raise SetupError(
            f"rsync binary {rsync_path!r} not found; install it (apt-get install rsync) "
            "or set rsync_path"
        )


async def spawn(
    argv: Sequence[Arg],
    *,
    stdin: bool = False,
    env: Mapping[str, str] | None = None,
    stdout: bool = False,
) -> asyncio.subprocess.Process:
    """Start rsync; with ``stdin`` it waits for its path list on a pipe."""
    log.debug("rsync argv: %r", argv)
    try:
        with spawnfds.reclaimed():
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=child_environment(env),
                pass_fds=sourceview.held(),  # a source given as /proc/self/fd/N/ resolves
            )
    except OSError as exc:
        raise SetupError(f"cannot run {argv[0]!r}: {exc.strerror}; check rsync_path") from exc


STALL = 60.0  # seconds without progress after which a run is ended (config: timeout)
STOP_GRACE = 1.0  # a frozen rsync may block in its own exit path: then it is killed


async def finish(
    proc: asyncio.subprocess.Process,
    stdin: bytes | None = None,
    watchdog: float | None = None,
    *,
    stall: float | None = STALL,
) -> Result:
    """Hand a started rsync its path list and wait for it.

    A run that makes no progress (see ``runwatch``) for ``stall`` seconds is ended, and
    so is one past the hard ``watchdog`` deadline. The clock starts here, when the list
    is handed over: a standby waiting for its list is idle by design.
    """
    started = time.monotonic()
    talk = asyncio.ensure_future(_communicate(proc, stdin))
    ended = await supervise(proc, talk, started, watchdog=watchdog, stall=stall)
    out, stderr = talk.result() if not talk.cancelled() else (b"", b"")
    stalled = None
    if ended == "stall":
        stalled = time.monotonic() - started if stall is None else stall
        stderr += b"trigsync: no progress for %d s; rsync stopped\n" % stalled
    elif ended == "watchdog":
        stderr += b"trigsync: rsync killed by the watchdog after %d s\n" % (watchdog or 0)
    code = proc.returncode if proc.returncode is not None else -9
    return Result(code, stderr, time.monotonic() - started, out, stalled)


async def supervise(
    proc: asyncio.subprocess.Process,
    talk: asyncio.Future[Any],
    started: float,
    *,
    watchdog: float | None = None,
    stall: float | None = STALL,
) -> str | None:
    """Wait for ``talk`` (the exchange with a started rsync), ending rsync and what it
    started if it makes no progress for ``stall`` seconds or passes ``watchdog``.

    Returns "stall" or "watchdog" when it ended the run, else None.
    """
    try:
        ended = await runwatch.watch(proc.pid, talk, started, watchdog, stall)
        if ended is not None:
            await _stop_tree(proc)
            done, _ = await asyncio.wait({talk}, timeout=STOP_GRACE)
            if not done:  # a grandchild we could not see still holds a pipe
                talk.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await talk
    except asyncio.CancelledError:
        talk.cancel()
        await stop(proc)
        raise
    return ended


# A list longer than this is written from a thread rather than by the event loop: rsync
# reads it one byte per system call, so a long one drains for seconds, and it must not
# wait for the next pipeful whenever the loop is busy (a storm of events, say).
LIST_IN_THREAD = 64 * 1024
_FEED_POLL_MS = 100  # how soon a feeding thread notices that its run was given up


async def _communicate(
    proc: asyncio.subprocess.Process, stdin: bytes | None
) -> tuple[bytes, bytes]:
    feeder = stop = None
    if stdin is not None and len(stdin) > LIST_IN_THREAD and proc.stdin is not None:
        stop = threading.Event()
        feeder = asyncio.ensure_future(asyncio.to_thread(_feed, _own_stdin(proc), stdin, stop))
        stdin = None
    try:
        out, err = await proc.communicate(stdin)
    except (BrokenPipeError, ConnectionResetError):  # it exited before reading its list
        await proc.wait()
        return b"", await proc.stderr.read() if proc.stderr else b""
    finally:
        if feeder is not None and stop is not None:
            stop.set()  # rsync exited (or the run was given up): nobody reads any more
            await asyncio.wait([feeder])
    return out or b"", err or b""


def _own_stdin(proc: asyncio.subprocess.Process) -> int:
    """An fd of its own for ``proc``'s stdin pipe; the loop's end is closed, so rsync
    sees the end of its list when that one is closed."""
    assert proc.stdin is not None
    fd = os.dup(proc.stdin.transport.get_extra_info("pipe").fileno())
    proc.stdin.close()
    return fd


def _feed(fd: int, data: bytes, stop: threading.Event) -> None:
    """Write ``data`` to the (non-blocking) pipe ``fd`` as rsync drains it, then close
    it; gives up once ``stop`` is set. Runs in a thread, which waits in poll()."""
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    try:
        while view and not stop.is_set():
            if not poller.poll(_FEED_POLL_MS):
                continue
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
    except (BrokenPipeError, ConnectionResetError):
        pass  # rsync exited before it read all of it: its exit status says why
    finally:
        os.close(fd)


async def _stop_tree(proc: asyncio.subprocess.Process) -> None:
    """Stop rsync and what it started (ssh; a local receiver), which would outlive it."""
    children = [pid for pid in runwatch.descendants(proc.pid) if pid != proc.pid]
    _signal(children, signal.SIGTERM)
    await stop(proc, grace=STOP_GRACE)
    _signal(children, signal.SIGKILL)


def _signal(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


async def run(
    argv: Sequence[Arg],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    watchdog: float | None = None,
    stdout: bool = False,
    stall: float | None = STALL,
) -> Result:
    """Run rsync once and wait for it (see ``finish`` for ``watchdog`` and ``stall``)."""
    proc = await spawn(argv, stdin=stdin is not None, env=env, stdout=stdout)
    return await finish(proc, stdin, watchdog, stall=stall)


def signal_child(proc: asyncio.subprocess.Process, signum: int) -> None:
    """Signal a child that asyncio still waits for.

    Not through ``Process.terminate()`` or ``kill()``: ``Popen.send_signal`` polls first
    (bpo-38630), which reaps a child that has just exited behind asyncio's child watcher;
    the watcher then reports its exit as 255, with a WARNING (seen at every standby
    recycle with a pidfd watcher: a killed standby was signalled again). Until asyncio
    has reaped it (``returncode`` set), its pid cannot be anyone else's.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)


async def stop(
    proc: asyncio.subprocess.Process, grace: float = 5.0, *, first: int = signal.SIGTERM
) -> None:
    """Signal (SIGTERM unless told), wait, then kill."""
    if proc.returncode is not None:
        return
    signal_child(proc, first)
    try:
        await asyncio.wait_for(proc.wait(), timeout=grace)
    except TimeoutError:
        signal_child(proc, signal.SIGKILL)
        await proc.wait()
