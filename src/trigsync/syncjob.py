"""One source tree replicated to its targets: its watcher feeds every target's dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from . import fanwatch, mounts, rsync, targets
from .catchup import changed_since
from .changes import Batch
from .config_data import SyncConfig
from .dispatch import Dispatcher
from .errors import WatchError, WatchLimitError
from .excludes import Excludes
from .hooks import CommandHooks
from .progress import FullSync
from .progress import describe as describe_progress
from .state import LastRun, StateStore
from .status import SyncStatus, TargetStatus, handing_over
from .watcher import Watcher
from .workers import make_dispatcher

log = logging.getLogger(__name__)


class SyncJob:
    """One source tree replicated to its targets."""

    def __init__(
        self, config: SyncConfig, *, state_dir: Path, store: StateStore | None = None
    ) -> None:
        self.config = config
        self.source = os.fsencode(config.source)
        self.excludes = Excludes(config.excludes, config.exclude_regex)
        for regex in self.excludes.untranslatable:
            log.info(
                "%s: exclude regex %r has no rsync equivalent: each full sync walks the "
                "source to list what it matches; an rsync-style pattern in excludes is cheaper",
                config.source,
                regex,
            )
        self.dispatchers = [
            make_dispatcher(config, spec, state_dir=state_dir, store=store)
            for spec in config.targets
        ]
        # A reload's new worker -> the old one it waits for (its run in flight, its pending).
        self.predecessors: dict[Dispatcher, Dispatcher] = {}
        self.attach_commands()
        self.watcher: Watcher | None = None

    def attach_commands(self) -> None:
        """sersync's command plugin, on the first target's worker (each file once); again
        after a reload, which gives the workers their observers anew."""
        config = self.config
        if config.command_hooks and self.dispatchers:
            commands = CommandHooks(self.source, config.command_hooks, config.hook_timeout)
            self.dispatchers[0].observers.append(commands.observe)

    @property
    def targets(self) -> list[targets.Target]:
        return [d.target for d in self.dispatchers]

    def check(self) -> None:
        rsync.check_binary(self.config.rsync_path)
        for target in self.targets:
            target.check()

    def start_watching(self) -> None:
        """Place every watch before any sync runs, so nothing changed meanwhile is missed."""
        self.watcher = self.place_watches(self.config, self.excludes)

    def place_watches(self, config: SyncConfig, excludes: Excludes) -> Watcher:
        """A started watcher on this source with ``config``'s settings (a reload places
        one beside the running watcher before it switches)."""
        backend, why = fanwatch.choose(config.watch_backend, self.source)
        for point, other in mounts.aliases(os.path.realpath(self.source), mounts.read()):
            log.warning(
                "%r shows the same directory as %r (a bind mount): a change below it is "
                "replicated at one of the two places only, until a full sync; exclude one",
                os.fsdecode(point),
                os.fsdecode(other),
            )
        watcher = Watcher(
            self.source,
            excludes=excludes,
            watch_modify=config.watch_modify,
            backend=backend,
        )
        try:
            watcher.start()
        except WatchLimitError as exc:
            if not (config.auto_raise_limits and exc.sysctl and raise_limit(exc)):
                raise
            watcher.start()
        log.info(
            "watching %s (%s) with %s: %s",
            config.source,
            # fanotify lists nothing: it finds each directory at its first event.
            "directories found as they change"
            if backend == "fanotify"
            else f"{watcher.watch_count} directories",
            backend,
            why,
        )
        return watcher

    def submit(self, batch: Batch) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.submit(batch)

    async def pump(self) -> None:
        """Feed the watcher's batches to every target; any failure ends the process (the
        events it would have read are lost: the next start reconciles every target)."""
        try:
            await self._pump()
        except WatchError:
            raise
        except Exception as exc:
            log.debug("watcher of %s failed", self.config.source, exc_info=True)
            raise WatchError(
                f"watcher of {self.config.source} failed: {type(exc).__name__}: {exc}; "
                "restart trigsync (the next start reconciles every target)"
            ) from exc

    async def _pump(self) -> None:
        assert self.watcher is not None
        debug = log.isEnabledFor(logging.DEBUG)
        async for batch in self.watcher.batches():
            if debug:
                log.debug(
                    "events: %s%s%s",
                    [(c.path, c.kind.name) for c in batch.changes],
                    f" moves {[(m.old, m.new) for m in batch.moves]}" if batch.moves else "",
                    " FULL" if batch.full else "",
                )
            self.submit(batch)

    async def catch_up(self, last: LastRun) -> None:
        """Queue what changed while no trigsync was running on this state directory."""
        if last.first_start:
            return
        # A clock stepped back since the stop (NTP, a VM resumed) puts the stop in the
        # future: a file changed while stopped may have a ctime before it.
        went_back = last.stopped_at is not None and last.stopped_at > time.time()
        if not last.clean or went_back:
            why = "the last run did not stop cleanly"
            if last.clean:
                why = "the clock went back since the last stop"
            log.warning("%s: %s; reconciling every target", self.config.source, why)
            self.submit(Batch(full=True))
        elif last.stopped_at is not None:
            # The kernel stamps ctime from a coarse clock (a few ms behind): look back a bit.
            batch = await asyncio.to_thread(
                changed_since, self.source, last.stopped_at - 0.1, self.excludes
            )
            if batch:
                log.info(
                    "%s: changed while stopped: %s",
                    self.config.source,
                    "directories (full sync)" if batch.full else f"{len(batch.changes)} files",
                )
                self.submit(batch)

    async def reconcile_every(self, seconds: float) -> None:
        """sersync's crontab: a periodic full sync repairs drift made on the receivers."""
        while True:
            await asyncio.sleep(seconds)
            self.submit(Batch(full=True))

    def status(self) -> SyncStatus:
        stats = self.watcher.statistics() if self.watcher else None
        return SyncStatus(
            self.config.source,
            stats.watches if stats else 0,
            tuple(self._target_status(d) for d in self.dispatchers),
            overflows=stats.overflows if stats else 0,
        )

    def _target_status(self, dispatcher: Dispatcher) -> TargetStatus:
        status = _with_progress(dispatcher)
        old = self.predecessors.get(dispatcher)
        return status if old is None else handing_over(_with_progress(old), status)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        for dispatcher in self.dispatchers:
            dispatcher.release()
            with contextlib.suppress(OSError, TimeoutError):
                dispatcher.target.close()


def _with_progress(dispatcher: Dispatcher) -> TargetStatus:
    status = dispatcher.status()
    running = dispatcher.full_sync
    last = running.current.last if isinstance(running, FullSync) and running.current else None
    return status._replace(progress=describe_progress(last)) if last else status


def raise_limit(exc: WatchLimitError) -> bool:
    """As root, raise the inotify limit the error names (auto_raise_limits = true)."""
    path = f"/proc/sys/fs/inotify/{exc.sysctl}"
    try:
        with open(path, "w") as fh:
            fh.write(f"{exc.suggested}\n")
    except OSError as err:
        log.error("auto_raise_limits: cannot write %s: %s", path, err.strerror)
        return False
    log.warning(
        "raised fs.inotify.%s to %d (auto_raise_limits); persist it in /etc/sysctl.d/",
        exc.sysctl,
        exc.suggested,
    )
    return True
