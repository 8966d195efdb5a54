"""The running daemon's service side: control socket, heartbeat and sd_notify.

It rides along the engine in the same event loop. It reads the engine's status
snapshots, and acts only through the dispatchers' pause() and submit().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import canary, config_values, control, health
from .changes import Batch
from .dispatch import Dispatcher
from .engine import Engine
from .notify import Notifier
from .status import EngineStatus

log = logging.getLogger(__name__)

HEARTBEAT = 1.0  # seconds between ticks; shorter when systemd's watchdog asks for it


async def serve(
    engine: Engine,
    stop: asyncio.Event,
    notifier: Notifier | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the engine until it returns, with its control socket and sd_notify beside it;
    ``on_ready`` is called with READY=1 (-d's parent exits then)."""
    side = Sidecar(engine, notifier or Notifier(), on_ready)
    helper = asyncio.create_task(side.run(stop))
    try:
        await engine.run(stop)
    finally:
        helper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await helper
        side.notifier.close()


class Sidecar:
    """Answers the control socket, beats the heartbeat, speaks sd_notify."""

    def __init__(
        self, engine: Engine, notifier: Notifier, on_ready: Callable[[], None] | None = None
    ) -> None:
        self.engine = engine
        self.notifier = notifier
        self.on_ready = on_ready
        self.heartbeat: float | None = None
        watchdog = notifier.watchdog
        # systemd asks for a ping within WatchdogSec; its docs advise every half of it.
        self.tick = min(HEARTBEAT, watchdog / 2) if watchdog else HEARTBEAT
        self._withheld: tuple[str, ...] = ()
        self._stopping = False
        cfg = engine.config
        self.canary = canary.Canary(name=cfg.canary_name, timeout=cfg.canary_timeout)
        self.exporter: Any = None
        if cfg.metrics:
            from .metrics import Exporter  # prometheus_client loads only when asked for

            self.exporter = Exporter()
            engine.observers.append(self.exporter.observe)  # before the workers start

    def snapshot(self) -> EngineStatus:
        status = self.engine.status()._replace(heartbeat=self.heartbeat, stopping=self._stopping)
        return canary.annotate(status, self.canary.last)

    def _start_metrics(self) -> None:
        if self.exporter is None or not self.engine.config.metrics:
            return
        host, port = config_values.metrics_address(self.engine.config.metrics)
        try:
            self.exporter.serve(host, port)
        except OSError as exc:
            # Like the control socket: replication matters more than the endpoint.
            log.error("cannot serve metrics on %s:%d: %s", host, port, exc.strerror)

    async def _canary_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.canary.run(self.engine.jobs)

    async def run(self, stop: asyncio.Event) -> None:
        await self.engine.ready.wait()
        server = control.Server(control.socket_path(self.engine.state_dir), self.handle)
        try:
            await server.start()
        except OSError as exc:
            # Replication matters more than the socket; `check` will report no daemon.
            log.error("cannot open the control socket %s: %s", server.path, exc)
        self._start_metrics()
        every = self.engine.config.canary_every
        scheduled = asyncio.create_task(self._canary_every(every)) if every else None
        self.beat(stop)
        self.notifier.send("READY=1")
        if self.on_ready is not None:
            self.on_ready()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.tick)
                self.beat(stop)
            self.notifier.send("STOPPING=1")
            while True:  # status still answers while the workers drain
                await asyncio.sleep(self.tick)
                self.beat(stop)
        finally:
            if scheduled is not None:
                scheduled.cancel()
            if self.exporter is not None:
                self.exporter.close()
            await server.close()

    def beat(self, stop: asyncio.Event) -> None:
        """One tick: stamp the heartbeat, refresh STATUS=, ping the watchdog if all is alive."""
        self.heartbeat = time.time()
        self._stopping = stop.is_set()
        status = self.snapshot()
        if self.exporter is not None:
            self.exporter.snapshot = status  # the metrics thread reads only this
        self.notifier.status(health.worst_lag(status))
        if self._stopping:
            return  # the watchers end on purpose; systemd's stop timeout takes over
        if status.down != self._withheld:
            self._withheld = status.down
            if status.down:
                log.error("not alive: %s; withholding the watchdog ping", ", ".join(status.down))
        if self.notifier.watchdog and not status.down:
            self.notifier.send("WATCHDOG=1")

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        command = request["command"]
        if command == "status":
            return {"ok": True, "status": health.to_json(self.snapshot())}
        if command == "canary":
            return self.run_canary(request.get("canary_timeout"))
        if command not in ("pause", "resume", "sync-now"):
            raise LookupError(
                f"unknown command {command!r}; known: status, canary, pause, resume, sync-now"
            )
        chosen = self.select(request.get("target"))
        for dispatcher in chosen:
            if command == "sync-now":
                dispatcher.submit(Batch(full=True))
            else:
                dispatcher.pause(command == "pause")
            log.info("%s: %s (asked on the control socket)", dispatcher.key, command)
        return {
            "ok": True,
            "targets": [d.key for d in chosen],
            "paused": [d.key for d in chosen if d.paused],
        }

    async def run_canary(self, timeout: object) -> dict[str, Any]:
        """``check --canary``: one canary now; the reply holds every target's outcome."""
        if timeout is not None and not (
            isinstance(timeout, int | float)
            and not isinstance(timeout, bool)
            and 0 < timeout < float("inf")
        ):
            raise LookupError(f"canary timeout must be a positive number, not {timeout!r}")
        outcomes = await self.canary.run(self.engine.jobs, timeout)
        return {"ok": True, "canary": [o.as_json() for o in outcomes]}

    def select(self, target: object) -> list[Dispatcher]:
        """Every target when none is named; else those whose URL or key is ``target``."""
        every = [d for job in self.engine.jobs for d in job.dispatchers]
        if target is None or target == "":
            return every
        if not isinstance(target, str):  # garbage such as {} must not mean "all"
            raise LookupError(f"target must be a URL string, not {target!r}")
        # The README's `trigsync pause rsync://host/www/` names `rsync://host/www` too.
        wanted = target.rstrip("/")
        chosen = [d for d in every if wanted in (d.target.name.rstrip("/"), d.key.rstrip("/"))]
        if not chosen:
            names = ", ".join(d.target.name for d in every)
            raise LookupError(f"no target {target!r}; targets: {names}")
        return chosen
