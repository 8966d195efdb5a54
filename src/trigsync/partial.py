"""rsync exit 23, "partial transfer": which paths it refused, found by halves.

A path that rsync cannot deliver (unreadable on the source, refused by the receiver)
must not hold back the rest of its batch: the batch is split in halves and each half
sent again until the refused paths are alone; everything else is delivered on the way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from . import rsync
from .changes import Change
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
