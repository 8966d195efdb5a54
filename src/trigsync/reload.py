"""SIGHUP: read the config file again and apply it without losing a pending path.

``plan`` compares two configs (pure); ``Reloader`` applies a plan to the running engine:

- a target whose worker would be built the same way keeps its worker and pending set
  (only its hooks are attached anew);
- a changed target gets a new worker that holds still until the old one has finished
  its run in flight, then takes over everything the old one had pending;
- an added target (or sync) gets a reconciling full sync; a removed one is stopped
  after its run in flight, and what it had pending is dropped with it;
- changed excludes or watch settings place a new watcher before the old one is closed,
  and every target of that sync gets a reconciling full sync, which covers both what the
  new patterns let in and any event read by neither watcher in the switch.

Everything new is built and checked before anything running is touched, so a config
that cannot work is refused whole, and the daemon goes on with the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from . import rsync
from .changes import Batch
from .config_data import Config, SyncConfig
from .dispatch import Dispatcher
from .engine import Engine
from .errors import ConfigError, TrigsyncError
from .excludes import Excludes
from .hooks import Hooks
from .syncjob import SyncJob
from .targets import TargetSpec
from .watcher import Watcher
from .workers import make_dispatcher

log = logging.getLogger(__name__)

KEEP, REPLACE, ADD, REMOVE, CHANGE = "keep", "replace", "add", "remove", "change"


class TargetPlan(NamedTuple):
    url: str
    action: str  # keep | replace | add | remove


class Fresh(NamedTuple):
    """What a reload built and checked before touching the running engine."""

    jobs: dict[str, SyncJob]  # by source
    workers: dict[tuple[str, str], Dispatcher]  # by (source, url)
    watchers: dict[str, tuple[Watcher, Excludes]]  # placed beside the running ones


class SyncPlan(NamedTuple):
    source: str
    action: str  # keep | change | add | remove
    targets: tuple[TargetPlan, ...] = ()
    rewatch: bool = False  # the watcher must be placed again (excludes, watch_modify)


def worker_inputs(sync: SyncConfig, spec: TargetSpec) -> tuple[object, ...]:
    """What a running worker was built from, its hooks aside (those are re-attached)."""
    bare = dataclasses.replace(spec, on_success=(), on_failure=())
    return (
        bare,
        sync.rsync_path,
        sync.timeout,
        sync.contimeout,
        sync.excludes,
        sync.exclude_regex,  # translated into the rsync patterns of every run
        sync.rsync_args,
        sync.delay,
        sync.standby,
        sync.retry_max,
    )


def plan(old: Config, new: Config) -> list[SyncPlan]:
    """What a reload from ``old`` to ``new`` does, per sync and per target."""
    before = {s.source: s for s in old.syncs}
    after = {s.source: s for s in new.syncs}
    plans = [SyncPlan(src, REMOVE) for src in before if src not in after]
    for src, sync in after.items():
        was = before.get(src)
        if was is None:
            plans.append(SyncPlan(src, ADD))
        elif was == sync:
            plans.append(SyncPlan(src, KEEP))
        else:
            plans.append(_changed(was, sync))
    return plans


def _changed(was: SyncConfig, sync: SyncConfig) -> SyncPlan:
    old_specs = {t.url: t for t in was.targets}
    targets: list[TargetPlan] = []
    for spec in sync.targets:
        prior = old_specs.pop(spec.url, None)
        if prior is None:
            targets.append(TargetPlan(spec.url, ADD))
        elif worker_inputs(was, prior) == worker_inputs(sync, spec):
            targets.append(TargetPlan(spec.url, KEEP))
        else:
            targets.append(TargetPlan(spec.url, REPLACE))
    targets += [TargetPlan(url, REMOVE) for url in old_specs]
    rewatch = (was.excludes, was.exclude_regex, was.watch_modify, was.watch_backend) != (
        sync.excludes,
        sync.exclude_regex,
        sync.watch_modify,
        sync.watch_backend,
    )
    return SyncPlan(sync.source, CHANGE, tuple(targets), rewatch)


def describe(plans: Sequence[SyncPlan]) -> str:
    """One log line: what changed."""
    parts: list[str] = []
    for p in plans:
        if p.action in (ADD, REMOVE):
            parts.append(f"{p.action} {p.source}")
        elif p.action == CHANGE:
            moved = [f"{t.action} {t.url}" for t in p.targets if t.action != KEEP]
            if p.rewatch:
                moved.append("new excludes (full sync)")
            parts.append(f"{p.source}: {', '.join(moved) or 'hooks or settings'}")
    return "; ".join(parts) or "nothing changed"


class Reloader:
    """Applies config reloads to one running engine, one at a time."""

    def __init__(self, engine: Engine, load: Callable[[], Config]) -> None:
        self.engine = engine
        self.load = load
        self._lock = asyncio.Lock()

    async def reload(self) -> str | None:
        """Read and apply the config; returns what changed, None if it was refused (logged)."""
        async with self._lock:
            await self.engine.ready.wait()
            try:
                new = self.load()
                plans = plan(self.engine.config, new)
                fresh = self._build(new, plans)
            except TrigsyncError as exc:
                log.error("SIGHUP: config not reloaded, still running the old one: %s", exc)
                return None
            await self._apply(new, plans, fresh)
            summary = describe(plans)
            log.info("SIGHUP: config reloaded: %s", summary)
            return summary

    def _build(self, new: Config, plans: Sequence[SyncPlan]) -> Fresh:
        """Build and check everything new; raises before anything running is touched."""
        engine = self.engine
        old = engine.config
        if new.state_dir != old.state_dir:
            raise ConfigError(
                f"{new.origin}: state_dir cannot change while running; restart trigsync for it"
            )
        service = ("canary_every", "canary_name", "canary_timeout", "metrics", "log_format")
        changed = [k for k in (*service, "log_file") if getattr(old, k) != getattr(new, k)]
        if changed:
            log.warning("SIGHUP: %s apply at the next start", ", ".join(changed))
        syncs = {s.source: s for s in new.syncs}
        running = {job.config.source: job for job in engine.jobs}
        fresh = Fresh({}, {}, {})
        try:
            for p in plans:
                self._build_sync(p, syncs.get(p.source), running.get(p.source), fresh)
        except BaseException:
            for watcher, _ in fresh.watchers.values():
                watcher.close()  # its watches count against the kernel's limit
            raise
        return fresh

    def _build_sync(
        self, p: SyncPlan, sync: SyncConfig | None, job: SyncJob | None, fresh: Fresh
    ) -> None:
        engine = self.engine
        if p.action == ADD and sync is not None:
            added = SyncJob(sync, state_dir=engine.state_dir, store=engine.store)
            added.check()
            fresh.jobs[p.source] = added
        elif p.action == CHANGE and sync is not None and job is not None:
            rsync.check_binary(sync.rsync_path)
            if p.rewatch:
                # Placed here, not while switching: a watch limit (the old watcher still
                # holds its watches) refuses the reload before anything has changed.
                excludes = Excludes(sync.excludes, sync.exclude_regex)
                fresh.watchers[p.source] = (job.place_watches(sync, excludes), excludes)
        for t in p.targets:
            if t.action in (ADD, REPLACE) and sync is not None:
                spec = next(s for s in sync.targets if s.url == t.url)
                d = make_dispatcher(sync, spec, state_dir=engine.state_dir, store=engine.store)
                d.target.check()
                fresh.workers[p.source, t.url] = d

    async def _apply(self, new: Config, plans: Sequence[SyncPlan], fresh: Fresh) -> None:
        engine = self.engine
        jobs = {job.config.source: job for job in engine.jobs}
        syncs = {s.source: s for s in new.syncs}
        retired: list[tuple[Dispatcher, Dispatcher | None]] = []  # (old, its successor)
        for p in plans:
            if p.action == ADD:
                self._start_job(fresh.jobs[p.source])
            elif p.action == REMOVE:
                job = jobs[p.source]
                self._stop_watching(job)
                engine.jobs.remove(job)
                retired += [(d, None) for d in job.dispatchers]
            elif p.action == CHANGE:
                retired += self._change(jobs[p.source], syncs[p.source], p, fresh)
            else:
                jobs[p.source].config = syncs[p.source]
        engine.config = new
        engine.refresh_dispatchers()
        engine.retime()
        await self._retire(retired)

    def _start_job(self, job: SyncJob) -> None:
        engine = self.engine
        job.start_watching()
        engine.jobs.append(job)
        for d in job.dispatchers:
            d.observers.extend(engine.observers)
            engine.start_worker(d)
        engine.start_pump(job)
        job.submit(Batch(full=True))  # trigsync never saw this tree: reconcile it

    def _stop_watching(self, job: SyncJob) -> None:
        pump = self.engine.pumps.pop(job, None)
        if pump is not None:
            pump.cancel()
        if job.watcher is not None:
            job.watcher.close()

    def _change(
        self, job: SyncJob, sync: SyncConfig, p: SyncPlan, fresh: Fresh
    ) -> list[tuple[Dispatcher, Dispatcher | None]]:
        engine = self.engine
        old = {d.target.spec.url: d for d in job.dispatchers}
        kept: list[Dispatcher] = []
        retired: list[tuple[Dispatcher, Dispatcher | None]] = []
        for t in p.targets:
            if t.action == REMOVE:
                retired.append((old[t.url], None))
                continue
            if t.action == KEEP:
                d = old[t.url]
                hooks = Hooks.of(sync, next(s for s in sync.targets if s.url == t.url))
                d.observers[:] = [*([hooks.observe] if hooks else []), *engine.observers]
            else:
                d = fresh.workers[p.source, t.url]
                d.observers.extend(engine.observers)
                if t.action == REPLACE:
                    d.hold()  # until the old worker has handed over
                    d.pause(old[t.url].paused)  # `pause`/`resume` from now on reach d
                    retired.append((old[t.url], d))
                    job.predecessors[d] = old[t.url]  # status shows both until handed over
                else:
                    d.submit(Batch(full=True))  # a new replica: reconcile it
                engine.start_worker(d)
            kept.append(d)
        job.config = sync
        job.dispatchers = kept
        job.attach_commands()
        if p.rewatch:
            previous = job.watcher
            job.watcher, job.excludes = fresh.watchers[p.source]  # placed in _build
            old_pump = engine.pumps.pop(job, None)
            engine.start_pump(job)
            if old_pump is not None:
                old_pump.cancel()
            if previous is not None:
                previous.close()
            job.submit(Batch(full=True))
        return retired

    async def _retire(self, retired: Sequence[tuple[Dispatcher, Dispatcher | None]]) -> None:
        """Stop the old workers after their runs in flight; hand their pending sets over."""
        engine = self.engine
        for old, _ in retired:
            old.pause(True)  # no new run; the one in flight finishes
            old.close()
        tasks = [engine.workers.pop(old) for old, _ in retired if old in engine.workers]
        await asyncio.gather(*tasks, return_exceptions=True)
        for old, successor in retired:
            with contextlib.suppress(OSError, TimeoutError):
                old.target.close()  # before its successor runs: an ssh control socket is shared
            old.release()
            leftover = old.unconfirmed()
            if successor is not None:
                successor.succeed(old)
                successor.submit(leftover)
                successor.hold(False)  # its pause is the user's, set in _change
                for job in engine.jobs:
                    job.predecessors.pop(successor, None)
            else:
                if engine.store is not None:
                    engine.store.rewrite(engine.store.stage({old.key: Batch()}), complete=False)
                if leftover:
                    log.info(
                        "%s: removed from the config; %d pending paths dropped with it",
                        old.key,
                        len(leftover.changes),
                    )
