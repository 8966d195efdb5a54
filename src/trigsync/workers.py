"""One target's worker built from the config: the sync's rsync options, the target, its
dispatcher, its full-sync progress and its hooks (used at start and on a reload)."""

from __future__ import annotations

import os
from pathlib import Path

from . import rsync, targets
from .config_data import SyncConfig
from .dispatch import Dispatcher, Settings
from .excludes import Excludes
from .hooks import Hooks
from .progress import FullSync
from .state import StateStore


def rsync_options(config: SyncConfig) -> rsync.Options:
    """The rsync settings every run of this sync's targets shares."""
    excludes = Excludes(config.excludes, config.exclude_regex)
    return rsync.Options(
        rsync_path=config.rsync_path,
        timeout=config.timeout,
        excludes=excludes.rsync_patterns,
        extra=config.rsync_args,
        regex_excludes=excludes.untranslatable,
    )


def make_dispatcher(
    config: SyncConfig, spec: targets.TargetSpec, *, state_dir: Path, store: StateStore | None
) -> Dispatcher:
    """One target's worker, with the sync's rsync options and the target's hooks."""
    options = rsync_options(config)
    settings = Settings(delay=config.delay, standby=config.standby, backoff_max=config.retry_max)
    target = targets.build(spec, state_dir=state_dir, contimeout=config.contimeout)
    dispatcher = Dispatcher(os.fsencode(config.source), target, options, settings, store=store)
    # A progress bar, or a log line every 10 s; no progress for `timeout` s ends the run.
    dispatcher.full_sync = FullSync(target.name, stall=config.timeout or None)
    hooks = Hooks.of(config, spec)
    if hooks is not None:
        dispatcher.observers.append(hooks.observe)
    return dispatcher
