"""The optional Prometheus endpoint (``metrics = "127.0.0.1:9108"``).

Gauges and totals are read from the latest status snapshot at scrape time (the HTTP
server runs in its own thread, so it reads only the immutable snapshot the event loop
last published). Two things a snapshot cannot hold are fed by the workers' run
observer: the rsync run duration histogram and the failures by kind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .status import EngineStatus, RunReport

log = logging.getLogger(__name__)

NAMESPACE = "trigsync"
TARGET = ("source", "target")
# From a standby run on loopback (a few ms) to a full sync of a big tree (minutes).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

# Every name the endpoint can export (the dashboard test checks against this).
NAMES = frozenset(
    f"{NAMESPACE}_{n}"
    for n in (
        "up",
        "heartbeat_timestamp_seconds",
        "pending_paths",
        "in_flight_paths",
        "lag_seconds",
        "paused",
        "full_sync_pending",
        "batches_total",
        "paths_sent_total",
        "run_failures_total",
        "failures_total",
        "failures_created",
        "last_success_timestamp_seconds",
        "canary_round_trip_seconds",
        "canary_ok",
        "watches",
        "overflows_total",
        "rsync_run_seconds_bucket",
        "rsync_run_seconds_count",
        "rsync_run_seconds_sum",
        "rsync_run_seconds_created",
    )
)


class Exporter(Collector):
    """Owns the registry: snapshot-based metrics plus the run observer's histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.snapshot: EngineStatus | None = None  # replaced whole by the event loop
        self.runs = Histogram(
            "rsync_run_seconds",
            "Wall time of each rsync run, by target",
            TARGET,
            namespace=NAMESPACE,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.failures = Counter(
            "failures",
            "Failed rsync runs by kind: transient, permanent, busy",
            (*TARGET, "kind"),
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.registry.register(self)
        self._server: Any = None

    def observe(self, report: RunReport) -> None:
        """A dispatcher's run observer: one histogram sample, one failure if it failed."""
        labels = (report.source, report.target)
        self.runs.labels(*labels).observe(report.seconds)
        if report.kind not in ("ok", "partial"):
            self.failures.labels(*labels, report.kind).inc()

    def serve(self, host: str, port: int) -> None:
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names vary with the snapshot; nothing to check at register time

    def collect(self) -> Iterator[Metric]:
        status = self.snapshot
        up = GaugeMetricFamily(f"{NAMESPACE}_up", "1 while the daemon runs and is not stopping")
        up.add_metric([], 0.0 if status is None or status.stopping else 1.0)
        yield up
        if status is None:
            return
        beat = GaugeMetricFamily(
            f"{NAMESPACE}_heartbeat_timestamp_seconds", "When the main loop last ticked"
        )
        beat.add_metric([], status.heartbeat or 0.0)
        yield beat
        yield from _per_sync(status)
        yield from _per_target(status)


def _per_sync(status: EngineStatus) -> Iterator[Metric]:
    watches = GaugeMetricFamily(
        f"{NAMESPACE}_watches", "Directories watched with inotify", labels=["source"]
    )
    overflows = CounterMetricFamily(
        f"{NAMESPACE}_overflows",
        "inotify queue overflows (each episode costs one reconciling sync)",
        labels=["source"],
    )
    for sync in status.syncs:
        watches.add_metric([sync.source], sync.watches)
        overflows.add_metric([sync.source], sync.overflows)
    yield watches
    yield overflows


def _per_target(status: EngineStatus) -> Iterator[Metric]:
    def gauge(name: str, text: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{NAMESPACE}_{name}", text, labels=list(TARGET))

    def counter(name: str, text: str) -> CounterMetricFamily:
        return CounterMetricFamily(f"{NAMESPACE}_{name}", text, labels=list(TARGET))

    pending = gauge("pending_paths", "Paths changed and not yet sent")
    in_flight = gauge("in_flight_paths", "Paths in the rsync runs now under way")
    lag = gauge("lag_seconds", "Age of the oldest change the target has not confirmed")
    paused = gauge("paused", "1 while the target is paused")
    full = gauge("full_sync_pending", "1 while a reconciling full sync is pending")
    success = gauge("last_success_timestamp_seconds", "When a run last succeeded")
    canary = gauge("canary_round_trip_seconds", "Last canary: write to confirmed read-back")
    canary_ok = gauge("canary_ok", "1 if the last canary arrived, 0 if it failed")
    batches = counter("batches", "Successful rsync runs")
    sent = counter("paths_sent", "Paths (files, directories, deletions) sent")
    failed = counter("run_failures", "Failed rsync runs, all kinds")
    for sync in status.syncs:
        for t in sync.targets:
            labels = [sync.source, t.target]
            pending.add_metric(labels, t.pending)
            in_flight.add_metric(labels, t.in_flight)
            lag.add_metric(labels, t.lag)
            paused.add_metric(labels, float(t.paused))
            full.add_metric(labels, float(t.full_pending))
            batches.add_metric(labels, t.batches)
            sent.add_metric(labels, t.paths_sent)
            failed.add_metric(labels, t.failures)
            if t.last_success is not None:
                success.add_metric(labels, t.last_success)
            if t.canary_rtt is not None:
                canary.add_metric(labels, t.canary_rtt)
            if t.canary_rtt is not None or t.canary_error is not None:
                canary_ok.add_metric(labels, float(t.canary_error is None))
    yield from (pending, in_flight, lag, paused, full, success, canary, canary_ok)
    yield from (batches, sent, failed)
