"""The end-to-end canary: `check --canary` and `canary_every` against real targets; the
probe is confirmed by reading each target, never by trusting rsync's exit status."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.harness import Replica
from tests.e2e.test_service import cli, only_target
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal

PROBE = f".trigsync-canary-{socket.gethostname()}"


def test_canary_passes_on_a_healthy_target_and_is_removed(
    start_trigsync: Start, source: Path, replica: Replica, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    (source / "a.txt").write_text("a\n")
    start_trigsync(replica, top={"canary_timeout": 15})
    wait_trees_equal(source, replica.path)
    result = cli(state, "check", "--canary")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("TRIGSYNC OK - 1 target in sync"), result.stdout
    assert "canary arrived everywhere" in result.stdout
    assert f"'{replica.url} canary'=" in result.stdout
    target = only_target(state)
    assert target["canary_error"] is None
    assert 0 < target["canary_rtt"] < 15
    assert not (source / PROBE).exists()  # removed from the source...
    wait_trees_equal(source, replica.path)  # ...and so from the replica


def test_canary_fails_on_a_read_only_module(
    start_trigsync: Start, source: Path, rsync_daemon_factory: RsyncDaemonFactory, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    replica = daemon_replica(rsync_daemon_factory)
    assert replica.daemon is not None
    start_trigsync(replica)
    wait_trees_equal(source, replica.path)
    conf = replica.daemon.config_path
    conf.write_text(conf.read_text().replace("read only = no", "read only = yes"))
    replica.daemon.restart()  # and its standby connection goes with the old config
    started = time.monotonic()
    result = cli(state, "check", "--canary", "--canary-timeout", "3s")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith("TRIGSYNC CRITICAL - "), result.stdout
    assert f"{replica.url} canary: not on the target within 3 s" in result.stdout
    assert "ERROR: module is read only" in result.stdout, result.stdout  # the target's own word
    assert time.monotonic() - started < 20
    assert not (replica.path / PROBE).exists()
    assert only_target(state)["canary_error"] is not None


def test_canary_fails_when_the_daemon_is_stopped(
    start_trigsync: Start, source: Path, rsync_daemon_factory: RsyncDaemonFactory, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    replica = daemon_replica(rsync_daemon_factory)
    assert replica.daemon is not None
    start_trigsync(replica)
    wait_trees_equal(source, replica.path)
    replica.daemon.stop()
    result = cli(state, "check", "--canary", "--canary-timeout", "2s")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{replica.url} canary: not on the target within 2 s: cannot read it back" in (
        result.stdout
    )
    replica.daemon.restart()
    wait_for(lambda: cli(state, "check", "--canary").returncode == 0, 30, 1.0, "the canary to pass")


def test_canary_every_exports_the_round_trip(
    start_trigsync: Start, source: Path, rsync_daemon_factory: RsyncDaemonFactory, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    replica = daemon_replica(rsync_daemon_factory)
    start_trigsync(replica, top={"canary_every": 0.5, "canary_name": ".probe"})
    wait_for(lambda: only_target(state)["canary_rtt"] is not None, 20, 0.3, "a scheduled canary")
    assert only_target(state)["canary_error"] is None
    assert cli(state, "check").returncode == 0
