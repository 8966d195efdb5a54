"""The daemon as a service: status, check, pause, resume and sync-now through the real
control socket, and sd_notify on a datagram socket the test binds itself."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.harness import Replica
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import assert_trees_equal, wait_trees_equal

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argv list, no shell
        [sys.executable, "-m", "trigsync", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=30,
        check=False,
    )


def status(state: Path) -> dict[str, Any]:
    result = cli(state, "status", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def only_target(state: Path) -> dict[str, Any]:
    (sync,) = status(state)["syncs"]
    (target,) = sync["targets"]
    return target  # type: ignore[no-any-return]


@pytest.fixture
def replica(rsync_daemon_factory: RsyncDaemonFactory) -> Replica:
    return daemon_replica(rsync_daemon_factory)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"  # where start_trigsync puts it


def test_status_reports_the_running_daemon(
    start_trigsync: Start, source: Path, replica: Replica, state: Path
) -> None:
    (source / "a.txt").write_text("a\n")
    ts = start_trigsync(replica)
    wait_trees_equal(source, replica.path)
    sock = state / "control.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    wait_for(lambda: only_target(state)["last_success"] is not None, 10, what="a success")
    data = status(state)
    assert ts.proc is not None
    assert data["pid"] == ts.proc.pid
    assert data["down"] == []
    assert isinstance(data["heartbeat"], float)
    assert time.time() - data["heartbeat"] < 5
    target = only_target(state)
    assert target["target"] == replica.url
    assert (target["state"], target["paused"], target["pending"]) == ("idle", False, 0)
    table = cli(state, "status")
    assert table.returncode == 0
    row = next(line for line in table.stdout.splitlines() if replica.url in line)
    assert row.split()[1:3] == ["ok", "0"]
    ok = cli(state, "check")
    assert (ok.returncode, ok.stdout.split(" - ")[0]) == (0, "TRIGSYNC OK"), ok.stdout
    by_config = subprocess.run(  # noqa: S603 - argv list, no shell
        [sys.executable, "-m", "trigsync", "status", "--json", "--config", str(ts.config)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=30,
        check=False,
    )  # the state directory comes from the config file
    assert json.loads(by_config.stdout)["pid"] == ts.proc.pid, by_config.stderr


def test_lag_grows_while_paused_and_resume_sends_it(
    start_trigsync: Start, source: Path, replica: Replica, state: Path
) -> None:
    start_trigsync(replica)
    wait_trees_equal(source, replica.path)
    paused = cli(state, "pause", replica.url)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith(f"paused {source} -> {replica.url}")
    for i in range(20):
        (source / f"f{i}.txt").write_text(f"{i}\n" * 100)
    wait_for(lambda: only_target(state)["pending"] == 20, 10, what="20 pending paths")
    first = only_target(state)
    time.sleep(1.5)
    second = only_target(state)
    assert second["paused"] is True
    assert second["lag"] >= first["lag"] + 1.0
    assert second["pending"] == 20
    assert not (replica.path / "f0.txt").exists()  # nothing was sent
    row = next(line for line in cli(state, "status").stdout.splitlines() if replica.url in line)
    assert row.split()[1:3] == ["paused", "20"]
    critical = cli(state, "check", "--max-lag", "1s")
    assert critical.returncode == 2, critical.stdout
    assert critical.stdout.startswith("TRIGSYNC CRITICAL - ")
    assert "paused" in critical.stdout
    warning = cli(state, "check", "--max-lag", "60s")
    assert warning.returncode == 1, warning.stdout

    resumed = cli(state, "resume")
    assert resumed.returncode == 0, resumed.stderr
    wait_trees_equal(source, replica.path)
    wait_for(lambda: only_target(state)["lag"] == 0.0, 10, what="lag back to 0")
    assert cli(state, "check").returncode == 0


def test_check_turns_nonzero_when_a_targets_daemon_stops(
    start_trigsync: Start, source: Path, replica: Replica, state: Path
) -> None:
    start_trigsync(replica)
    wait_trees_equal(source, replica.path)
    assert cli(state, "check", "--max-lag", "10s").returncode == 0
    assert replica.daemon is not None
    replica.daemon.stop()
    stopped = time.monotonic()
    (source / "while-down.txt").write_text("queued\n")
    results: list[subprocess.CompletedProcess[str]] = []

    def failing() -> bool:
        results.append(cli(state, "check", "--max-lag", "10s"))
        return results[-1].returncode != 0

    wait_for(failing, 30, interval=0.5, what="check to fail")
    assert time.monotonic() - stopped < 30
    assert results[-1].stdout.startswith(("TRIGSYNC WARNING - ", "TRIGSYNC CRITICAL - "))
    assert replica.url in results[-1].stdout
    # Past the lag limit it is critical.
    wait_for(lambda: cli(state, "check", "--max-lag", "2s").returncode == 2, 10, 0.5, "critical")
    replica.daemon.restart()
    wait_trees_equal(source, replica.path, timeout=45)
    wait_for(lambda: cli(state, "check", "--max-lag", "10s").returncode == 0, 20, 0.5, "ok again")


def test_sync_now_repairs_drift_on_the_target(
    start_trigsync: Start, source: Path, replica: Replica, state: Path
) -> None:
    (source / "keep.txt").write_text("source\n")
    start_trigsync(replica)
    wait_trees_equal(source, replica.path)
    (replica.path / "keep.txt").write_text("changed on the receiver\n")
    (replica.path / "stray.txt").write_text("not in the source\n")
    time.sleep(0.5)
    with pytest.raises(AssertionError):
        assert_trees_equal(source, replica.path)  # nothing repairs it by itself
    result = cli(state, "sync-now")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("full sync queued for ")
    wait_trees_equal(source, replica.path)


def test_commands_without_a_daemon_fail_with_one_line(tmp_path: Path) -> None:
    check = cli(tmp_path, "check")
    assert check.returncode == 2
    assert check.stdout.startswith("TRIGSYNC CRITICAL - no trigsync daemon answers on ")
    assert check.stdout.count("\n") == 1
    for args in (["status"], ["pause"], ["sync-now", "x"]):
        result = cli(tmp_path, *args)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert "no trigsync daemon answers on" in lines[0]


def test_an_unknown_target_is_refused_with_the_names(
    start_trigsync: Start, replica: Replica, state: Path
) -> None:
    start_trigsync(replica)
    result = cli(state, "pause", "rsync://nobody@nowhere/x/")
    assert result.returncode == 1
    assert f"no target 'rsync://nobody@nowhere/x/'; targets: {replica.url}" in result.stderr
    assert only_target(state)["paused"] is False


def test_sd_notify_ready_watchdog_stopping(
    start_trigsync: Start,
    source: Path,
    replica: Replica,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(20)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "300000")  # 0.3 s: a ping every 0.15 s
        ts = start_trigsync(replica)
        got: list[bytes] = []
        while b"READY=1" not in got:
            got.append(sock.recv(4096))
        assert ts.proc is not None
        assert b"watching " in ts.proc.stderr()  # READY=1 only once the watches are placed
        ready_at = time.monotonic()
        pings = 0
        sock.settimeout(1)
        while time.monotonic() - ready_at < 1.5:
            message = sock.recv(4096)
            got.append(message)
            pings += message == b"WATCHDOG=1"
        assert pings >= 5, got
        assert any(m.startswith(b"STATUS=1 target, worst lag ") for m in got), got
        assert ts.stop() == 0
        rest: list[bytes] = []
        sock.settimeout(0.5)
        while True:
            try:
                rest.append(sock.recv(4096))
            except TimeoutError:
                break
    assert b"STOPPING=1" in rest, rest
    assert b"WATCHDOG=1" not in rest[rest.index(b"STOPPING=1") :]
    assert "not alive" not in ts.log()  # a clean stop ends the watchers on purpose
    wait_trees_equal(source, replica.path)


def test_stop_while_paused_keeps_the_pending_paths_for_the_next_start(
    start_trigsync: Start, source: Path, replica: Replica, state: Path
) -> None:
    ts = start_trigsync(replica)
    wait_trees_equal(source, replica.path)
    assert cli(state, "pause").returncode == 0
    (source / "later.txt").write_text("sent after the restart\n")
    wait_for(lambda: only_target(state)["pending"] == 1, 10, what="1 pending path")
    began = time.monotonic()
    assert ts.stop() == 0
    assert time.monotonic() - began < 10  # a paused worker does not hold the stop up
    assert not (replica.path / "later.txt").exists()
    start_trigsync(replica, initial_sync=False)  # pause lasts one run; the journal has the path
    wait_trees_equal(source, replica.path)
