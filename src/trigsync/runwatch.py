"""Whether a child process tree is making progress, from its counters in /proc.

rsync's own ``--timeout`` does not fire when the peer goes silent without closing the
connection (a peer that died without a FIN, a firewall that starts dropping): the
client then waits in ``select`` forever. A frozen rsync and its children (ssh, or a
local receiver) read nothing and use no CPU, so the sum of their read counters
(``/proc/PID/io`` rchar) and CPU ticks stops moving; anything else moves it. Writes do
not count: with ``--timeout`` a sender whose peer froze after the last file still
writes a 4-byte keepalive every second into the dead connection, for ever, while a live
peer's keepalives through a long silent phase (a deletion scan) are reads on our side.
``watch`` samples them while a run goes on and says when to end it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

PROC = "/proc"
POLL = 1.0  # how often a run's progress is sampled, at most


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return data.rsplit(b")", 1)[1].split()


def _parents() -> dict[int, int]:
    """pid -> ppid for every process we can see (this kernel has no /proc/PID/task/*/children)."""
    out: dict[int, int] = {}
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is not None:
            out[int(name)] = int(fields[1])
    return out


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def _io(pid: int) -> int:
    try:
        with open(f"{PROC}/{pid}/io", "rb") as f:
            text = f.read()
    except OSError:  # gone, or another user's (ptrace rules): CPU ticks still count
        return 0
    total = 0
    for line in text.splitlines():
        key, _, value = line.partition(b":")
        if key == b"rchar":
            total += int(value)
    return total


def _cpu(pid: int) -> int:
    fields = _stat_fields(pid)
    # utime and stime are fields 14 and 15; fields[0] here is field 3.
    return 0 if fields is None else int(fields[11]) + int(fields[12])


def counters(pids: Iterable[int]) -> tuple[int, ...]:
    """One sample per process: bytes read plus CPU ticks. Equal samples mean no progress."""
    return tuple(_io(pid) + _cpu(pid) for pid in pids)


def sample(pid: int) -> tuple[tuple[int, int], ...]:
    """A comparable snapshot of the whole tree below ``pid`` (a new child is progress too)."""
    tree = descendants(pid)
    return tuple(zip(tree, counters(tree), strict=True))


async def watch(
    pid: int,
    talk: asyncio.Future[Any],
    started: float,
    watchdog: float | None,
    stall: float | None,
) -> str | None:
    """Wait for ``talk``; returns why the run must be ended ("stall", "watchdog"), or None."""
    if stall is None and watchdog is None:
        await asyncio.wait({talk})
        return None
    poll = min(POLL, stall / 4) if stall else POLL
    last: object = None  # no sample before the first poll: a quick run never pays for one
    last_at = started
    while True:
        done, _ = await asyncio.wait({talk}, timeout=poll)
        if done:
            return None
        now = time.monotonic()
        if watchdog is not None and now - started >= watchdog:
            return "watchdog"
        if stall is None:
            continue
        current = sample(pid)
        if current != last:
            log.debug("rsync %d: progress %r", pid, current)
            last, last_at = current, now
        elif now - last_at >= stall:
            return "stall"
