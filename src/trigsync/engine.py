"""Runs every sync: the jobs, their pumps and workers, the journal; status comes out as snapshots."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from .changes import Batch
from .config_data import Config, private_dir
from .dispatch import Dispatcher
from .errors import SetupError, TrigsyncError
from .journal import save, write_behind
from .state import LastRun, StateStore
from .status import EngineStatus, RunReport
from .syncjob import SyncJob

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, config: Config, *, initial_sync: bool = False, durable: bool = True) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.initial_sync = initial_sync
        self.durable = durable
        self.store: StateStore | None = None
        self._lock_fd = -1
        self.jobs: list[SyncJob] = []
        self._dispatchers: list[Dispatcher] = []
        self.ready = asyncio.Event()  # watches placed, workers started (sd_notify READY=1)
        self._started: float | None = None
        self._parts: dict[str, asyncio.Task[None]] = {}  # what must stay alive, by name
        self.workers: dict[Dispatcher, asyncio.Task[None]] = {}
        self.pumps: dict[SyncJob, asyncio.Task[None]] = {}
        # Each job's reconcile_every timer, with the period it was started for.
        self.periodic: dict[SyncJob, tuple[float, asyncio.Task[None]]] = {}
        self._part_ended = asyncio.Event()  # a pump, worker or the journal ended by itself
        self.observers: list[Callable[[RunReport], None]] = []  # told of every target's runs

    def _open(self, *, durable: bool) -> None:
        """Lock the state directory, open the pending store, build the jobs."""
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            private_dir(self.state_dir)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            self._lock_fd = os.open(self.state_dir / "lock", flags, 0o600)
        except OSError as exc:
            raise SetupError(
                f"cannot use state directory {self.state_dir}: {exc.strerror}; "
                "pass --state-dir DIR or set state_dir in the config"
            ) from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip()
            raise SetupError(
                f"state directory {self.state_dir} is in use by another trigsync (pid {holder}); "
                "give each instance its own --state-dir"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        if durable:
            self.store = StateStore(self.state_dir)
        self.jobs = [
            SyncJob(s, state_dir=self.state_dir, store=self.store) for s in self.config.syncs
        ]
        self._dispatchers = [d for job in self.jobs for d in job.dispatchers]
        for dispatcher in self._dispatchers:
            dispatcher.observers.extend(self.observers)

    def _close(self) -> None:
        for job in self.jobs:
            job.close()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def check(self) -> None:
        """Pre-flight checks: rsync present, password files sane."""
        for job in self.jobs:
            job.check()

    def status(self) -> EngineStatus:
        parts = {
            **self._parts,
            **{f"watcher {j.config.source}": t for j, t in self.pumps.items()},
            **{f"worker {d.key}": t for d, t in self.workers.items()},
        }
        down = tuple(name for name, task in parts.items() if task.done())
        syncs = tuple(job.status() for job in self.jobs)
        return EngineStatus(syncs, os.getpid(), self._started, down=down)

    async def wait_idle(self) -> None:
        for dispatcher in self._dispatchers:
            await dispatcher.wait_idle()

    def refresh_dispatchers(self) -> None:
        """After a reload changed the jobs' workers."""
        self._dispatchers = [d for job in self.jobs for d in job.dispatchers]

    def start_worker(self, dispatcher: Dispatcher) -> None:
        def ended(task: asyncio.Task[None]) -> None:
            if not dispatcher.closing:  # a worker asked to stop (a stop, a reload) may end
                self._ended(task)

        self.workers[dispatcher] = asyncio.create_task(dispatcher.run())
        self.workers[dispatcher].add_done_callback(ended)

    def retime(self) -> None:
        """Start, restart or end each job's reconcile_every timer as its config says now
        (a reload that leaves a period alone leaves its timer running)."""
        for job, (seconds, task) in list(self.periodic.items()):
            if job not in self.jobs or job.config.reconcile_every != seconds:
                task.cancel()
                del self.periodic[job]
        for job in self.jobs:
            seconds = job.config.reconcile_every
            if seconds and job not in self.periodic:
                self.periodic[job] = (seconds, asyncio.create_task(job.reconcile_every(seconds)))

    def start_pump(self, job: SyncJob) -> None:
        self.pumps[job] = asyncio.create_task(job.pump())
        self.pumps[job].add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A part ended by itself (not cancelled): the engine stops, see _fatal."""
        if not task.cancelled():
            self._part_ended.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch and replicate until ``stop`` is set, then drain and return."""
        self._open(durable=self.durable)
        aux: list[asyncio.Task[None]] = []
        journal: list[asyncio.Task[None]] = []
        try:
            self.check()
            last = self.store.begin_run() if self.store else LastRun(True, None, True)
            for job in self.jobs:
                job.start_watching()
                resumed = sum(d.restore_saved() for d in job.dispatchers)
                if resumed:
                    log.info("%s: resuming %d pending paths", job.config.source, resumed)
                if self.initial_sync or job.config.initial_sync:
                    job.submit(Batch(full=True))
                how = repr((job.excludes.patterns, job.excludes.regexes))
                for d in job.dispatchers:
                    # A target added, or excludes dropped, while stopped: no ctime says so.
                    seen = self.store is None or self.store.replicated_as(d.key, how)
                    if not seen and not last.first_start:
                        d.submit(Batch(full=True))
            for dispatcher in self._dispatchers:
                self.start_worker(dispatcher)
            for job in self.jobs:
                self.start_pump(job)
            aux = [asyncio.create_task(job.catch_up(last)) for job in self.jobs]
            if self.store is not None:
                journal.append(asyncio.create_task(write_behind(self.store, self._unconfirmed)))
                journal[-1].add_done_callback(self._ended)
                self._parts["journal"] = journal[-1]
            self.retime()
            self._started = time.time()
            self.ready.set()
            # The pumps and workers may change on a reload (SIGHUP): wait on events, not
            # tasks. Workers and the write-behind task never end on their own: if one does,
            # it is a bug that the process must not outlive silently.
            waits = [asyncio.create_task(e.wait()) for e in (stop, self._part_ended)]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
            pumps = list(self.pumps.values())
            # A tick during the last send would queue another full sync, and one longer
            # than reconcile_every would hold the stop up for good.
            for task in [*pumps, *(t for _, t in self.periodic.values())]:
                task.cancel()
            unwatched_at = time.time()  # changes after this are found by the next start
            fatal = _fatal(pumps, [*self.workers.values(), *journal])
            for dispatcher in self._dispatchers:
                dispatcher.close()
            await asyncio.gather(*(w for w in self.workers.values() if not w.done()))
            for writer in journal:
                writer.cancel()  # it finishes the write in hand: the save below comes last
                await asyncio.wait([writer])
            saved = self.store is None or save(self.store, self._unconfirmed)
            if fatal is not None:
                raise fatal  # not a clean stop: the next start reconciles every target
            if not saved:
                log.error(
                    "the pending set could not be saved; the next start reconciles every target"
                )
            elif self.store is not None:
                self.store.end_run(unwatched_at)
        finally:
            periodic = [t for _, t in self.periodic.values()]
            for task in [*self.workers.values(), *self.pumps.values(), *periodic, *aux, *journal]:
                task.cancel()
            self._close()

    def _unconfirmed(self) -> dict[str, Batch]:
        return {d.key: d.unconfirmed() for d in self._dispatchers}

    async def once(self) -> bool:
        """Run one full sync per target and return whether all succeeded."""
        self._open(durable=False)
        try:
            self.check()
            for target in (t for job in self.jobs for t in job.targets):
                target.one_shot = True
            for job in self.jobs:
                job.submit(Batch(full=True))
            for dispatcher in self._dispatchers:
                dispatcher.close()
            await asyncio.gather(*(d.run() for d in self._dispatchers))
        finally:
            self._close()
        return all(d.status().last_error is None for d in self._dispatchers)


def _fatal(
    pumps: list[asyncio.Task[None]], workers: list[asyncio.Task[None]]
) -> TrigsyncError | None:
    """The error a part that ended on its own leaves the process with, if one did."""
    for task in pumps:
        if task.done() and not task.cancelled() and (exc := task.exception()):
            return exc if isinstance(exc, TrigsyncError) else TrigsyncError(str(exc))
    for task in workers:
        if task.done():
            exc = None if task.cancelled() else task.exception()
            what = f"{type(exc).__name__}: {exc}" if exc else "it returned"
            log.debug("%s ended", task.get_coro(), exc_info=exc)
            return TrigsyncError(f"internal error: a worker or the journal stopped ({what})")
    return None
