"""The configuration as frozen plain data: what every part of trigsync reads.

``config.py`` builds it from TOML or from the command line (``sersync.py`` from
confxml.xml) and re-exports these names.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .targets import TargetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandHook:
    """sersync's command plugin: ``argv + [path] + argv_after`` for each changed file.

    Run by ``hooks.CommandHooks`` once per file, after the sync's first target took it.
    """

    argv: tuple[str, ...]
    argv_after: tuple[str, ...] = ()
    include_regex: tuple[str, ...] = ()  # full match on the relative path; none: every file
    ignore_error: bool = True


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """One source tree and the targets it feeds."""

    source: str
    targets: tuple[TargetSpec, ...]
    excludes: tuple[str, ...] = ()
    delay: float = 0.0
    initial_sync: bool = False
    timeout: int = 60
    contimeout: int = 10
    rsync_path: str = "rsync"
    rsync_args: tuple[str, ...] = ()
    watch_modify: bool = False
    # "inotify", "auto" or "fanotify" (see fanwatch.choose); inotify by default until
    # the fanotify backend meets issue 16's scale goals.
    watch_backend: str = "inotify"
    reconcile_every: float = 0.0  # seconds between full syncs; 0: never
    standby: bool = True  # keep one rsync per target connected, waiting for the next batch
    auto_raise_limits: bool = False  # as root, raise fs.inotify.max_user_watches when short
    exclude_regex: tuple[str, ...] = ()  # full-match regexes on the relative path (sersync)
    retry_max: float = 30.0  # longest pause between retries of a failing target, seconds
    command_hooks: tuple[CommandHook, ...] = ()

    on_success: tuple[str, ...] = ()  # hook argv after each successful run (per target too)
    on_failure: tuple[str, ...] = ()  # hook argv after each failed run
    hook_timeout: float = 30.0  # a hook still running after this is killed
    webhook: str | None = None  # http(s) URL that receives each run's report as JSON


def private_dir(path: Path) -> None:
    """Make the state directory 0700 at every start: it holds the pending paths (names
    from the source) and the ssh control sockets, which log in without a password."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("state directory %s was mode %04o; set to 0700", path, mode)
        os.chmod(path, 0o700)


def default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/trigsync"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "trigsync")


@dataclass(frozen=True, slots=True)
class Config:
    syncs: tuple[SyncConfig, ...]
    state_dir: str = field(default_factory=default_state_dir)
    origin: str = "command line"
    canary_every: float = 0.0  # seconds between scheduled canaries; 0: only on `check --canary`
    canary_name: str = ""  # the probe file's name; "": .trigsync-canary-<hostname>
    canary_timeout: float = 30.0  # a canary not on every target within this fails
    metrics: str | None = None  # "127.0.0.1:9108": serve Prometheus metrics there
    log_format: str = "text"  # text | json (JSON lines)
    log_file: str | None = None  # log here instead of stderr (--log-file wins)
