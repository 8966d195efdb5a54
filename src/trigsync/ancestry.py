"""Keeps rsync's path list from reaching through a directory swapped for a symlink.

``--files-from`` implies ``--relative``, and rsync's sender follows a symlink in any
directory above a listed name: with ``d/f`` listed and ``d`` replaced by a symlink to
``/etc``, it copies ``/etc/f`` onto the replica, as root. The source is hostile input
(uploaders write there), so each list is checked right before rsync gets it: an entry
below an ancestor that exists and is not a real directory is replaced by that ancestor,
which rsync then sends as what it is (a symlink, a file). A deleted path below it is
covered the same way: the ancestor's entry makes the replica's copy what the source has.

The check narrows the race to the few milliseconds between it and rsync's open; the
kernel-enforced view of ``sourceview.py`` (no symlink followed below the source) closes
it where it can be set up.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable

# Whether a relative path exists now and is not a directory (a symlink is not one).
NotDir = Callable[[bytes], bool]


def confine(entries: Iterable[bytes], not_dir: NotDir) -> list[bytes]:
    """``entries`` with each one below a non-directory ancestor replaced by that ancestor.

    An entry written ``dir/`` (rsync sends the directory and its entries) needs ``dir``
    itself to be a directory too. The order is kept; an ancestor is listed once.
    ``not_dir`` is asked once per ancestor, and each entry costs one lookup of its
    parent: a 20,000-path list in 200 directories asks 200 times.
    """
    blockers: dict[bytes, bytes | None] = {b"": None, b".": None}
    out: list[bytes] = []
    seen: set[bytes] = set()
    for entry in entries:
        path = entry.rstrip(b"/")
        # The entry itself is sent as what it is, unless written "dir/" (rsync follows it).
        parent = path if len(path) < len(entry) else path.rpartition(b"/")[0]
        blocker = _blocker(parent, blockers, not_dir)
        listed = entry if blocker is None else blocker
        if listed not in seen:
            seen.add(listed)
            out.append(listed)
    return out


def _blocker(directory: bytes, known: dict[bytes, bytes | None], not_dir: NotDir) -> bytes | None:
    """The highest of ``directory`` and its ancestors that is not a directory, if any."""
    unknown: list[bytes] = []
    while directory not in known:
        unknown.append(directory)
        directory = directory.rpartition(b"/")[0].rstrip(b"/")  # "a//b": no empty name
    found = known[directory]
    for directory in reversed(unknown):  # top down: the highest one wins
        if found is None and not_dir(directory):
            found = directory
        known[directory] = found
    return found


def lstat_not_dir(source: bytes) -> NotDir:
    """A cached ``NotDir`` for one list, by ``lstat`` below ``source`` (one call each)."""
    cache: dict[bytes, bool] = {}

    def not_dir(rel: bytes) -> bool:
        known = cache.get(rel)
        if known is None:
            try:
                known = not stat.S_ISDIR(os.lstat(source + b"/" + rel).st_mode)
            except FileNotFoundError:
                known = False  # gone: the entries below it are deletions, sent as they are
            except OSError:
                known = True  # unreadable, a loop (ELOOP in the nosymfollow view): not safe
            cache[rel] = known
        return known

    return not_dir


def confine_below(source: bytes, entries: Iterable[bytes]) -> list[bytes]:
    """``confine`` against the source as it is on disk now."""
    return confine(entries, lstat_not_dir(source))
