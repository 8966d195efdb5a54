"""Every error trigsync raises on purpose, each with the process exit code it maps to.

    TrigsyncError                 exit 1
    ├── ConfigError               exit 2   bad config file, URL or command line
    ├── SetupError                exit 3   the machine is not ready (rsync missing, password file)
    │   └── WatchLimitError       exit 3   inotify watches or instances ran out
    ├── WatchError                exit 4   the source tree cannot be watched any more
    ├── ControlError              exit 1   no daemon answers on the control socket, or it refused
    └── SyncError                 exit 5   one rsync run failed
        ├── TransientSyncError             retry with backoff (refused, timeout)
        │   └── BusySyncError              the daemon is at max connections: retry soon
        └── PermanentSyncError             retry slowly and report (auth, module, options)

Lower-layer errors (OSError, rsync exit codes) are translated where they cross into
trigsync, with ``raise X from exc``; the CLI alone turns these into exit codes.
"""

from __future__ import annotations


class TrigsyncError(Exception):
    """Base of all trigsync errors; the message is one line naming the problem and the fix."""

    exit_code = 1


class ConfigError(TrigsyncError):
    """A config file, URL or command-line value is invalid."""

    exit_code = 2


class SetupError(TrigsyncError):
    """Something on this machine must be fixed before trigsync can run."""

    exit_code = 3


class WatchLimitError(SetupError):
    """The kernel's inotify limits are too low for the tree; ``suggested`` is what would do."""

    def __init__(self, message: str, *, sysctl: str = "", suggested: int = 0) -> None:
        super().__init__(message)
        self.sysctl = sysctl
        self.suggested = suggested


class WatchError(TrigsyncError):
    """The source tree cannot be watched (it vanished or was unmounted)."""

    exit_code = 4


class ControlError(TrigsyncError):
    """No daemon answers on the control socket, or it refused the request."""


class SyncError(TrigsyncError):
    """One rsync run failed; ``code`` is rsync's exit status."""

    exit_code = 5

    def __init__(self, message: str, *, code: int, cut_short: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.cut_short = cut_short  # the receiver may hold a half-written temp file


class TransientSyncError(SyncError):
    """The target may accept the same batch later: retry with backoff."""


class BusySyncError(TransientSyncError):
    """The daemon's connection slots are taken; one frees within milliseconds."""


class PermanentSyncError(SyncError):
    """The target refuses us until someone fixes a setting: retry slowly, report loudly."""
