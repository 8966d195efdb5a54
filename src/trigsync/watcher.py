"""Recursive watching of one source tree, as an async iterator of change batches.

This is the asyncio shell: it owns the inotify or fanotify fd (``fanwatch.py``), reads
it when the loop says it is readable, and wakes up when a timer of the translator
(``translate.py``) falls due. Everything the events mean is decided there, without I/O of
its own. What neither backend sees (a mount in the tree, the source symlink swapped)
comes from ``rootwatch.py``, for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import NamedTuple

from .changes import Batch
from .excludes import Excludes
from .fanwatch import FanotifySource, InotifySource, Source
from .rootwatch import RootWatch, Verdict
from .translate import Translator

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
# Bounds one wake-up under a storm so batches keep flowing and the rest of the loop
# (starting runs, reaping them) keeps its pace; the fd stays readable, so the loop wakes
# us again at once. 64 reads of 256 KiB held up the loop for seconds in a storm of
# 200,000 files; a read of 256 KiB takes 10 to 30 ms to translate.
MAX_READS_PER_WAKEUP = 64
WAKEUP_BUDGET = 0.02  # seconds of reading and translating, after which the batch goes
# After a read that held nothing for this tree (fanotify reports the whole filesystem),
# the fd is left alone this long: a busy neighbour then costs one wake-up per pause,
# not one per event, and a change of ours waits at most this much longer.
NOISE_PAUSE = 0.002

_NO_EXCLUDES = Excludes()


def _trim_heap() -> None:
    """Give back to the system what the start's walk freed: the tables a large dict
    outgrew on its way (tens of MB at 1M directories) stay in glibc's heap otherwise."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


class WatcherStatistics(NamedTuple):
    watches: int
    events_read: int
    overflows: int


class Watcher:
    """Watches ``root`` (an absolute path, as bytes) and everything below it."""

    def __init__(
        self,
        root: bytes,
        *,
        excludes: Excludes = _NO_EXCLUDES,
        move_timeout: float = 0.05,
        watch_modify: bool = False,
        modify_settle: float = 0.5,
        overflow_quiet: float = 0.5,
        backend: str = "inotify",
    ) -> None:
        self.root = root.rstrip(b"/") or b"/"
        self.backend = backend
        self._excludes = excludes
        self._translator = functools.partial(
            Translator,
            self.root,
            excludes=excludes,
            move_timeout=move_timeout,
            watch_modify=watch_modify,
            modify_settle=modify_settle,
            overflow_quiet=overflow_quiet,
            clock=time.monotonic,
        )
        self._fd = -1
        self._source: Source | None = None
        self._events: Translator | None = None
        self._root_watch: RootWatch | None = None
        self._root_woke = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused: asyncio.TimerHandle | None = None

    @property
    def watch_count(self) -> int:
        return 0 if self._events is None else len(self._events.tree)

    def statistics(self) -> WatcherStatistics:
        t = self._events
        if t is None:
            return WatcherStatistics(0, 0, 0)
        return WatcherStatistics(len(t.tree), t.events_read, t.overflows)

    def start(self) -> None:
        """Create the inotify instance (or fanotify group) and watch the whole tree."""
        if self._fd >= 0:
            return
        try:
            # Opened first: a mount or a swapped symlink during the scan still wakes us.
            self._root_watch = RootWatch(self.root)
            kind = FanotifySource if self.backend == "fanotify" else InotifySource
            self._source = source = kind(self.root)
            self._fd = source.fd
            self._events = self._translator(source.fs, kernel=source.name, lazy=source.lazy)
            source.bind(self._events, self._excludes)
            self._events.start()
            _trim_heap()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop watching; a running batches() iterator ends."""
        self._cancel_timer()
        self._cancel_pause()
        self._unregister()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._source is not None:
            self._source.close()
        self._source = None
        if self._events is not None:
            self._events.close()
        if self._root_watch is not None:
            self._root_watch.close()
            self._root_watch = None
        if self._wake is not None:
            self._wake.set()

    def _register(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        self._loop = loop
        loop.add_reader(self._fd, wake.set)
        for fd in self._root_watch.fds() if self._root_watch else ():
            loop.add_reader(fd, self._root_changed)

    def _unregister(self) -> None:
        if self._loop is None:
            return
        for fd in [self._fd, *(self._root_watch.fds() if self._root_watch else ())]:
            if fd >= 0:
                self._loop.remove_reader(fd)
        self._loop = None

    def _root_changed(self) -> None:
        self._root_woke = True
        if self._wake is not None:
            self._wake.set()

    async def batches(self) -> AsyncIterator[Batch]:
        """One batch per wake-up of the inotify fd (or of a timer), never empty."""
        self.start()
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self._wake = wake
        self._register(loop, wake)
        self._root_woke = True  # a change before we were iterated has woken no one
        wake.set()  # events may have queued before we were iterated
        try:
            while True:
                await wake.wait()
                wake.clear()
                if self._fd < 0 or self._events is None:
                    return
                full = self._root_woke and self._check_root(loop, wake)
                batch = self._collect(loop, self._events)
                if full:
                    batch = dataclasses.replace(batch, full=True)
                if batch:
                    yield batch
        finally:
            self._cancel_timer()
            self._cancel_pause()
            self._unregister()
            self._wake = None

    def _check_root(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> bool:
        """Follow the source to what it names now; True if every target needs a full sync."""
        self._root_woke = False
        assert self._root_watch is not None and self._events is not None
        verdict = self._root_watch.check()
        if verdict is Verdict.MOUNTS:
            assert self._source is not None
            self._source.remounted()
            self._events.remounted()
        elif verdict is Verdict.ROOT:
            # Another directory altogether: nothing the old watches knew applies to it.
            overflows = self._events.overflows
            self.close()
            self._wake = wake
            self.start()
            assert self._events is not None
            self._events.overflows = overflows
            self._register(loop, wake)
            log.info(
                "watching %s (%d directories) with %s",
                os.fsdecode(self.root),
                self.watch_count,
                self.backend,
            )
            return True
        return False

    def _collect(self, loop: asyncio.AbstractEventLoop, events: Translator) -> Batch:
        seen, noise = events.events_read, False
        budget = time.monotonic() + WAKEUP_BUDGET
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            assert self._source is not None
            events.feed(self._source.events(data))
            noise = noise or bool(data)
            if not data or time.monotonic() >= budget:
                break
        if noise and events.events_read == seen and self._paused is None:
            loop.remove_reader(self._fd)
            self._paused = loop.call_later(NOISE_PAUSE, self._resume)
        batch = events.take()
        assert self._source is not None
        self._source.trim()
        self._cancel_timer()
        due = events.next_due()
        if due is not None:
            self._timer = loop.call_later(max(0.0, due - time.monotonic()), self._wake_up)
        return batch

    def _wake_up(self) -> None:
        self._timer = None
        if self._wake is not None:
            self._wake.set()

    def _resume(self) -> None:
        self._paused = None
        if self._fd >= 0 and self._loop is not None and self._wake is not None:
            self._loop.add_reader(self._fd, self._wake.set)
            self._wake.set()

    def _cancel_pause(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
