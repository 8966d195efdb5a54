"""What an rsync exit means, pure: the exit-code table, a run's Result, the error it raises.

``rsync.py`` runs the binary and re-exports these, so callers name them ``rsync.X``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import (
    BusySyncError,
    PermanentSyncError,
    SyncError,
    TransientSyncError,
)


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
