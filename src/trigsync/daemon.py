"""Detach from the terminal as ``sersync2 -d`` did, for an ``rc.local`` line.

A service manager is the better home (systemd restarts what dies); this exists so the
line people already have keeps working and does not hold up the rest of ``rc.local``.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
from pathlib import Path

from . import rsync, targets
from .config import Config

log = logging.getLogger(__name__)

SYSLOG_SOCKET = "/dev/log"


def preflight(config: Config) -> None:
    """The start-up checks, run while a terminal still shows their one-line error."""
    for sync in config.syncs:
        rsync.check_binary(sync.rsync_path)
        for spec in sync.targets:
            state_dir = Path(config.state_dir)
            targets.build(spec, state_dir=state_dir, contimeout=sync.contimeout).check()


def daemonize(pid_file: str | None = None) -> None:
    """Double fork into a new session with stdio on /dev/null; log to syslog from then on."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()  # no controlling terminal: a closed ssh session sends no SIGHUP
    if os.fork() > 0:
        os._exit(0)  # the session leader exits, so no terminal can be acquired again
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    if pid_file:
        tmp = f"{pid_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        os.replace(tmp, pid_file)  # a reader never sees a half-written pid
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler):
            root.removeHandler(handler)
    if os.path.exists(SYSLOG_SOCKET):
        handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
        handler.setFormatter(logging.Formatter("trigsync[%(process)d]: %(levelname)s %(message)s"))
        root.addHandler(handler)


def remove_pid_file(pid_file: str | None) -> None:
    if pid_file:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pid_file)
