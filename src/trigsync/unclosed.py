"""Files written and not yet closed: ``truncate(2)``, ``mmap``, a log kept open, a file
still being written when its new directory was listed.

Most writes end with IN_CLOSE_WRITE, which is when a file is sent. A file modified and
not closed is reported once its writes have been quiet for ``settle`` seconds, or after
``longest`` seconds of writing without a pause, so a log that is never closed still
reaches the targets.
"""

from __future__ import annotations

Key = tuple[int, bytes]  # (parent watch descriptor, name)


class UnclosedWrites:
    """When each file was first modified since its last close, and when it is due."""

    def __init__(self, settle: float, longest: float = 30.0) -> None:
        self.settle = settle
        self.longest = longest
        self._times: dict[Key, tuple[float, float]] = {}  # key -> (first write, quiet until)

    def __bool__(self) -> bool:
        return bool(self._times)

    def __len__(self) -> int:
        return len(self._times)

    def __contains__(self, key: Key) -> bool:
        return key in self._times

    def touch(self, key: Key, now: float) -> None:
        """A write at ``now``: due once quiet for ``settle``."""
        self.hold(key, now, now + self.settle)

    def hold(self, key: Key, now: float, until: float) -> None:
        """Due at ``until`` unless written again (or closed) before."""
        first = self._times.get(key, (now, now))[0]
        self._times[key] = (first, until)

    def discard(self, key: Key) -> None:
        self._times.pop(key, None)

    def clear(self) -> None:
        self._times.clear()

    def _due_at(self, first: float, quiet: float) -> float:
        return min(quiet, first + self.longest)

    def due(self, now: float) -> list[Key]:
        """Forget and return the files whose writes have settled by ``now``."""
        settled = [k for k, times in self._times.items() if self._due_at(*times) <= now]
        for key in settled:
            del self._times[key]
        return settled

    def next_due(self) -> float | None:
        return min((self._due_at(*t) for t in self._times.values()), default=None)
