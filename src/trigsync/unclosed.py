"""What is known about each file name: written and not closed yet, never reported, when
last reported. Unclosed: ``truncate(2)``, ``mmap``, a log kept open, a file still being
written when its new directory was listed.

Most writes end with IN_CLOSE_WRITE, which is when a file is sent. A file modified and
not closed is reported once its writes have been quiet for ``settle`` seconds, or after
``longest`` seconds of writing without a pause, so a log that is never closed still
reaches the targets.
"""

from __future__ import annotations

from collections.abc import Iterable

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

    def held(self) -> Iterable[Key]:
        return self._times.keys()

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


MAX_FRESH = 65536
MAX_REPORTED = 65536


class FileStates:
    """What the translator knows about each file name, by (parent wd, name).

    fresh: created and never reported; unclosed: written and not closed since;
    created_now: reported NEW in the batch being built (later changes in that batch merge
    into it); reported: when each file was last reported.

    A fresh file goes out NEW only from the batch that saw it created. Once a batch has
    gone by, a run may have listed its name for another reason (an earlier deletion of
    the name) and delivered it, so it goes out CHANGED and its deletion still travels.
    """

    def __init__(self, settle: float, young: float) -> None:
        self.unclosed = UnclosedWrites(settle)
        self.young = young
        self._fresh: dict[Key, int] = {}  # -> the batch that saw it created
        self._created_now: set[Key] = set()
        self._batch = 0
        self._reported: dict[Key, float] = {}  # oldest first

    def is_fresh(self, key: Key) -> bool:
        return key in self._fresh

    def created_now(self, key: Key) -> bool:
        return key in self._created_now

    def unreported(self, key: Key) -> bool:
        """Whether ``key`` is held (created or written, not closed) and was not reported
        since it was created."""
        return key in self.unclosed and key not in self._reported

    def hold(self, key: Key, now: float, until: float, *, fresh: bool) -> None:
        """Report ``key`` at its close, or at ``until`` unless written again before."""
        if not fresh:
            self._fresh.pop(key, None)
        else:
            if len(self._fresh) >= MAX_FRESH:
                self._fresh.clear()  # they are then reported CHANGED: safe, if not lean
            self._fresh.setdefault(key, self._batch)
        self.unclosed.hold(key, now, until)

    def reported(self, key: Key, now: float, *, new: bool = False) -> bool:
        """Note that ``key`` is reported now; returns whether it goes out as NEW."""
        self._reported.pop(key, None)
        self._reported[key] = now
        if new or self._fresh.pop(key, None) == self._batch:
            self._created_now.add(key)
            return True
        return False

    def forget(self, key: Key) -> None:
        """The name now means another file, or none."""
        self._fresh.pop(key, None)
        self._reported.pop(key, None)
        self._created_now.discard(key)
        self.unclosed.discard(key)

    def worth_a_hint(self, key: Key, now: float) -> bool:
        """Whether a target may hold a copy of this file worth moving: not one never
        reported, nor one reported only just now (a deploy tool's temp file, renamed
        right after its close), whose copy is at best half there."""
        last = self._reported.get(key)
        return (
            key not in self._fresh
            and key not in self._created_now
            and (last is None or now - last >= self.young)
        )

    def end_batch(self, now: float) -> None:
        self._batch += 1
        self._created_now.clear()
        if len(self._reported) > MAX_REPORTED:
            young = now - self.young
            self._reported = {k: t for k, t in self._reported.items() if t >= young}

    def dirs(self) -> set[int]:
        """The directories of the files held (fresh or unclosed)."""
        return {k[0] for k in self._fresh} | {k[0] for k in self.unclosed.held()}

    def drop_dirs(self, wds: Iterable[int]) -> None:
        """Forget files in directories no longer watched."""
        gone = set(wds)
        self._fresh = {k: b for k, b in self._fresh.items() if k[0] not in gone}

    def clear(self) -> None:
        self._fresh.clear()
        self._created_now.clear()
        self._reported.clear()
        self.unclosed.clear()
