"""The Grafana dashboard in docs/ parses and queries only metrics trigsync exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from trigsync.metrics import NAMES, Exporter
from trigsync.status import EngineStatus, RunReport, SyncStatus, TargetStatus

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


def test_dashboard_uses_only_exported_metric_names() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard)
    assert len(exprs) >= 10
    used = {m for e in exprs for m in re.findall(r"\btrigsync_[a-z_]+", e)}
    assert used <= NAMES, used - NAMES
    # It shows what the issue asks for: lag, pending, run durations, failures, canary.
    for wanted in (
        "trigsync_lag_seconds",
        "trigsync_pending_paths",
        "trigsync_rsync_run_seconds_bucket",
        "trigsync_failures_total",
        "trigsync_canary_round_trip_seconds",
    ):
        assert wanted in used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_name_list_matches_what_the_exporter_exports() -> None:
    exporter = Exporter()
    target = TargetStatus("rsync://h/m/", "idle", 0, False, 0, 0.0, None, 1.0, 1, 1, 0)
    exporter.snapshot = EngineStatus(
        (SyncStatus("/src", 1, (target._replace(canary_rtt=0.1, canary_error=None),)),),
        heartbeat=1.0,
    )
    exporter.observe(RunReport("/src", "rsync://h/m/", (b"a",), False, 0.01, "ok"))
    exporter.observe(RunReport("/src", "rsync://h/m/", (b"a",), False, 0.01, "busy", "x", 5))
    names = {s.name for family in exporter.registry.collect() for s in family.samples}
    assert names == NAMES
