"""-d/--daemon, --pid-file and a log file that SIGHUP reopens (machines without systemd)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ENV
from tests.e2e.harness import run_cli as trigsync
from tests.support.proc import ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonFactory
from tests.support.trees import wait_trees_equal


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Background daemons started by a test; SIGKILLed at teardown if still there."""
    started: list[int] = []
    try:
        yield started
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_daemon_mode_pid_file_and_log_reopen(
    tmp_path: Path, rsync_daemon_factory: RsyncDaemonFactory, pids: list[int]
) -> None:
    daemon: RsyncDaemon = rsync_daemon_factory(use_chroot=True)
    source, state = tmp_path / "src", tmp_path / "state"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    pid_file, log_file = tmp_path / "trigsync.pid", tmp_path / "log" / "trigsync.log"
    common = [str(source), daemon.url, "--password-file", str(daemon.password_file)]
    common += ["--state-dir", str(state)]
    started = trigsync(
        "run", *common, "--initial-sync", "-d", "--pid-file", str(pid_file),
        "--log-file", str(log_file),
    )  # fmt: skip
    # The parent returns once the child is ready: watches placed, the socket up.
    assert started.returncode == 0, started.stderr
    pid = int(pid_file.read_text())
    pids.append(pid)
    assert alive(pid)
    assert os.getsid(pid) == pid  # its own session: no terminal to lose
    status = trigsync("status", "--state-dir", str(state))
    assert status.stdout.startswith(f"trigsync pid {pid}, "), status.stderr
    wait_trees_equal(source, daemon.module_path)
    assert "watching " in log_file.read_text()

    second = trigsync("run", *common, "-d")  # the state directory is taken
    assert second.returncode == 3
    assert "is in use by another trigsync" in second.stderr
    assert alive(pid)

    rotated = log_file.with_name("trigsync.log.1")
    log_file.rename(rotated)
    os.kill(pid, signal.SIGHUP)
    wait_for(log_file.exists, 5, what="a new log file after SIGHUP")
    (source / "b.txt").write_text("b\n")
    wait_trees_equal(source, daemon.module_path)
    wait_for(lambda: "sent 1 paths" in log_file.read_text(), 5, what="the batch in the new log")
    assert "SIGHUP: reopened 1 log file" in log_file.read_text()
    assert "sent 1 paths" not in rotated.read_text()  # the old file got no more lines

    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), 30, what="the daemon to stop")
    assert not pid_file.exists()
    assert "stopped" in log_file.read_text()


def test_daemon_mode_reports_a_failed_start_on_the_terminal(tmp_path: Path) -> None:
    result = trigsync(
        "run", str(tmp_path), "/nonexistent-parent/replica", "--rsync-path", "no-such-rsync",
        "--state-dir", str(tmp_path / "state"), "-d", "--pid-file", str(tmp_path / "pid"),
    )  # fmt: skip
    assert result.returncode == 3
    assert "no-such-rsync" in result.stderr
    assert not (tmp_path / "pid").exists()


def test_sighup_without_a_log_file_stops_cleanly(tmp_path: Path, procs: ProcGroup) -> None:
    source, replica = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    replica.mkdir()
    argv = [sys.executable, "-m", "trigsync", "run", str(source), str(replica)]
    proc = procs.start([*argv, "--state-dir", str(tmp_path / "state")], name="trigsync", env=ENV)
    wait_for(lambda: b"watching " in proc.stderr(), 20, what="trigsync to start watching")
    proc.signal(signal.SIGHUP)  # its terminal went away
    assert proc.wait(30) == 0, proc.stderr().decode()
    assert b"stopped" in proc.stderr()
