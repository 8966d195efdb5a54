"""The Prometheus endpoint, scraped over HTTP from a real daemon replicating a known burst."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.test_service import only_target
from tests.support.ports import LOOPBACK, free_port
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from trigsync.metrics import NAMES

BURST = 40


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_counters_match_a_known_burst(
    start_trigsync: Start, source: Path, rsync_daemon_factory: RsyncDaemonFactory, tmp_path: Path
) -> None:
    for sub in ("a", "b"):
        (source / sub).mkdir()
    replica = daemon_replica(rsync_daemon_factory)
    port = free_port()
    start_trigsync(replica, top={"metrics": f"{LOOPBACK}:{port}"})
    wait_trees_equal(source, replica.path)
    state = tmp_path / "state"
    wait_for(lambda: only_target(state)["batches"] >= 1, 10, 0.1, "the initial sync")
    before = only_target(state)
    # Each file is complete before it appears (a rename from outside the tree): one event,
    # one path, whatever the batching.
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(BURST):
        f = outside / f"f{i}"
        f.write_bytes(b"x" * i)
        os.rename(f, source / ("a", "b")[i % 2] / f"f{i}")
    wait_trees_equal(source, replica.path)
    target = {"source": str(source), "target": replica.url}

    def settled() -> bool:
        s = scrape(port)
        return bool(value(s, "trigsync_paths_sent_total", **target) == before["paths_sent"] + BURST)

    wait_for(settled, 10, 0.2, f"{BURST} more paths sent in the metrics")
    samples = scrape(port)
    status = only_target(state)
    assert status["paths_sent"] == before["paths_sent"] + BURST
    batches = value(samples, "trigsync_batches_total", **target)
    assert batches == status["batches"]
    assert batches is not None and batches >= 2  # the initial sync and at least one for the burst
    # Every run went through the histogram: the successful ones, no failure.
    assert value(samples, "trigsync_rsync_run_seconds_count", **target) == batches
    assert value(samples, "trigsync_rsync_run_seconds_bucket", **target, le="+Inf") == batches
    assert value(samples, "trigsync_run_failures_total", **target) == 0
    assert value(samples, "trigsync_pending_paths", **target) == 0
    assert value(samples, "trigsync_lag_seconds", **target) == 0
    assert value(samples, "trigsync_watches", source=str(source)) == 3
    assert value(samples, "trigsync_overflows_total", source=str(source)) == 0
    assert value(samples, "trigsync_up") == 1
    success = value(samples, "trigsync_last_success_timestamp_seconds", **target)
    assert success is not None and success == status["last_success"]
    assert {name for name, _ in samples} <= NAMES

    # A stopped daemon: each failed run is counted by kind, beside the snapshot's total.
    assert replica.daemon is not None
    replica.daemon.stop()
    (source / "a" / "late").write_text("late\n")

    def failed() -> float:
        return value(scrape(port), "trigsync_failures_total", **target, kind="transient") or 0

    wait_for(lambda: failed() >= 2, 15, 0.2, "two transient failures")

    def agree() -> bool:
        # The snapshot's total follows on the next heartbeat; backoff leaves it time to.
        s = scrape(port)
        by_kind = sum(v for (n, _), v in s.items() if n == "trigsync_failures_total")
        return by_kind == value(s, "trigsync_run_failures_total", **target)

    wait_for(agree, 15, 0.1, "the failure counters to agree")
    samples = scrape(port)
    waiting = [value(samples, f"trigsync_{n}_paths", **target) for n in ("pending", "in_flight")]
    # The late file waits, unless a reconcile absorbed it: a run cut short by the stop
    # (a standby the daemon killed mid-list) asks for one, which covers every path.
    full = value(samples, "trigsync_full_sync_pending", **target)
    assert sum(v or 0 for v in waiting) == 1 or full == 1, (waiting, full)
    assert {name for name, _ in samples} <= NAMES
