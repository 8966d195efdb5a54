"""``trigsync doctor``: find what the classic setup gets wrong, one line per finding.

The checks are pure functions over plain data (a password file's mode and text, a
directory count and a kernel limit, measured times); the probes that gather the data
live at the edges here (the source tree, /proc) and in ``doctor_daemon`` (a daemon).
Each finding names the problem and its fix. Exit 0: all fine, 1: warnings, 2: errors.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Config, SyncConfig
from .excludes import Excludes
from .targets import TargetSpec
from .targets.rsyncd import DaemonTarget

MAX_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
WATCH_HEADROOM = 0.8  # warn when the tree takes more than this share of the limit
RISKY_LINKS_SHOWN = 3


class Level(enum.IntEnum):
    OK = 0
    WARNING = 1
    ERROR = 2


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    subject: str  # a target URL, a source directory or a file
    text: str  # the problem and its fix, or what was found fine

    def __str__(self) -> str:
        label = {Level.OK: "ok", Level.WARNING: "WARNING", Level.ERROR: "ERROR"}[self.level]
        return f"{label:7} {self.subject}: {self.text}"


def exit_code(findings: Iterable[Finding]) -> int:
    return max((int(f.level) for f in findings), default=0)


# -- pure checks ------------------------------------------------------------------------


def password_file_findings(
    path: str, *, mode: int, owner: int, text: str, user: str | None, euid: int
) -> list[Finding]:
    """rsync's own rules for a client password file, plus the tutorials' classic mistake."""
    found: list[Finding] = []
    if mode & 0o077:
        found.append(
            Finding(
                Level.ERROR,
                path,
                f"mode {stat.S_IMODE(mode):o} lets others read it and rsync refuses it; "
                f"run: chmod 600 {path}",
            )
        )
    if euid == 0 and owner != 0:
        found.append(Finding(Level.ERROR, path, f"must be owned by root; run: chown root {path}"))
    first = text.split("\n", 1)[0].rstrip("\r")
    if not first:
        found.append(Finding(Level.ERROR, path, "is empty; write the module's password in it"))
    elif ":" in first and (user is None or first.startswith(f"{user}:")):
        found.append(
            Finding(
                Level.ERROR,
                path,
                "holds user:password, but the client's file holds only the password "
                "(user:password belongs in the daemon's secrets file); "
                f"keep only what follows the colon: sed -i 's/^[^:]*://' {path}",
            )
        )
    if first != first.rstrip(" \t"):  # rsync sends it as part of the password
        found.append(
            Finding(
                Level.WARNING,
                path,
                "the password ends in a space or tab, which rsync sends too (auth fails "
                f"unless the secrets file has it): run: sed -i 's/[[:blank:]]*$//' {path}",
            )
        )
    if not found:
        found.append(Finding(Level.OK, path, "password file: mode and format fine"))
    return found


def watch_limit_findings(source: str, directories: int, max_watches: int) -> list[Finding]:
    fix = (
        f"run: sysctl fs.inotify.max_user_watches={max(directories * 2, 524288)} and put "
        "that line in /etc/sysctl.d/90-trigsync.conf"
    )
    if directories > max_watches:
        text = f"{directories} directories but fs.inotify.max_user_watches is {max_watches}; {fix}"
        return [Finding(Level.ERROR, source, text)]
    if directories > max_watches * WATCH_HEADROOM:
        return [
            Finding(
                Level.WARNING,
                source,
                f"{directories} directories use most of fs.inotify.max_user_watches "
                f"({max_watches}), shared by every program of this user; {fix}",
            )
        ]
    return [Finding(Level.OK, source, f"{directories} directories, {max_watches} watches allowed")]


def risky_link(target: bytes, depth: int = 0) -> bool:
    """Whether a daemon with ``use chroot = no`` would rewrite this symlink target.

    ``depth`` is how many directories the link sits below the module root: rsync lets a
    leading '..' climb that far, and drops any '..' after a named component.
    """
    if target.startswith(b"/"):
        return True
    named = False
    for part in target.split(b"/"):
        if part == b"..":
            if named or depth == 0:
                return True
            depth -= 1
        elif part not in (b"", b"."):
            named = True
    return False


class Rewrite(enum.Enum):
    """What a ``use chroot = no`` module does to the symlink targets it receives."""

    SANITIZE = "strips leading '/' and '..'"
    MUNGE = "with munge symlinks (its default then) prefixes /rsyncd-munged/ to every target"


def munged_link_findings(
    subject: str, module: str, links: Sequence[tuple[bytes, bytes]], sanitizes: Rewrite | bool
) -> list[Finding]:
    rewrite = Rewrite.SANITIZE if sanitizes is True else sanitizes
    if rewrite == Rewrite.MUNGE:
        risky = list(links)
        fix = "set use chroot = yes (the daemon must start as root), or munge symlinks = no"
    else:
        risky = [(p, t) for p, t in links if risky_link(t, p.count(b"/"))]
        fix = "set use chroot = yes (the daemon must start as root)"
    if not rewrite or not risky:
        return []
    shown = ", ".join(f"{os.fsdecode(p)} -> {os.fsdecode(t)}" for p, t in risky[:RISKY_LINKS_SHOWN])
    return [
        Finding(
            Level.WARNING,
            subject,
            f"{len(risky)} symlinks would arrive with a different target ({shown}): module "
            f"{module} runs with use chroot = no, which {rewrite.value}; {fix}",
        )
    ]


def latency_finding(subject: str, seconds: float, limit: float = 0.030) -> Finding:
    ms = seconds * 1000
    if seconds > limit:
        return Finding(
            Level.WARNING,
            subject,
            f"a small file takes {ms:.0f} ms to arrive (over {limit * 1000:.0f} ms): add "
            "'socket options = TCP_NODELAY' to the global section of the daemon's rsyncd.conf",
        )
    return Finding(Level.OK, subject, f"a small file arrives in {ms:.0f} ms")


def skew_finding(subject: str, skew: float, limit: float = 2.0) -> Finding:
    if abs(skew) > limit:
        way = "ahead of" if skew > 0 else "behind"
        return Finding(
            Level.WARNING,
            subject,
            f"the receiver's clock is {abs(skew):.0f} s {way} this one; rsync -u and the "
            "quick check compare times: run chrony or systemd-timesyncd on both hosts",
        )
    return Finding(Level.OK, subject, f"clocks agree within {limit:.0f} s")


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
    from . import doctor_daemon
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
