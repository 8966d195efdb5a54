"""rsync exit 23, "partial transfer": which paths it refused, found by halves, and set aside.

A path that rsync cannot deliver (unreadable on the source, refused by the receiver)
must not hold back the rest of its batch: the batch is split in halves and each half
sent again until the refused paths are alone; everything else is delivered on the way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from . import rsync
from .changes import Batch, Change, Kind
from .rsync import PARTIAL

log = logging.getLogger(__name__)

Send = Callable[[Sequence[Change]], Awaitable[rsync.Result]]


async def refused(changes: Sequence[Change], send: Send, name: str) -> list[Change]:
    """The changes of a batch that exited 23 which rsync refuses on their own."""
    if len(changes) == 1:
        return list(changes)
    failing: list[Change] = []
    middle = len(changes) // 2
    for half in (changes[:middle], changes[middle:]):
        result = await send(half)
        if result.code == PARTIAL and len(half) == 1:
            log.warning("%s: %s", name, rsync.reason(result.stderr))
            failing += half
        elif result.code == PARTIAL:
            failing += await refused(half, send, name)
        else:
            rsync.raise_for(result, f"target {name}")
    return failing


class Aside:
    """Paths rsync cannot deliver (unreadable, refused by the receiver), retried slowly on
    their own, so they never hold back the paths that do go through."""

    def __init__(self, name: str, every: float, resubmit: Callable[[Batch], None]) -> None:
        self.name = name
        self.every = every
        self._resubmit = resubmit
        self._paths: dict[bytes, Kind] = {}

    def add(self, failing: Sequence[Change]) -> str:
        """Set ``failing`` aside for ``every`` seconds; returns the error line to report."""
        names = ", ".join(repr(c.path) for c in failing[:3])
        more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        error = (
            f"target {self.name}: rsync exit 23 (partial transfer) for {names}{more}; "
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
