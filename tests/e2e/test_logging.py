"""Logging as a service writes it: JSON lines, a log file from the config, one INFO line
per batch per target, the full rsync argv at DEBUG, and never a password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.harness import Replica, Trigsync, write_config
from tests.support.proc import ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal

SECRET = "pw-9f3Kq!never-logged"


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_with_argv_at_debug_and_no_password(
    start_trigsync: Start,
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One daemon reached with a password file, one with RSYNC_PASSWORD: both secrets are
    # known to the process, and neither may reach the log.
    by_file = daemon_replica(rsync_daemon_factory)
    by_env = daemon_replica(rsync_daemon_factory)
    assert by_env.daemon is not None
    secrets = by_env.daemon.secrets_path
    secrets.write_text(secrets.read_text().replace(by_env.daemon.password, SECRET))
    by_env.options = {}
    monkeypatch.setenv("RSYNC_PASSWORD", SECRET)
    (source / "a.txt").write_text("a\n")
    ts = start_trigsync(by_file, by_env, top={"log_format": "json"})  # started with -v
    wait_trees_equal(source, by_file.path)
    wait_trees_equal(source, by_env.path)
    for i in range(3):
        (source / f"f{i}").write_text(f"{i}\n")
    wait_trees_equal(source, by_file.path)
    wait_trees_equal(source, by_env.path)
    assert ts.stop() == 0
    text = ts.log()
    records = lines(text)  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(records[0])
    messages = [(r["level"], str(r["message"])) for r in records]
    argv = [m for level, m in messages if level == "DEBUG" and m.startswith("rsync argv: ")]
    assert any("--password-file=" in m and by_file.url in m for m in argv)
    assert any(by_env.url in m for m in argv)
    for replica in (by_file, by_env):
        sent = [
            m for level, m in messages if level == "INFO" and m.startswith(f"{replica.url}: sent ")
        ]
        assert sent, f"no INFO line per batch for {replica.url}"
    assert SECRET not in text
    assert by_file.daemon is not None and by_file.daemon.password not in text


def test_log_file_from_the_config(procs: ProcGroup, source: Path, tmp_path: Path) -> None:
    replica_dir = tmp_path / "replica"
    replica_dir.mkdir()
    log_file = tmp_path / "logs" / "trigsync.log"
    config = write_config(
        tmp_path / "trigsync.toml",
        source=source,
        replicas=[Replica("local", str(replica_dir), replica_dir)],
        state_dir=tmp_path / "state",
        top={"log_file": str(log_file), "log_format": "json"},
        # With the initial sync, "x" written as it starts went with it, and no batch line
        # came (make test, once).
        initial_sync=False,
    )
    ts = Trigsync(procs, config).start(wait_watching=False)
    wait_for(lambda: log_file.exists() and "watching " in log_file.read_text(), 20, 0.1, "the log")
    (source / "x").write_text("x\n")
    wait_trees_equal(source, replica_dir)
    wait_for(lambda: ": sent 1 paths" in log_file.read_text(), 10, 0.1, "the batch line")
    assert ts.stop() == 0
    assert lines(log_file.read_text())[-1]["message"] == "stopped"
    assert ts.log() == ""  # nothing on stderr once the file is the log
