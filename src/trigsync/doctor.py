"""``trigsync doctor``: find what the classic setup gets wrong, one line per finding.

The checks are pure functions in ``doctor_findings``; the probes that gather their data
are here (the source tree, /proc) and in ``doctor_daemon`` (a daemon). Exit 0: all
fine, 1: warnings, 2: errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import doctor_daemon
from .config_data import Config, SyncConfig
from .doctor_findings import (
    MAX_WATCHES,
    Finding,
    Level,
    Rewrite,
    exit_code,
    latency_finding,
    munged_link_findings,
    password_file_findings,
    quickack_route,
    risky_link,
    skew_finding,
    watch_limit_findings,
)
from .excludes import Excludes
from .targets import TargetSpec
from .targets.rsyncd import DaemonTarget

__all__ = [
    "Finding",
    "Level",
    "Rewrite",
    "diagnose",
    "exit_code",
    "latency_finding",
    "munged_link_findings",
    "password_file_findings",
    "quickack_route",
    "report",
    "risky_link",
    "skew_finding",
    "source_findings",
    "walk",
    "watch_limit_findings",
]


# -- probes of this machine ---------------------------------------------------------


def walk(
    source: str, excludes: Excludes | None = None
) -> Iterator[tuple[bytes, bool, bytes | None]]:
    """(relative path, is directory, symlink target) for everything below ``source``
    that trigsync replicates: an excluded directory takes no watch and sends no link."""
    excludes = excludes or Excludes()
    root = os.fsencode(source)
    stack = [b""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel) if rel else root) as it:
                for entry in it:
                    path = os.path.join(rel, entry.name) if rel else entry.name
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if excludes.excludes(path, is_dir=is_dir):
                        continue
                    if entry.is_symlink():
                        yield path, False, os.readlink(entry.path)
                    elif is_dir:
                        stack.append(path)
                        yield path, True, None
        except OSError:
            continue


def source_findings(sync: SyncConfig, max_watches_file: Path = MAX_WATCHES) -> list[Finding]:
    excludes = Excludes(sync.excludes, sync.exclude_regex)
    directories = 1 + sum(1 for _, is_dir, _ in walk(sync.source, excludes) if is_dir)
    try:
        limit = int(max_watches_file.read_text())
    except (OSError, ValueError):
        return [Finding(Level.WARNING, sync.source, f"cannot read {max_watches_file}")]
    return watch_limit_findings(sync.source, directories, limit)


def password_file_check(spec: TargetSpec, user: str | None) -> list[Finding]:
    path = spec.password_file
    if not path:
        return []
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(4096)
    except FileNotFoundError:
        fix = f"create it holding only the module's password, then run: chmod 600 {path}"
        return [Finding(Level.ERROR, path, f"password file does not exist; {fix}")]
    except OSError as exc:
        return [Finding(Level.ERROR, path, f"cannot read the password file: {exc.strerror}")]
    return password_file_findings(
        path, mode=st.st_mode, owner=st.st_uid, text=text, user=user, euid=os.geteuid()
    )


def diagnose(config: Config) -> list[Finding]:
    """Every finding for every sync and target."""
    from .targets import build

    found: list[Finding] = []
    for sync in config.syncs:
        found += source_findings(sync)
        excludes = Excludes(sync.excludes, sync.exclude_regex)
        links = [(p, t) for p, _, t in walk(sync.source, excludes) if t is not None]
        for spec in sync.targets:
            target = build(spec, state_dir=Path(config.state_dir), contimeout=sync.contimeout)
            if not isinstance(target, DaemonTarget):
                found.append(
                    Finding(Level.OK, spec.url, "not an rsync daemon: only daemons are probed")
                )
                continue
            pw = password_file_check(spec, target.address.user)
            found += pw
            # With a bad password file every probe past the greeting would fail on it.
            reach_only = any(f.level == Level.ERROR for f in pw)
            found += doctor_daemon.probe(target, sync, links, reach_only=reach_only)
    return found


def report(findings: Iterable[Finding]) -> int:
    findings = list(dict.fromkeys(findings))  # targets sharing a password file: say it once
    for finding in findings:
        print(finding)
    return exit_code(findings)
