"""A standby rsync: started, connected and logged in, waiting on stdin for its list.

Most of a small batch's cost is rsync's start-up, connect and login; a standby has paid
it before the next change arrives. It counts against a daemon's ``max connections``,
and it is recycled before rsync's ``--timeout`` or the daemon's own timeout drops it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from . import rsync

log = logging.getLogger(__name__)


class Standby:
    """Runs each list through a waiting rsync when one is fresh, else through a new one."""

    def __init__(
        self, *, enabled: bool, timeout: int, env: Mapping[str, str] | None, name: str
    ) -> None:
        self.enabled = enabled
        self.env = env
        self.name = name
        self._proc: asyncio.subprocess.Process | None = None
        self._since = 0.0
        # Both rsync's --timeout and a daemon's own timeout drop an idle standby.
        self._recycle = max(1.0, timeout * 0.5)

    async def run(self, argv: Sequence[rsync.Arg], paths: bytes) -> rsync.Result:
        """Send ``paths`` with ``argv``; afterwards, a new standby waits for the next list."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.returncode is None and time.monotonic() - self._since < self._recycle:
                result = await rsync.finish(proc, paths)
                if result.outcome is rsync.Outcome.OK:
                    await self.prepare(argv)
                    return result
                # The peer may have dropped an idle standby: the batch goes again, fresh.
                log.debug("%s: standby failed (exit %d); running afresh", self.name, result.code)
            else:
                await rsync.stop(proc)
        result = await rsync.run(argv, stdin=paths, env=self.env)
        if result.outcome is rsync.Outcome.OK:
            await self.prepare(argv)
        return result

    async def prepare(self, argv: Sequence[rsync.Arg]) -> None:
        """Start the next run now, unless one is waiting already or standbys are off."""
        if self.enabled and self._proc is None:
            proc = await rsync.spawn(argv, stdin=True, env=self.env)
            if self.enabled and self._proc is None:
                self._proc, self._since = proc, time.monotonic()
            else:  # another lane got there first, or we are closing
                await rsync.stop(proc)

    async def drop(self) -> None:
        """Stop the waiting rsync, if any; no more are started after ``disable``."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await rsync.stop(proc)

    def disable(self) -> None:
        self.enabled = False
