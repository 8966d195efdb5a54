"""The reconciling full sync, which still deletes when part of the source cannot be read.

When the sender cannot read a directory, rsync says "IO error encountered -- skipping
file deletion" (on stdout), exits 23 and deletes nothing after that point: stale files stay on the replica
for good, whatever repair path (overflow, crash, reconcile, initial sync) asked for the
sync. ``--ignore-errors`` would be worse: the replica's copy of the unreadable directory
would look extra and be deleted. So the run is repeated with the unreadable directories
excluded (an excluded path is never deleted on the receiver): everything else is made
equal, deletions included, and the result stays PARTIAL so that the sync is retried.
The unreadable directories are found by a walk of the source after a run that exits 23,
(trigsync and rsync run as one user), not parsed from rsync's messages.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Awaitable, Callable, Mapping

from . import rsync
from .rsync import PARTIAL, Options, Result, Transport

log = logging.getLogger(__name__)

_WILDCARDS = (b"*", b"?", b"[")


async def run(
    source: bytes,
    opts: Options,
    transport: Transport,
    *,
    first: Callable[[list[rsync.Arg], Mapping[str, str] | None], Awaitable[Result]] | None = None,
    stall: float | None = rsync.STALL,
) -> Result:
    """One full sync; PARTIAL if some directories could not be read (they are skipped).

    ``first`` runs the first rsync instead of plain rsync.run (to report its progress)."""
    argv = rsync.full_argv(source, opts, transport)
    if first is not None:
        first_result = await first(argv, transport.env)
    else:
        first_result = await rsync.run(argv, env=transport.env, stall=stall)
    return await _around_unreadable(source, opts, transport, first_result, stall)


async def _around_unreadable(
    source: bytes, opts: Options, transport: Transport, first: Result, stall: float | None
) -> Result:
    """After a first run that exited 23: the rest again, unreadable directories excluded."""
    if first.code != PARTIAL:
        return first
    unreadable = await asyncio.to_thread(unreadable_dirs, source)
    if not unreadable:
        return first
    log.warning(
        "%s: %d source directories cannot be read (%r...); syncing the rest with deletions",
        transport.destination,
        len(unreadable),
        unreadable[0],
    )
    argv = rsync.full_argv(source, opts, transport, exclude_from_stdin=True)
    second = await rsync.run(argv, stdin=exclude_list(unreadable), env=transport.env, stall=stall)
    if second.outcome is rsync.Outcome.OK or second.code == PARTIAL:
        # The unreadable part is still unsynced: the sync as a whole stays incomplete.
        return Result(PARTIAL, first.stderr + second.stderr, first.seconds + second.seconds)
    return second


def unreadable_dirs(source: bytes) -> list[bytes]:
    """Directories below ``source`` (relative paths) that cannot be listed; not followed
    into symlinks, and not descended into."""
    found: list[bytes] = []
    stack = [b""]
    while stack:
        rel = stack.pop()
        path = source + b"/" + rel if rel else source
        try:
            with os.scandir(path) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError as exc:
            if exc.errno != errno.ENOENT and rel:
                found.append(rel)
            continue
        for name, is_dir in entries:
            stack.extend([rel + b"/" + name if rel else name] if is_dir else [])
    return sorted(found)


def exclude_list(dirs: list[bytes]) -> bytes:
    """NUL-separated rules for ``--exclude-from=- --from0``, each anchored at the root.

    rsync compares a pattern without wildcards literally, and one with wildcards by
    wildmatch, where a backslash escapes: so only names with wildcards are escaped.
    """
    rules = []
    for rel in dirs:
        rule = rel
        if any(w in rule for w in _WILDCARDS):
            rule = rule.replace(b"\\", b"\\\\")
            for w in _WILDCARDS:
                rule = rule.replace(w, b"\\" + w)
        rules.append(b"/" + rule + b"/\0")
    return b"".join(rules)
