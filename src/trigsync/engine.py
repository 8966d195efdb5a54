"""Wires each sync: its watcher feeds every target's dispatcher; status comes out as snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

from . import rsync, targets
from .changes import Batch
from .config import Config, SyncConfig
from .dispatch import Dispatcher, Settings, TargetStatus
from .errors import SetupError
from .excludes import Excludes
from .watcher import Watcher

log = logging.getLogger(__name__)


class SyncStatus(NamedTuple):
    source: str
    watches: int
    targets: tuple[TargetStatus, ...]


class EngineStatus(NamedTuple):
    syncs: tuple[SyncStatus, ...]

    @property
    def idle(self) -> bool:
        return all(t.pending == 0 and t.in_flight == 0 for s in self.syncs for t in s.targets)


class SyncJob:
    """One source tree replicated to its targets."""

    def __init__(self, config: SyncConfig, *, state_dir: Path) -> None:
        self.config = config
        self.source = os.fsencode(config.source)
        self.excludes = Excludes(config.excludes)
        options = rsync.Options(
            rsync_path=config.rsync_path,
            timeout=config.timeout,
            excludes=config.excludes,
            extra=config.rsync_args,
        )
        settings = Settings(delay=config.delay)
        self.targets = [
            targets.build(spec, state_dir=state_dir, contimeout=config.contimeout)
            for spec in config.targets
        ]
        self.dispatchers = [Dispatcher(self.source, t, options, settings) for t in self.targets]
        self.watcher: Watcher | None = None

    def check(self) -> None:
        rsync.check_binary(self.config.rsync_path)
        for target in self.targets:
            target.check()

    def start_watching(self) -> None:
        """Place every watch before any sync runs, so nothing changed meanwhile is missed."""
        self.watcher = Watcher(
            self.source, excludes=self.excludes, watch_modify=self.config.watch_modify
        )
        self.watcher.start()
        log.info("watching %s (%d directories)", self.config.source, self.watcher.watch_count)

    def submit(self, batch: Batch) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.submit(batch)

    async def pump(self) -> None:
        assert self.watcher is not None
        async for batch in self.watcher.batches():
            self.submit(batch)

    def status(self) -> SyncStatus:
        watches = self.watcher.watch_count if self.watcher else 0
        return SyncStatus(self.config.source, watches, tuple(d.status() for d in self.dispatchers))

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        for target in self.targets:
            with contextlib.suppress(OSError, TimeoutError):
                target.close()


class Engine:
    def __init__(self, config: Config, *, initial_sync: bool = False) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.initial_sync = initial_sync
        self.jobs = [SyncJob(s, state_dir=self.state_dir) for s in config.syncs]
        self._dispatchers = [d for job in self.jobs for d in job.dispatchers]

    def check(self) -> None:
        """Pre-flight checks: rsync present, password files sane, state dir usable."""
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(
                f"cannot create state directory {self.state_dir}: {exc.strerror}; "
                "pass --state-dir DIR or set state_dir in the config"
            ) from exc
        for job in self.jobs:
            job.check()

    def status(self) -> EngineStatus:
        return EngineStatus(tuple(job.status() for job in self.jobs))

    async def wait_idle(self) -> None:
        for dispatcher in self._dispatchers:
            await dispatcher.wait_idle()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch and replicate until ``stop`` is set, then drain and return."""
        self.check()
        workers: list[asyncio.Task[None]] = []
        pumps: list[asyncio.Task[None]] = []
        try:
            for job in self.jobs:
                job.start_watching()
                if self.initial_sync or job.config.initial_sync:
                    job.submit(Batch(full=True))
            workers = [asyncio.create_task(d.run()) for d in self._dispatchers]
            pumps = [asyncio.create_task(job.pump()) for job in self.jobs]
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([*pumps, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for pump in pumps:
                pump.cancel()
            failed = [p for p in pumps if p.done() and not p.cancelled() and p.exception()]
            for dispatcher in self._dispatchers:
                dispatcher.close()
            await asyncio.gather(*workers)
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
        finally:
            for task in [*workers, *pumps]:
                task.cancel()
            for job in self.jobs:
                job.close()

    async def once(self) -> bool:
        """Run one full sync per target and return whether all succeeded."""
        self.check()
        for job in self.jobs:
            job.submit(Batch(full=True))
        for dispatcher in self._dispatchers:
            dispatcher.close()
        try:
            await asyncio.gather(*(d.run() for d in self._dispatchers))
        finally:
            for job in self.jobs:
                job.close()
        return all(d.status().last_error is None for d in self._dispatchers)
