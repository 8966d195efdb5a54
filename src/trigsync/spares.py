"""The standby pool's policy, pure: which waiting rsync takes a list, and how many to start.

A standby is *logging in* from its start until it reads the first byte of its stdin (a
NUL that rsync skips as an empty name; see ``standby``), then *ready*. Its login is the
cost it hides: 5-15 ms to a stock daemon on loopback, but about one in four (at random)
waits ~45 ms more, when the daemon's two small writes in a row meet our delayed ACK
(Nagle), and 150 ms or more over ssh to a host with a slow shell. So:

- a list goes to the ready standby that has waited longest (it is the nearest to a
  peer's idle timeout), never to one still logging in while another is ready;
- a login that takes much longer than the recent fast ones is *slow* (stalled): it no
  longer counts towards the pool, so another starts beside it, and whichever is ready
  first takes the next list (the slow one stays and serves later);
- the pool deepens while changes find no ready standby, or come closer together than
  a login takes, up to ``max_depth``, and shrinks by one each time a standby waited
  unused until it was recycled.

The clock is passed in, so tests drive it by hand.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

H = TypeVar("H", bound=Hashable)

# Measured back to back on a stock daemon (docs/performance.md): a fixed 3 was too few to
# cover stalled logins, and 8 that were routed by age alone did no better.
MAX_DEPTH = 4
HEDGES = 1  # at most this many slow logins beside the pool (each holds a connection)
SLOW_MIN = 0.015  # a login is never slow before this (s)
SLOW_FACTOR = 2.0  # ... nor before this many times a typical recent login
SLOW_DEFAULT = 0.03  # until a login was seen
LOGINS_KEPT = 16


@dataclass(slots=True)
class _Spare:
    born: float
    ready: float | None = None
    retiring: bool = False  # recycled: it serves until its replacement is ready


class Pool(Generic[H]):
    """The state of one target's standbys, and the decisions that follow from it."""

    def __init__(self, max_depth: int = MAX_DEPTH) -> None:
        self.max_depth = max_depth
        self.depth = 1
        self._spares: dict[H, _Spare] = {}
        self._logins: deque[float] = deque(maxlen=LOGINS_KEPT)
        self._last_take = float("-inf")

    def __contains__(self, handle: object) -> bool:
        return handle in self._spares

    def __iter__(self) -> Iterator[H]:
        return iter(list(self._spares))

    def __len__(self) -> int:
        return len(self._spares)

    def add(self, handle: H, now: float) -> None:
        self._spares[handle] = _Spare(now)

    def remove(self, handle: H) -> bool:
        """Forget a standby that exited or was stopped; whether it was in the pool."""
        return self._spares.pop(handle, None) is not None

    def mark_ready(self, handle: H, now: float) -> None:
        spare = self._spares.get(handle)
        if spare is not None and spare.ready is None:
            spare.ready = now
            self._logins.append(now - spare.born)

    def logging_in(self) -> list[H]:
        return [h for h, s in self._spares.items() if s.ready is None]

    def ready(self) -> list[H]:
        """The ready standbys, longest waiting first."""
        ready = [(s.ready, h) for h, s in self._spares.items() if s.ready is not None]
        return [h for _, h in sorted(ready, key=lambda pair: pair[0])]

    def born(self, handle: H) -> float | None:
        spare = self._spares.get(handle)
        return spare.born if spare is not None else None

    def pick(self) -> H | None:
        """The standby the next list goes to now, if one is ready."""
        ready = self.ready()
        return ready[0] if ready else None

    def oldest(self) -> H | None:
        """The standby that started first (the list's fallback when none gets ready)."""
        return next(iter(self._spares), None)

    def take(self, handle: H, now: float) -> None:
        """``handle`` takes a list. If that leaves none ready and this list came sooner
        after the last than a login takes, changes outrun the logins: deepen. A change
        every 40 s that takes the only standby is no such sign; deepening then only
        started a second and third login beside each change, for the recycle to stop."""
        self._spares.pop(handle, None)
        gap, self._last_take = now - self._last_take, now
        if not self.ready() and gap < self.slow_after():
            self.deepen()

    def deepen(self) -> None:
        self.depth = min(self.max_depth, self.depth + 1)

    def slow_after(self) -> float:
        """How long a login may take before it counts as stalled."""
        if not self._logins:
            return SLOW_DEFAULT
        typical = sorted(self._logins)[len(self._logins) // 4]  # a fast one, not the mean
        return max(SLOW_MIN, SLOW_FACTOR * typical)

    def slow(self, now: float) -> list[H]:
        limit = self.slow_after()
        return [h for h, s in self._spares.items() if s.ready is None and now - s.born > limit]

    def to_start(self, now: float, starting: int) -> int:
        """How many standbys to start now, besides ``starting`` already on their way.

        Ready ones and logins in time count towards ``depth``; slow and retiring ones do
        not, but they hold connections, so at most ``HEDGES`` of them come on top.
        """
        slow = set(self.slow(now))
        counted = starting + sum(
            1 for h, s in self._spares.items() if h not in slow and not s.retiring
        )
        room = self.depth + HEDGES - len(self._spares) - starting
        return max(0, min(self.depth - counted, room))

    def retire(self, handle: H) -> bool:
        """A standby waited unused for the recycle age: the pool shrinks by one, and it
        serves until a replacement is ready. Returns whether a replacement is needed
        (else it is stopped at once)."""
        spare = self._spares.get(handle)
        if spare is None:
            return False
        self.depth = max(1, self.depth - 1)
        spare.retiring = True
        others = sum(1 for s in self._spares.values() if not s.retiring)
        return others < self.depth

    def retiring(self) -> list[H]:
        return [h for h, s in self._spares.items() if s.retiring]

    def refused(self) -> bool:
        """A standby was refused at the daemon's ``max connections``: keep the pool to
        the size the daemon allows. Returns whether others still wait (then that is all)."""
        alive = sum(1 for s in self._spares.values() if not s.retiring)
        if alive:
            self.depth = max(1, alive)
            return True
        return False
