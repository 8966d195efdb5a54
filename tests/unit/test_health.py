"""The pure reporting from status snapshots: durations, JSON, the table, the Nagios verdict."""

from __future__ import annotations

import json

import pytest

from trigsync import health
from trigsync.errors import ConfigError
from trigsync.status import EngineStatus, SyncStatus, TargetStatus

NOW = 1_800_000_000.0


def target(name: str = "rsync://u@h/www/", **kw: object) -> TargetStatus:
    fields: dict[str, object] = {
        "target": name,
        "state": "idle",
        "pending": 0,
        "full_pending": False,
        "in_flight": 0,
        "lag": 0.0,
        "last_error": None,
        "last_success": NOW - 5,
        "batches": 3,
        "paths_sent": 12,
        "failures": 0,
    }
    fields.update(kw)
    return TargetStatus(**fields)  # type: ignore[arg-type]


def engine(*targets: TargetStatus, down: tuple[str, ...] = ()) -> EngineStatus:
    return EngineStatus(
        (SyncStatus("/srv/www", 7, targets),), pid=42, started=NOW - 60, heartbeat=NOW, down=down
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("60s", 60.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("250ms", 0.25),
        (" 1d ", 86400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert health.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "-5s", "5 min", "1e3"])
def test_parse_duration_rejects_with_the_fix(text: str) -> None:
    with pytest.raises(ConfigError, match=r"not a duration; write e\.g\. 60s"):
        health.parse_duration(text)


def test_json_round_trip_keeps_every_field() -> None:
    status = engine(target(paused=True, pending=3, lag=4.5), target("/mnt/b"), down=("journal",))
    wire = json.loads(json.dumps(health.to_json(status)))
    assert health.from_json(wire) == status


def test_from_json_ignores_fields_a_newer_daemon_adds() -> None:
    wire = health.to_json(engine(target()))
    wire["new_top"] = 1
    wire["syncs"][0]["targets"][0]["bytes_sent"] = 99
    assert health.from_json(wire) == engine(target())


def test_check_ok_line_with_perfdata() -> None:
    verdict = health.check(engine(target(lag=0.25)), max_lag=60, warn_lag=30)
    assert verdict.code == health.OK
    assert verdict.line == (
        "TRIGSYNC OK - 1 target in sync, worst lag 0.2s | "
        "'rsync://u@h/www/ lag'=0.250s;30;60;0; 'rsync://u@h/www/ pending'=0;;;0;"
    )


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"lag": 31.0}, health.WARNING, "lag 31s > 30s"),
        ({"lag": 61.0}, health.CRITICAL, "lag 61s > 60s"),
        ({"state": "backoff", "last_error": "refused"}, health.WARNING, "retrying: refused"),
        ({"state": "failing", "last_error": "auth"}, health.WARNING, "failing: auth"),
        ({"paused": True, "pending": 4}, health.WARNING, "paused"),
        ({"paused": True, "lag": 120.0}, health.CRITICAL, "lag 120s > 60s"),
    ],
)
def test_check_verdicts(fields: dict[str, object], code: int, says: str) -> None:
    verdict = health.check(engine(target(), target("/mnt/b", **fields)), max_lag=60, warn_lag=30)
    assert verdict.code == code
    assert verdict.line.startswith(f"TRIGSYNC {('OK', 'WARNING', 'CRITICAL')[code]} - ")
    assert f"/mnt/b {says}" in verdict.line or says in verdict.line
    assert verdict.line.count("\n") == 0


def test_check_is_critical_when_a_part_is_down() -> None:
    verdict = health.check(
        engine(target(), down=("worker /srv/www -> /mnt/b",)), max_lag=60, warn_lag=30
    )
    assert verdict.code == health.CRITICAL
    assert "worker /srv/www -> /mnt/b is down" in verdict.line


def test_perfdata_labels_cannot_break_the_format() -> None:
    verdict = health.check(engine(target("/mnt/it's=odd")), max_lag=60, warn_lag=30)
    perf = verdict.line.split(" | ", 1)[1]
    assert "'/mnt/its_odd lag'=0.000s" in perf


def test_table_shows_each_target() -> None:
    text = health.table(
        engine(
            target(),
            target(
                "/mnt/b",
                state="backoff",
                pending=5,
                full_pending=True,
                lag=12.0,
                last_error="refused",
            ),
            target("/mnt/c", paused=True, last_success=None),
        ),
        NOW,
    )
    lines = text.splitlines()
    assert lines[0] == "trigsync pid 42, up 60s, heartbeat 0.0s ago"
    assert "/srv/www (7 directories watched)" in lines
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line.startswith("  /") or "rsync://" in line
    }
    assert rows["rsync://u@h/www/"][1:5] == ["ok", "0", "0.0s", "5.0s"]
    assert rows["/mnt/b"][1:4] == ["retrying", "5", "+full"]
    assert rows["/mnt/b"][-1] == "refused"
    assert rows["/mnt/c"][1] == "paused"
    assert "never" in rows["/mnt/c"]


def test_worst_lag_for_sd_notify_status() -> None:
    status = engine(target(lag=1.4), target("/mnt/b", lag=75.2, paused=True))
    assert health.worst_lag(status) == "2 targets, worst lag 75s (/mnt/b), 1 paused"


def test_a_stopping_daemon_warns_instead_of_reporting_its_watchers_down() -> None:
    status = engine(target(), down=("watcher /srv/www",))._replace(stopping=True)
    verdict = health.check(status, max_lag=60, warn_lag=30)
    assert verdict.code == health.WARNING
    assert verdict.line.startswith("TRIGSYNC WARNING - the daemon is stopping |")
    assert health.table(status, NOW).splitlines()[0].endswith(", stopping")


def test_an_error_text_cannot_break_the_nagios_line() -> None:
    status = engine(target(state="backoff", last_error="rsync: a | b\n  second line"))
    line = health.check(status, max_lag=60, warn_lag=30).line
    assert "\n" not in line
    assert line.count("|") == 1
    assert "a / b second line" in line
