"""Running without systemd (rc.local, sersync's ``-d``): detach, a pid file, a log file
that SIGHUP reopens (logrotate's ``postrotate``)."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
from pathlib import Path

from .errors import SetupError

log = logging.getLogger(__name__)


class LogFile(logging.handlers.WatchedFileHandler):
    """Appends to a file; ``reopen`` (on SIGHUP) starts a new one after a rotation."""

    def reopen(self) -> None:
        self.acquire()
        try:
            old, self.stream = self.stream, self._open()
            if old is not None:
                old.close()
        finally:
            self.release()


def log_to_file(path: str | None, *, keep_stderr: bool) -> None:
    """Send the log to ``path`` (if given), and to stderr only if ``keep_stderr``."""
    root = logging.getLogger()
    if path is not None:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
            handler = LogFile(path)
        except OSError as exc:
            raise SetupError(
                f"cannot open log file {path}: {exc.strerror}; pass --log-file FILE"
            ) from exc
        handler.setFormatter(root.handlers[0].formatter if root.handlers else None)
        root.addHandler(handler)
    if not keep_stderr:
        for old in root.handlers[:]:
            if not isinstance(old, LogFile):
                root.removeHandler(old)


def logging_to_file() -> bool:
    return any(isinstance(h, LogFile) for h in logging.getLogger().handlers)


def reopen_logs() -> int:
    """Reopen every log file of the root logger; returns how many."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, LogFile)]
    for handler in files:
        handler.reopen()
    return len(files)


class Detached:
    """The background child's line to the parent that waits for it to start."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def ready(self) -> None:
        """Startup finished: let the parent exit 0, and leave the terminal."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, b"R")
        os.close(self._fd)
        self._fd = -1
        # Until now errors went to the terminal that started us; from here on, to the log.
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)


def detach() -> Detached:
    """Fork into a new session; the parent waits until the child is ready or has failed,
    and exits with 0 or the child's exit code. Call before any thread or event loop."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            started = pipe.read(1) == b"R"
        if started:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) or 1)
    os.close(read_end)
    os.setsid()
    # No chdir("/"): relative paths in the config (a local target, a password file) are
    # resolved later, against the directory trigsync was started from.
    return Detached(write_end)


def check_pid_file(path: Path) -> None:
    """Before detaching: the pid file is written only once the daemon is ready, so a
    directory that cannot take it must stop the start now, at the terminal."""
    if not os.access(path.parent, os.W_OK | os.X_OK) or path.is_dir():
        raise SetupError(
            f"cannot write the pid file {path}: {path.parent} is missing or not writable; "
            "create it or pass another --pid-file"
        )


def write_pid_file(path: Path) -> None:
    """Write our pid atomically (rename), so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


def remove_pid_file(path: Path) -> None:
    """Remove the pid file if it is still ours."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()
