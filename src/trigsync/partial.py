"""Paths rsync refuses (exit 23, partial transfer; exit 11, the receiver could not write):
which ones, found by halves, and set aside.

A path that rsync cannot deliver (unreadable on the source, refused by the receiver, a
file too big for the receiver's free space) must not hold back the rest of its batch:
the batch is split in halves and each half sent again until the refused paths are
alone; everything else is delivered on the way. Exit 11 aborts the run at the first
file it cannot write, so the paths after it in rsync's order are not sent either: only
halving tells them apart. A receiver whose disk is full refuses every half, so the runs
of one isolation are bounded (``MAX_RUNS``): the halves not split by then are set aside
whole and split again at their next retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from . import rsync
from .changes import Batch, Change, Kind

log = logging.getLogger(__name__)

Send = Callable[[Sequence[Change]], Awaitable[rsync.Result]]

# Runs one isolation may make: finding one refused path among a million takes 40, and a
# full disk refuses every half, so this is what such a disk costs per retry.
MAX_RUNS = 32


@dataclass(frozen=True, slots=True)
class Refused:
    """The changes rsync refused, and the run that refused the last of them."""

    changes: list[Change]
    result: rsync.Result


async def refused(changes: Sequence[Change], send: Send, name: str, first: rsync.Result) -> Refused:
    """The changes of a batch that ``first`` refused (exit 23 or 11), split out by halves
    breadth first, at most ``MAX_RUNS`` runs; a half not split by then is refused whole."""
    failing: list[Change] = []
    last = first
    todo = deque([changes])
    runs = 0
    while todo:
        part = todo.popleft()
        if len(part) == 1 or runs + 2 > MAX_RUNS:
            failing += part
            continue
        middle = len(part) // 2
        for half in (part[:middle], part[middle:]):
            result = await send(half)
            runs += 1
            if result.refused:
                last = result
                if len(half) == 1:
                    log.warning("%s: %s", name, rsync.reason(result.stderr))
                todo.append(half)
            else:
                rsync.raise_for(result, f"target {name}")
    if todo or runs >= MAX_RUNS:
        log.info("%s: %d isolation runs; %d paths set aside", name, runs, len(failing))
    return Refused(failing, last)


class Aside:
    """Paths rsync cannot deliver (unreadable, refused by the receiver), retried slowly on
    their own, so they never hold back the paths that do go through."""

    def __init__(self, name: str, every: float, resubmit: Callable[[Batch], None]) -> None:
        self.name = name
        self.every = every
        self._resubmit = resubmit
        self._paths: dict[bytes, Kind] = {}

    def add(self, refused: Refused) -> str:
        """Set the refused changes aside for ``every`` seconds; returns the error line."""
        failing, result = refused.changes, refused.result
        names = ", ".join(repr(c.path) for c in failing[:3])
        more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        error = (
            f"target {self.name}: rsync exit {result.code} ({rsync.describe(result.code)}) "
            f"for {names}{more}: {rsync.reason(result.stderr)}; "
            f"retrying them every {self.every:.0f} s"
        )
        log.error("%s", error)
        self._paths.update((c.path, c.kind) for c in failing)
        asyncio.get_running_loop().call_later(self.every, self._retry)
        return error

    def changes(self) -> tuple[Change, ...]:
        return tuple(Change(p, k) for p, k in self._paths.items())

    def _retry(self) -> None:
        batch, self._paths = Batch(self.changes()), {}
        self._resubmit(batch)
