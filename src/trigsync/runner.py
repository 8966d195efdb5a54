"""Runs one batch against one target: moves in place, then rsync with the path list
through the standby, or a full sync; and the exit-23/11 halving on fresh connections."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Sequence

from . import ancestry, fullsync, partial, rsync
from .changes import Batch, Change, Kind
from .fullsync import FullSyncRunner
from .sourceview import SourceView
from .standby import Standby
from .targets import Target

log = logging.getLogger(__name__)

# How long after a run that sent unlisted paths (whole directories, the whole tree) a new
# path still counts as possibly delivered. inotify events reach us within milliseconds;
# the margin covers a busy event loop. Erring long only costs a needless delete entry.
UNLISTED_GRACE = 1.0


# rsync's receiver, when the sender read a path below a directory the nosymfollow view
# (sourceview.py) showed as a symlink: "ABORTING due to invalid path from sender: d/f".
_SWAPPED = re.compile(rb"(?m)^ABORTING due to invalid path from sender: ")
SWAPPED_TRIES = 3  # a writer racing every try keeps the list pending, as a fatal error
# A run of its own refused at a daemon's max connections is asked again this often (the
# pool says how long apart), before the batch waits.
BUSY_TRIES = 10


class Runner:
    """The I/O of one target's runs; the dispatcher decides what to run and when."""

    def __init__(
        self, source: bytes, target: Target, options: rsync.Options, *, standby: bool
    ) -> None:
        self.source = source
        self.view = SourceView(source)  # what rsync reads: logs and hooks name the source
        self.target = target
        self.options = options
        self.standby = Standby(
            enabled=standby,
            timeout=options.timeout,
            env=target.transport().env,
            name=target.name,
        )
        # Until then, a new path may have been delivered by a run that did not list it.
        self.unlisted_until = 0.0
        self.full_sync: FullSyncRunner | None = None
        self._own_runs = asyncio.Lock()  # at a daemon's known limit: one at a time

    def _transport(self) -> rsync.Transport:
        """Asked at each run: an ssh target's route changes when its channel comes up."""
        return self.target.transport()

    async def run(self, batch: Batch, entries: list[bytes], whole: bool) -> rsync.Result:
        replaced = [] if batch.full else self._replaced_dirs(batch)
        try:
            used = self._transport()
            result = await self._run_once(batch, entries, replaced)
            if result.outcome is not rsync.Outcome.OK and await self.target.rerouted(used, result):
                # The way to the target failed and another is there: the batch takes it
                # now, and so do the standbys, which waited on the old one.
                await self.standby.drop()
                result = await self._run_once(batch, entries, replaced)
            result = dataclasses.replace(result, stderr=self.view.unview(result.stderr))
            if result.stalled is not None:
                await self.target.reset()  # the next run must not reuse a frozen connection
            elif not self.target.one_shot:
                # After the run: an ssh run has made the shared connection by then, which
                # the set-up then uses rather than racing it to become its master.
                self.target.connect()
            return result
        finally:
            if batch.full or batch.moves or whole or replaced:
                # It may have sent paths it did not list, whose events may still be on
                # their way: see in_flight in Dispatcher.submit().
                self.unlisted_until = time.monotonic() + UNLISTED_GRACE

    async def _run_once(
        self, batch: Batch, entries: list[bytes], replaced: list[bytes]
    ) -> rsync.Result:
        result = await self._replace(replaced) if replaced else None
        if result is None or result.outcome is rsync.Outcome.OK or result.refused:
            result = await self._run_batch(batch, entries)
        return result

    async def _run_batch(self, batch: Batch, entries: list[bytes]) -> rsync.Result:
        transport = self._transport()
        view = self.view.path()
        if batch.moves:
            with self.standby.aside():
                moved = await self.target.apply_moves(batch.moves, view, self.options, self.fresh)
            log.info(
                "%s: moved %d of %d renamed paths in place",
                self.target.name,
                moved,
                len(batch.moves),
            )
        argv = rsync.batch_argv(view, self.options, transport)
        if batch.full:
            await self.standby.drop()  # it may hold a daemon's only connection slot
            await self.standby.slot()
            result = await fullsync.run(
                view, self.options, transport, first=self.full_sync, stall=self.standby.stall
            )
            if result.outcome is rsync.Outcome.OK:
                # The first change after a start (or a repair) meets a logged-in rsync too:
                # without one, it paid a fresh login, ~50 ms on a stock daemon.
                self.standby.prepare(argv)
            return result
        await self.standby.slot()  # before the check below, which must come last
        for _ in range(SWAPPED_TRIES):
            # Last, with no await before the standby takes the list: see ancestry.py.
            entries = ancestry.confine_below(view, entries)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: paths %r", self.target.name, entries)
            result = await self.standby.run(argv, rsync.path_list(entries))
            if not _SWAPPED.search(result.stderr):
                break
            # A directory became a symlink after the check: the view made rsync refuse it
            # (exit 2, a fatal code otherwise). The next check lists the symlink instead.
            log.info(
                "%s: a source directory was swapped for a symlink; sending again", self.target.name
            )
        return result

    def _replaced_dirs(self, batch: Batch) -> list[bytes]:
        """The batch's paths that were deleted and made again, and are directories now."""
        return [
            c.path
            for c in batch.changes
            if c.kind is Kind.REPLACED and self.entries_in(c.path, 0) is not None
        ]

    async def _replace(self, dirs: list[bytes]) -> rsync.Result:
        """Make each directory equal to the source below it, extras deleted: the target's
        copy may still hold what the deleted directory held (a list run is not recursive)."""
        transport = self._transport()
        view = self.view.path()
        argv = rsync.batch_argv(view, self.options, transport, recursive=True)
        log.debug("%s: directories made again, sent whole: %r", self.target.name, dirs)
        with tempfile.NamedTemporaryFile(prefix="trigsync-excludes-") as rules:
            # The exclude regexes with no rsync pattern hold here as on a full sync: what
            # they match below the directories goes to rsync as anchored excludes (a file:
            # stdin holds the list), so it is neither sent nor deleted on the target.
            _, matched = await fullsync.regex_rules(self.source, self.options, below=dirs)
            if matched is not None:
                rules.write(matched)
                rules.flush()
                argv[-2:-2] = [f"--exclude-from={rules.name}"]  # after --from0
            paths = rsync.path_list(ancestry.confine_below(view, dirs))  # see ancestry.py
            return await self.fresh(argv, paths)

    def entries_in(self, directory: bytes, limit: int) -> int | None:
        """How many entries a source directory holds (counting to ``limit`` + 1 at most),
        or None if it is not a directory (now)."""
        path = self.source + b"/" + directory
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return None
            with os.scandir(path) as it:
                return sum(1 for _ in itertools.islice(it, limit + 1))
        except OSError:
            return None

    async def isolate(self, changes: Sequence[Change], result: rsync.Result) -> partial.Refused:
        """Find the paths that made ``result`` exit 23 or 11; the rest are delivered on the way."""
        view = self.view.path()
        argv = rsync.batch_argv(view, self.options, self._transport())

        async def send(half: Sequence[Change]) -> rsync.Result:
            paths = rsync.path_list(ancestry.confine_below(view, (c.path for c in half)))
            return await self.fresh(argv, paths)

        # Its many short runs each need a daemon's slot: at max connections 1, a standby
        # started after each took the slot the next one asked for, and every run was
        # refused and waited a second (26 paths with one refused: 7 to 9 s).
        with self.standby.aside():
            return await partial.refused(changes, send, self.target.name, result)

    async def fresh(self, argv: Sequence[rsync.Arg], paths: bytes) -> rsync.Result:
        """One run on a connection of its own. A daemon at its ``max connections`` that
        refuses it gets the waiting standbys' slots (they would hold them for as long as
        this is retried, and the batch's every retry begins with this run again), and it
        is asked again after the pool's pause, which doubles while refusals go on. Once
        the daemon's limit is known, such runs go one at a time (a rename's rebuild runs
        several side by side), each once the slot of the one before has freed: asked at
        once, at max connections 1 each was refused (the daemon holds a slot ~60 ms
        after its client exits), which doubled the pause to a second per run, and the
        halving of 26 paths around one refused took 7 to 9 s."""
        for _ in range(BUSY_TRIES):
            limited = self.standby.pool.limit is not None
            async with self._own_runs if limited else contextlib.nullcontext():
                if limited:
                    await self.standby.slot()
                result = await self.standby.fresh(argv, paths)
            if not rsync.busy(result.code, result.stderr):
                break
            await self.standby.drop()
            await self.standby.turn()
        return result
