"""Which pending paths may run beside the runs in flight, and when another run pays.

Pure logic for ``max_parallel``: runs overlap only on disjoint paths, so order holds
(never the same path, a parent or a child of it, nor an entry of a directory that a run
lists whole), and a run beside others starts only under load, because each one costs a
connection of its own, or when a standby has already paid for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from .changes import Batch, PendingSet, ancestors

# A run beside one in flight pays for its own connection when this many paths wait, or
# when the oldest has waited this long (a small change behind a big file, say).
PARALLEL_AT = 1000
PARALLEL_AFTER = 0.2
# Most paths one run takes. A storm is then sent as it is written, in runs that overlap
# (one builds its file list while another transfers), and what is left after the last
# write is a run or two, not one run of everything that piled up meanwhile: rsync reads
# its whole list, one byte per system call, before it sends the first file.
CHUNK = 4000
# Fewer than this are not split: a run costs ~10 ms of rsync start and daemon login.
CHUNK_MIN = 1000


def chunk(waiting: int, lanes: int) -> int:
    """How many of ``waiting`` paths the next run takes: what is left is shared out over
    the ``lanes`` in smaller runs as it shrinks, so that they end together rather than
    one of them alone with a big last run."""
    return max(CHUNK_MIN, min(CHUNK, -(-waiting // (2 * lanes))))


class Flight(NamedTuple):
    """A run in flight: its batch, its oldest change, and the directories it lists whole."""

    batch: Batch
    since: float | None
    whole: frozenset[bytes] = frozenset()
    # The paths it deletes: one made again meanwhile may still be on the target after it
    # (the run found it there again on the source, and sent it rather than deleting it).
    deleted: frozenset[bytes] = frozenset()


def alone(flights: Iterable[Flight]) -> bool:
    """Whether a run in flight must run alone: a full sync or renames touch any path."""
    return any(f.batch.full or f.batch.moves for f in flights)


def busy(flights: Iterable[Flight]) -> Callable[[bytes], bool]:
    """A test for the paths that must wait for the runs in flight."""
    flights = list(flights)
    claimed = {c.path for f in flights for c in f.batch.changes}
    above = {a for p in claimed for a in ancestors(p)}
    whole = frozenset[bytes]().union(*(f.whole for f in flights))

    def test(path: bytes) -> bool:
        if path in claimed or path in above:
            return True
        parent = path.rpartition(b"/")[0]
        if parent in whole:
            return True
        while parent:  # what ancestors() gives, without a generator per path (a storm's)
            if parent in claimed:
                return True
            parent = parent.rpartition(b"/")[0]
        return False

    return test


def worth_another_run(waiting: int, oldest_age: float | None, *, connected: bool = False) -> bool:
    """Whether ``waiting`` paths, the oldest ``oldest_age`` seconds old, pay for a run.

    A standby that is ``connected`` already paid for its connection: a change then goes
    at once rather than wait for the run in flight to exit, which is 5 to 40 ms after
    its files landed (rsync's closing handshake, slower still on a daemon with Nagle on).
    """
    if waiting and connected:
        return True
    return waiting >= PARALLEL_AT or (oldest_age is not None and oldest_age >= PARALLEL_AFTER)


def due_in(oldest_age: float | None) -> float | None:
    """Seconds until the waiting paths are old enough for a run of their own, if ever."""
    if oldest_age is None or oldest_age >= PARALLEL_AFTER:
        return None
    return PARALLEL_AFTER - oldest_age


def take(
    pending: PendingSet,
    flights: Iterable[Flight],
    *,
    single: bool,
    waited: float | None,
    connected: bool = False,
    lanes: int = 2,
) -> Batch | None:
    """The next batch, or None while everything pending touches a run in flight (or
    another run beside them does not pay, or ``single``: one run at a time for now).
    ``connected``: a standby is logged in and waiting, so another run costs nothing."""
    flights = list(flights)
    limit = chunk(len(pending), 1 if single else lanes)
    if not flights:
        return pending.take(limit=limit) or None
    if single or not worth_another_run(len(pending), waited, connected=connected):
        return None
    if pending.full or pending.has_moves or alone(flights):
        return None  # these run alone
    return pending.take(busy(flights), limit=limit) or None
