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

Exclude regexes that have no rsync pattern (sersync's ``<filter>``) are honoured the same
way: a walk of the source lists what they match, and those paths go to rsync as anchored
excludes, so a full sync neither sends them nor deletes their replica copies.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence

from . import rsync
from .excludes import Excludes
from .rsync import PARTIAL, Options, Result, Transport

log = logging.getLogger(__name__)

_WILDCARDS = (b"*", b"?", b"[")

# Runs a full sync's first rsync (argv, env, stdin) instead of rsync.run: see progress.py.
FullSyncRunner = Callable[
    [list[rsync.Arg], Mapping[str, str] | None, bytes | None], Awaitable[Result]
]


async def run(
    source: bytes,
    opts: Options,
    transport: Transport,
    *,
    first: FullSyncRunner | None = None,
    stall: float | None = rsync.STALL,
) -> Result:
    """One full sync; PARTIAL if some directories could not be read (they are skipped).

    ``first`` runs the first rsync instead of plain rsync.run (to report its progress)."""
    matched, rules = await regex_rules(source, opts)
    argv = rsync.full_argv(source, opts, transport, exclude_from_stdin=rules is not None)
    if first is not None:
        first_result = await first(argv, transport.env, rules)
    else:
        first_result = await rsync.run(argv, stdin=rules, env=transport.env, stall=stall)
    return await _around_unreadable(
        source, opts, transport, first_result, stall=stall, matched=matched
    )


async def _around_unreadable(
    source: bytes,
    opts: Options,
    transport: Transport,
    first: Result,
    *,
    stall: float | None,
    matched: Matched,
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
    rules = exclude_list(sorted(set(unreadable) | set(matched[0])), matched[1])
    second = await rsync.run(argv, stdin=rules, env=transport.env, stall=stall)
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


Matched = tuple[list[bytes], list[bytes]]  # (directories, other entries), relative paths


async def regex_rules(
    source: bytes, opts: Options, below: Sequence[bytes] = (b"",)
) -> tuple[Matched, bytes | None]:
    """What the exclude regexes without an rsync pattern match now (in ``below``), and the
    rules for ``--exclude-from`` that exclude it (None when there is nothing to exclude)."""
    if not opts.regex_excludes:
        return ([], []), None
    regexes = Excludes((), opts.regex_excludes)
    matched = await asyncio.to_thread(regex_matches, source, regexes, below)
    return matched, exclude_list(*matched) if matched != ([], []) else None


def regex_matches(source: bytes, regexes: Excludes, below: Sequence[bytes] = (b"",)) -> Matched:
    """The entries below ``source`` that ``regexes`` exclude (not descended into), as
    directories and others; symlinks are not followed. ``below``: only in these
    directories (relative paths; b"" is the whole source)."""
    dirs: list[bytes] = []
    others: list[bytes] = []
    stack = list(below)
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(source + b"/" + rel if rel else source) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError:
            continue  # gone, or unreadable: rsync says so, and _around_unreadable copes
        for name, is_dir in entries:
            path = rel + b"/" + name if rel else name
            if regexes.excludes(path, is_dir=is_dir):
                (dirs if is_dir else others).append(path)
            elif is_dir:
                stack.append(path)
    return sorted(dirs), sorted(others)


def exclude_list(dirs: Sequence[bytes], others: Sequence[bytes] = ()) -> bytes:
    """NUL-separated rules for ``--exclude-from=- --from0``, each anchored at the root;
    a directory's rule ends in ``/``.

    rsync compares a pattern without wildcards literally, and one with wildcards by
    wildmatch, where a backslash escapes: so only names with wildcards are escaped.
    """
    rules = []
    for rel, tail in [*((d, b"/") for d in dirs), *((o, b"") for o in others)]:
        rule = rel
        if any(w in rule for w in _WILDCARDS):
            rule = rule.replace(b"\\", b"\\\\")
            for w in _WILDCARDS:
                rule = rule.replace(w, b"\\" + w)
        rules.append(b"/" + rule + tail + b"\0")
    return b"".join(rules)
