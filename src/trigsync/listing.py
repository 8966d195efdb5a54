"""How a batch's changes become rsync's file list: whole directories where most changed.

rsync reads ``--files-from`` one byte per ``poll()`` and ``read()`` (io.c ``read_line``
calls ``safe_read(fd, &ch, 1)``): a 20,000-path list cost its client about 0.5 s of
CPU here, more than half of a whole ``rsync -a`` of the same tree. An entry written as
``dir/`` makes rsync send that directory and everything directly in it, without
recursing further (``--dirs`` semantics). So where at least half of a directory's
entries are in the batch, listing ``dir/`` once replaces listing each of them.

Such a run may deliver entries that are not in the batch yet (created after it was
taken); the dispatcher therefore treats changes that arrive just after it like changes
that arrive during it (see ``PendingSet.extend``'s ``in_flight``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .changes import Change, Kind

# Fewer changed entries than this in one directory are listed one by one.
LEAST = 16


Counter = Callable[[bytes, int], int | None]


def entries(
    changes: Sequence[Change], count: Counter, *, least: int = LEAST
) -> tuple[list[bytes], list[bytes]]:
    """rsync list entries for ``changes``, and the directories listed whole.

    ``count(dir, limit)`` tells how many entries the source directory holds now, and
    may stop counting past ``limit``; None if it is no longer a directory (a symlink
    included: ``dir/`` would follow it). Deleted paths are always listed on their own,
    so ``--delete-missing-args`` removes them.
    """
    children: dict[bytes, int] = {}
    for change in changes:
        if change.kind is not Kind.DELETED:
            parent = change.path.rpartition(b"/")[0]
            if parent:  # the root is never listed whole
                children[parent] = children.get(parent, 0) + 1
    whole = [
        parent
        for parent, n in children.items()
        if n >= least and (total := count(parent, 2 * n)) is not None and 2 * n >= total
    ]
    if not whole:
        return [c.path for c in changes], []
    listed = set(whole)
    out = [parent + b"/" for parent in whole]
    for change in changes:
        path = change.path
        if path in listed and change.kind is not Kind.DELETED:
            continue  # "dir/" sends the directory itself too
        if change.kind is not Kind.DELETED and path.rpartition(b"/")[0] in listed:
            continue
        out.append(path)
    return out, whole
