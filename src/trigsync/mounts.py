"""Where a path lives on its filesystem, read from the mount table.

A bind mount shows one directory at two places, and ``realpath`` sees only the place: a
local target bind-mounted from a directory inside the source looks like it lies outside
it. The mount table says which directory of which filesystem each mount shows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import NamedTuple

MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(rb"\\([0-7]{3})")


class Mount(NamedTuple):
    device: bytes  # major:minor of the filesystem
    root: bytes  # the directory of that filesystem that the mount shows
    point: bytes  # where it shows it


def _unescape(field: bytes) -> bytes:
    # The kernel writes space, tab, newline and backslash as \ooo.
    return _OCTAL.sub(lambda m: bytes([int(m[1], 8)]), field)


def parse(data: bytes) -> list[Mount]:
    """The mounts of a /proc/PID/mountinfo, in its order (a later one is mounted on top)."""
    mounts = []
    for line in data.splitlines():
        fields = line.split(b" ", 5)
        if len(fields) >= 5:
            mounts.append(Mount(fields[2], _unescape(fields[3]), _unescape(fields[4])))
    return mounts


def read() -> list[Mount]:
    """This process's mounts; empty if /proc is not there to say."""
    try:
        with open(MOUNTINFO, "rb") as f:
            return parse(f.read())
    except OSError:
        return []


def place(path: bytes, mounts: Sequence[Mount]) -> tuple[bytes, bytes] | None:
    """(device, path on that filesystem) of an absolute path with no symlink in it, from
    the mount it is under; None if no mount holds it."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.point
        holds = path == point or path.startswith(point.rstrip(b"/") + b"/")
        # The deepest, and of two at one point the one on top (the later line).
        if holds and (best is None or len(point) >= len(best.point)):
            best = mount
    if best is None:
        return None
    rest = path[len(best.point) :].lstrip(b"/")
    root = best.root.rstrip(b"/")
    return best.device, root + b"/" + rest if rest else root or b"/"


def inside(path: str, directory: str) -> bool:
    """Whether resolved ``path`` shows ``directory`` or a directory below it, perhaps
    through a bind mount: the same filesystem, and a place on it inside the other's."""
    table = read()
    a = place(os.fsencode(path), table)
    b = place(os.fsencode(directory), table)
    if a is None or b is None or a[0] != b[0]:
        return False
    top = b[1].rstrip(b"/")
    return a[1] == b[1] or a[1].startswith(top + b"/")


def _holding(path: bytes, table: Sequence[Mount]) -> list[Mount]:
    """The mount ``path`` is on (the deepest one above or at it), as a list of 0 or 1."""
    holds = [m for m in table if path == m.point or path.startswith(m.point.rstrip(b"/") + b"/")]
    return [max(reversed(holds), key=lambda m: len(m.point))] if holds else []  # on top


def aliases(source: bytes, table: Sequence[Mount]) -> list[tuple[bytes, bytes]]:
    """Pairs (mount point, other place) below ``source`` that show one directory twice:
    a bind mount of a directory that is also in the tree. A watch is one per directory,
    so a change there is seen at one of the two places only."""
    top = source.rstrip(b"/")
    below = [m for m in table if m.point.startswith(top + b"/")]
    found = []
    for mount in below:
        shown = mount.root.rstrip(b"/")
        for other in [*_holding(top, table), *below]:
            if other is mount or other.device != mount.device:
                continue
            base = other.root.rstrip(b"/")
            if shown != base and not shown.startswith(base + b"/"):
                continue
            place = other.point.rstrip(b"/") + shown[len(base) :]
            seen_there = place == top or place.startswith(top + b"/")
            if seen_there and place != mount.point and not place.startswith(mount.point + b"/"):
                found.append((mount.point, place))
                break
    return found
