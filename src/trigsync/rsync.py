"""Running the real rsync binary (argv from ``rsync_argv``), and one exit-code table.

No shell is ever involved: argv is a list, and the changed paths travel on stdin as
``--files-from=- --from0``, so a file named ``$(rm -rf /)`` is only ever a name.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import select
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import runwatch, sourceview, spawnfds
from .errors import (
    BusySyncError,
    PermanentSyncError,
    SetupError,
    SyncError,
    TransientSyncError,
)

# The argv builders are rsync_argv's; callers reach them through this module too.
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

__all__ = [
    "Arg",
    "Options",
    "Transport",
    "batch_argv",
    "child_environment",
    "full_argv",
    "link_dest_argv",
    "list_argv",
    "path_list",
    "verify_argv",
]

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    FATAL = "fatal"


# rsync(1) EXIT VALUES, sorted by what a replicator should do about them.
EXIT_CODES: dict[int, tuple[Outcome, str]] = {
    0: (Outcome.OK, "success"),
    1: (Outcome.FATAL, "syntax or usage error"),
    2: (Outcome.FATAL, "protocol incompatibility"),
    3: (Outcome.FATAL, "errors selecting input/output files or dirs"),
    4: (Outcome.FATAL, "requested action not supported"),
    5: (Outcome.FATAL, "error starting client-server protocol (auth or module)"),
    6: (Outcome.RETRY, "daemon unable to append to log file"),
    10: (Outcome.RETRY, "error in socket I/O (connection refused or reset)"),
    11: (Outcome.RETRY, "error in file I/O (receiver disk full?)"),  # paths set aside: REFUSED
    12: (Outcome.RETRY, "error in rsync protocol data stream (peer died)"),
    13: (Outcome.RETRY, "errors with program diagnostics"),
    14: (Outcome.RETRY, "error in IPC code"),
    20: (Outcome.RETRY, "received SIGUSR1 or SIGINT"),
    21: (Outcome.RETRY, "some error returned by waitpid()"),
    22: (Outcome.RETRY, "error allocating core memory buffers"),
    23: (Outcome.RETRY, "partial transfer due to error"),  # paths set aside: REFUSED
    24: (Outcome.OK, "some source files vanished before they could be transferred"),
    25: (Outcome.FATAL, "the --max-delete limit stopped deletions"),
    30: (Outcome.RETRY, "timeout in data send/receive"),
    35: (Outcome.RETRY, "timeout waiting for daemon connection"),
    255: (Outcome.RETRY, "ssh connection failed"),
}

PARTIAL = 23  # "partial transfer due to error": some paths went, some did not
FILE_IO = 11  # the receiver could not write: its disk or quota is full, a file too big for it
# Exits that name paths rather than the target: the paths that cause them are found by
# halves and set aside (partial.py), a full sync stays owed, and the rest keeps flowing.
REFUSED = frozenset({PARTIAL, FILE_IO})

# The destination directory was gone (someone deleted the replica): the receiver made
# it again, and says so on stdout at --info=name1 (see rsync_argv.batch_argv), over ssh
# too; or it could not make it (its parent is gone or not its user's) and exited 11.
_CREATED_ROOT = re.compile(rb"(?m)^created directory ")
_ROOT_MKDIR_FAILED = re.compile(rb'(?mi)^rsync: \[receiver\] mkdir ".*" failed: ')

_BUSY = re.compile(rb"max connections \((\d+)\) reached")


def classify(code: int, stderr: bytes = b"") -> Outcome:
    """What to do about an rsync exit status. Unknown codes retry: one target never kills us."""
    if code == 5 and _BUSY.search(stderr):
        return Outcome.RETRY
    if code < 0:  # killed by a signal, e.g. our own watchdog
        return Outcome.RETRY
    return EXIT_CODES.get(code, (Outcome.RETRY, "unknown exit code"))[0]


def busy(code: int, stderr: bytes) -> bool:
    """Whether a daemon refused the connection at its ``max connections``."""
    return code == 5 and _BUSY.search(stderr) is not None


def busy_limit(stderr: bytes) -> int | None:
    """The ``max connections`` a refusing daemon names, if it does."""
    found = _BUSY.search(stderr)
    return int(found[1]) if found else None


def describe(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code}"
    return EXIT_CODES.get(code, (Outcome.RETRY, "unknown exit code"))[1]


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    stderr: bytes
    seconds: float
    stdout: bytes = b""
    stalled: float | None = None  # trigsync ended it after this many seconds without progress
    # An earlier try of the same list (a standby) was cut short mid-file: the receiver may
    # hold its temp file (.name.XXXXXX), which only a reconciling sync removes.
    left_temp: bool = False

    @property
    def outcome(self) -> Outcome:
        return classify(self.code, self.stderr)

    @property
    def refused(self) -> bool:
        """Whether rsync refused some paths (REFUSED), not the target as a whole."""
        return self.code in REFUSED and not self.root_failed

    @property
    def root_missing(self) -> bool:
        """Whether the destination directory was gone: made again, or failing to be."""
        return self.root_failed or _CREATED_ROOT.search(self.stdout) is not None

    @property
    def root_failed(self) -> bool:
        """Whether the receiver could not make the missing destination directory."""
        return self.code == FILE_IO and _ROOT_MKDIR_FAILED.search(self.stderr) is not None


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


def raise_for(result: Result, where: str) -> None:
    """Turn a failed run into the matching SyncError."""
    outcome = result.outcome
    if outcome is Outcome.OK:
        return
    last = _last_line(result.stderr)
    message = f"{where}: rsync exit {result.code} ({describe(result.code)}): {last}"
    if result.stalled is not None:
        message = (
            f"{where}: rsync made no progress for {result.stalled:.0f} s (a frozen connection "
            "or a silent peer); stopped it, the batch goes again on a fresh connection"
        )
    cls: type[SyncError] = TransientSyncError if outcome is Outcome.RETRY else PermanentSyncError
    if result.code == 5 and _BUSY.search(result.stderr):
        cls = BusySyncError
    raise cls(message, code=result.code, cut_short=cut_short(result))


# Exit codes of a run that may have stopped halfway through writing on the receiver.
_MID_RUN = frozenset({10, 12, 20, 30})
_NEVER_CONNECTED = re.compile(rb"failed to connect|Connection refused|@ERROR|No route to host")


def cut_short(result: Result) -> bool:
    """Whether the receiver may have died mid-file and left a temp file (.name.XXXXXX)."""
    if result.left_temp:
        return True
    if result.code < 0:
        return True
    return result.code in _MID_RUN and not _NEVER_CONNECTED.search(result.stderr)


_CONSEQUENCE = re.compile(r"Broken pipe|Connection reset by peer|connection unexpectedly closed")


def reason(stderr: bytes) -> str:
    """rsync's most telling message, for a log line."""
    return _last_line(stderr)


def _last_line(stderr: bytes) -> str:
    """The most telling line: the daemon's own (@)ERROR, else rsync's, else the last one."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "backslashreplace").splitlines()]
    lines = [ln for ln in lines if ln]
    # "ERROR: module is read only" is the receiver's own word; rsync's "read error:
    # Connection reset" that follows it is only the consequence.
    # A receiver that failed (disk full) closes its end: the sender's "Broken pipe" that
    # follows names the consequence, not the cause.
    for wanted in ("@ERROR", "ERROR: ", "rsync: ", "error", "failed"):
        found = [ln for ln in lines if wanted in ln]
        causes = [ln for ln in found if not _CONSEQUENCE.search(ln)]
        if found:
            return (causes or found)[-1]
    return lines[-1] if lines else "(no message)"
