"""What ``trigsync doctor`` can find, as pure functions over plain data: a password
file's mode and text, a directory count and a kernel limit, measured times, listings.
Each finding names the problem and its fix. The probes that gather the data are in
``doctor`` (this machine) and ``doctor_daemon`` (a daemon)."""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


def latency_finding(
    subject: str, seconds: float, limit: float = 0.030, route_fix: str | None = None
) -> Finding:
    ms = seconds * 1000
    if seconds > limit:
        # Either end can avoid the ~40 ms wait: the daemon without Nagle, or this host
        # acknowledging at once, so the daemon's second small write is not held back.
        here = f", or on this host run '{route_fix}'" if route_fix else ""
        return Finding(
            Level.WARNING,
            subject,
            f"a small file takes {ms:.0f} ms to arrive (over {limit * 1000:.0f} ms): add "
            "'socket options = TCP_NODELAY' to the global section of the daemon's rsyncd.conf"
            f"{here}",
        )
    return Finding(Level.OK, subject, f"a small file arrives in {ms:.0f} ms")


# What a route carries that the host route in its place must keep ("mtu lock 1300" too):
# a lower mtu dropped would send segments the path cannot carry.
_METRICS = frozenset(
    [
        "mtu",
        "hoplimit",
        "advmss",
        "reordering",
        "window",
        "cwnd",
        "initcwnd",
        "initrwnd",
        "rtt",
        "rttvar",
        "ssthresh",
        "rto_min",
        "features",
        "congctl",
        "fastopen_no_cookie",
    ]
)
_NOT_UNICAST = ("local", "broadcast", "unreachable", "blackhole", "prohibit", "throw", "multicast")


def quickack_route(ip: str, route_get: str) -> str | None:
    """The ``ip route`` command that makes this host acknowledge the receiver's segments at
    once, from what ``ip route get IP`` printed; None if the route has it already, or is
    one this host should not be told to change (loopback, local).

    The host route keeps what the route it overrides gives this address: its gateway
    (``onlink``, which ``ip route get`` never shows: a gateway outside every prefix of
    the host, as cloud hosts have it, is refused without it), its table (policy routing
    looks the address up there, not in main), its source address (the daemon's ``hosts
    allow`` knows that one) and its metrics (mtu)."""
    words = route_get.split()
    if not words or words[0] in _NOT_UNICAST or "quickack" in words:
        return None
    spec: list[str] = []

    def carry(key: str) -> None:
        if key in words[:-1]:
            at = words.index(key) + 1
            # "via inet6 fe80::1": an IPv4 route through an IPv6 gateway (RFC 5549)
            family = words[at] in ("inet", "inet6") and at + 1 < len(words)
            spec.extend([key, *words[at : at + (2 if family else 1)]])

    carry("via")
    carry("dev")
    if "dev" not in spec:
        return None
    if "via" in spec:
        spec.append("onlink")
    carry("table")
    carry("src")
    for i, word in enumerate(words[:-1]):
        if word in _METRICS:
            lock = words[i + 1] == "lock" and i + 2 < len(words)
            spec.extend(words[i : i + (3 if lock else 2)])
    prefix = 128 if ":" in ip else 32
    return " ".join(["ip route add", f"{ip}/{prefix}", *spec, "quickack 1"])


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
