"""``trigsync verify``: an rsync dry run per target that lists every drift from the source."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from . import fullsync, rsync
from .config_data import Config
from .errors import SyncError
from .sourceview import SourceView
from .targets import build
from .workers import rsync_options


@dataclass(frozen=True, slots=True)
class Drift:
    """What one target differs in; ``lines`` are rsync's itemized changes."""

    source: str
    target: str
    lines: tuple[str, ...]
    error: str | None = None


async def verify(config: Config) -> list[Drift]:
    """Compare every target of every sync with its source, all at once."""
    checks = []
    for sync in config.syncs:
        options = rsync_options(sync)
        for spec in sync.targets:
            target = build(spec, state_dir=Path(config.state_dir), contimeout=sync.contimeout)
            target.check()
            checks.append(_one(sync.source, target.name, options, target.transport()))
    return list(await asyncio.gather(*checks))


async def _one(source: str, name: str, options: rsync.Options, transport: rsync.Transport) -> Drift:
    _, rules = await fullsync.regex_rules(os.fsencode(source), options)
    view = SourceView(os.fsencode(source))  # rsync reads it with no symlink followed
    try:
        argv = rsync.verify_argv(
            view.path(), options, transport, exclude_from_stdin=rules is not None
        )
        result = await rsync.run(argv, stdin=rules, env=transport.env, stdout=True)
    finally:
        view.close()
    text = result.stdout.decode("utf-8", "backslashreplace")
    lines = tuple(line for line in text.splitlines() if line.strip())
    if result.code == rsync.PARTIAL:
        # The receiver refused some paths (a daemon's exclude, a full disk): it was
        # reached and compared, so what differs is listed, and each refusal is drift too.
        errors = result.stderr.decode("utf-8", "backslashreplace").splitlines()
        return Drift(source, name, lines + tuple(e for e in errors if _refusal(e)))
    try:
        rsync.raise_for(result, f"target {name}")
    except SyncError as exc:
        return Drift(source, name, (), str(exc))
    return Drift(source, name, lines)


def _refusal(line: str) -> bool:
    """A line of rsync's stderr that names a path, not its closing summary."""
    return bool(line.strip()) and not line.startswith("rsync error: ")
