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

A daemon's ``max connections`` counts every standby and every run. Until it refuses one,
nothing here counts connections, so an unlimited receiver sees no difference. Once it
refuses one, the pool knows the daemon's limit (its message names it), and then:

- it starts no standby that would pass the limit, counting its standbys, its runs, the
  ones being stopped, and those that ended in the last ``slot_freed`` s (the daemon
  frees a client's slot about 0.1 s after the client is gone);
- a standby recycled at the limit is stopped *before* its replacement starts, and the
  replacement starts once that slot is free, not beside it, which the daemon refuses
  (a change in that gap runs fresh, once the slot is free);
- a refusal at a known limit means the pool asked too soon: ``slot_freed`` doubles (once
  per run of refusals, up to ``SLOT_FREED_MAX``), and refusals in a row back off; each
  connection let in shrinks it again by a quarter, down to ``SLOT_FREED``;
- with no refusal for ``LIMIT_KEPT`` (10 minutes), the limit is forgotten: a raised
  ``max connections`` is used without a restart.

The clock is passed in, so tests drive it by hand.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Hashable, Iterator
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
# A daemon frees a slot about 0.1 s after its client has gone: rsync 3.5.0 on loopback
# refused a client up to 90 ms after the last one was killed and let one in from 100 ms,
# idle or with every CPU busy. A refusal at the known limit doubles the wait.
SLOT_FREED = 0.15
SLOT_FREED_MAX = 1.0
SLOT_FREED_SHRINK = 0.75  # per connection let in
BUSY_MAX = 5.0  # the longest pause between tries while the daemon stays full (s)
# A limit learned from a refusal is forgotten after this long without another: the
# operator may have raised `max connections` (rsyncd reads its config per connection),
# or the other client that held slots is gone. If it still holds, the next refusal of a
# standby teaches it again, at the cost of that one login.
LIMIT_KEPT = 600.0


class Recycle(enum.Enum):
    """What becomes of a standby recycled unused."""

    REPLACE = "replace"  # it serves until its replacement is ready
    STOP = "stop"  # others wait: it goes, and none replaces it
    STOP_FIRST = "stop first"  # at the daemon's limit: it goes, its replacement comes after


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
        self.limit: int | None = None  # the daemon's max connections, once it refused one
        self.runs = 0  # lists in flight: each holds a connection
        self._going = 0  # standbys being stopped, not exited yet
        self._freeing: list[float] = []  # when the slots of connections that ended free
        self._not_before = 0.0  # no standby is started before this (after a refusal)
        self.slot_freed = SLOT_FREED
        self._refusals = 0  # in a row, since the last login
        self._refused_at = float("-inf")  # the last refusal: the limit is kept LIMIT_KEPT

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
            self._let_in()

    def surplus(self, alive: Callable[[H], bool] = lambda _: True) -> bool:
        """Whether more standbys wait, logged in, than the pool's depth: a hedge and the
        stalled login beside it both got through. One is enough; the other would hold a
        connection for nothing until its recycle (at a daemon's ``max connections``,
        a slot that another client then cannot get). One that has exited, and is not
        removed yet, does not count: its live twin is then no surplus."""
        ready = sum(
            1
            for h, s in self._spares.items()
            if s.ready is not None and not s.retiring and alive(h)
        )
        return ready > self.depth

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
        if self._spares.pop(handle, None) is not None:
            self.runs += 1  # its connection now carries a run (see ran)
        gap, self._last_take = now - self._last_take, now
        if not self.ready() and gap < self.slow_after():
            self.deepen()

    def run_fresh(self) -> None:
        """A list goes through a new connection (no standby took it)."""
        self.runs += 1

    def let_in(self) -> None:
        """A fresh run was let in: the daemon has room again, refusals in a row are over
        (else a standby waited out their back-off, up to BUSY_MAX, while each change paid
        a fresh login)."""
        self._let_in()
        self._not_before = 0.0

    def _let_in(self) -> None:
        """The daemon let a connection in: the refusals in a row are over, and the wait
        for a slot to free, doubled by refusals, shrinks back towards SLOT_FREED (else
        refusals that another client caused, or a halving's quick tries, left every
        later change at a limit of 1 waiting up to SLOT_FREED_MAX for good)."""
        self._refusals = 0
        self.slot_freed = max(SLOT_FREED, self.slot_freed * SLOT_FREED_SHRINK)

    def ran(self, now: float, *, refused: bool = False) -> None:
        """A run (a taken standby, or a fresh one) has ended: its connection closed, or
        it was refused one (then it held no slot)."""
        self.runs = max(0, self.runs - 1)
        if not refused:
            self.closed(now)

    def stopping(self, handle: H) -> bool:
        """``handle`` is being stopped: it takes no list, but holds its connection until
        ``gone``. Returns whether it was in the pool."""
        if self._spares.pop(handle, None) is None:
            return False
        self._going += 1
        return True

    def gone(self, now: float) -> None:
        """A standby being stopped has exited."""
        self._going = max(0, self._going - 1)
        self.closed(now)

    def closed(self, now: float) -> None:
        """A connection of ours has ended (a standby exited by itself, say)."""
        if self.limit is not None:  # the daemon lets go of its slot a little later
            self._freeing.append(now + self.slot_freed)

    def held(self, now: float) -> int:
        """The daemon's slots that ours hold now, as far as this side can tell."""
        self._freeing = [t for t in self._freeing if t > now]
        return self._open() + len(self._freeing)

    def free_in(self, now: float) -> float:
        """Seconds until a fresh run fits the daemon's limit, as far as that waits for the
        daemon to free slots of ours that closed; 0 if it need not, if a standby will take
        the list, or if open connections fill the limit (then waiting would not help)."""
        self._forget_limit(now)
        if self.limit is None or self._spares:  # a list goes to a standby: no new one
            return 0.0
        over = self.held(now) - self.limit + 1
        freeing = sorted(self._freeing)
        if over <= 0 or over > len(freeing):
            return 0.0
        return freeing[over - 1] - now

    def _open(self) -> int:
        """Our connections that are still open: standbys, runs, and those being stopped."""
        return len(self._spares) + self.runs + self._going

    def deepen(self) -> None:
        self.depth = min(self.max_depth, self.limit or self.max_depth, self.depth + 1)

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
        not, but they hold connections, so at most ``HEDGES`` of them come on top. At a
        known limit, none that would pass it, and none during the pause after a refusal.
        """
        self._forget_limit(now)
        wanted = self._wanted(now, starting)
        if self.limit is None or not wanted:
            return wanted
        if now < self._not_before:
            return 0
        return max(0, min(wanted, self.limit - self.held(now) - starting))

    def _forget_limit(self, now: float) -> None:
        """No refusal for LIMIT_KEPT: the daemon may allow more now (see LIMIT_KEPT)."""
        if self.limit is not None and now - self._refused_at >= LIMIT_KEPT:
            self.limit = None
            self.slot_freed = SLOT_FREED
            self._freeing.clear()
            self._refusals = 0  # the next refusal starts a streak of its own

    def _wanted(self, now: float, starting: int) -> int:
        slow = set(self.slow(now))
        counted = starting + sum(
            1 for h, s in self._spares.items() if h not in slow and not s.retiring
        )
        room = self.depth + HEDGES - len(self._spares) - starting
        return max(0, min(self.depth - counted, room))

    def blocked_for(self, now: float, starting: int) -> float | None:
        """Seconds until the limit may let a wanted standby start: the end of the pause
        after a refusal, or a slot freed; None if none is held back, or none will free
        by itself (a run's end, or a stop, says so then)."""
        if self.limit is None or self.to_start(now, starting) >= self._wanted(now, starting):
            return None
        times = [t for t in (*self._freeing, self._not_before) if t > now]
        return min(times) - now if times else None

    def retire(self, handle: H) -> Recycle:
        """A standby waited unused for the recycle age: the pool shrinks by one. If the
        pool needs a replacement, it serves until the replacement is ready, unless a
        replacement beside it would pass the daemon's limit: then it goes first."""
        spare = self._spares.get(handle)
        if spare is None:
            return Recycle.STOP
        self.depth = max(1, self.depth - 1)
        spare.retiring = True
        others = sum(1 for s in self._spares.values() if not s.retiring)
        if others >= self.depth:
            return Recycle.STOP
        # A slot that is only freeing (a run just ended) delays the replacement, no more.
        if self.limit is not None and self._open() >= self.limit:
            return Recycle.STOP_FIRST
        return Recycle.REPLACE

    def retiring(self) -> list[H]:
        return [h for h, s in self._spares.items() if s.retiring]

    def refused(self, now: float, limit: int | None) -> None:
        """A connection was refused at the daemon's max connections (``limit``, when its
        message says): the pool now keeps to it, and asks again only after a pause."""
        if self.limit is not None and not self._refusals:
            # It waited what a slot took to free before, and that was too short.
            self.slot_freed = min(SLOT_FREED_MAX, self.slot_freed * 2)
        self.limit = limit or max(1, self.held(now))
        self._refused_at = now
        self._refusals += 1
        self._not_before = now + min(BUSY_MAX, self.slot_freed * 2 ** (self._refusals - 1))
        alive = sum(1 for s in self._spares.values() if not s.retiring)
        if alive:  # no more than those waiting now: a deeper pool would be refused
            self.depth = max(1, alive)
