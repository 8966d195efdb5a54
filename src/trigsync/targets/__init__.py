"""Targets, built from their URL: rsync daemon modules, ssh hosts, local directories."""

from __future__ import annotations

import re
from pathlib import Path

from .base import Target, TargetSpec
from .local import LocalTarget
from .rsyncd import DaemonTarget
from .ssh import SshTarget

__all__ = ["DaemonTarget", "LocalTarget", "SshTarget", "Target", "TargetSpec", "build", "kind_of"]


def kind_of(url: str) -> type[Target]:
    """Which Target class a URL names, by rsync's own rules: ``::`` or rsync:// is a daemon,
    a ``:`` before any ``/`` is a remote shell host, anything else is a local path."""
    if url.startswith("rsync://") or re.match(r"[^/]*::", url):
        return DaemonTarget
    if url.startswith("ssh://") or (re.match(r"[^/]+:", url) and not url.startswith("file://")):
        return SshTarget
    return LocalTarget


def build(spec: TargetSpec, *, state_dir: Path, contimeout: int = 10) -> Target:
    return kind_of(spec.url)(spec, state_dir=state_dir, contimeout=contimeout)
