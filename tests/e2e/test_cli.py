"""The command line as users and systemd meet it: exit codes, one-line errors, signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.e2e.harness import ENV
from tests.e2e.harness import run_cli as trigsync
from tests.support.ports import free_port
from tests.support.proc import Proc, ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonFactory, rsync_binary
from tests.support.trees import assert_trees_equal, wait_trees_equal
from tests.support.workload import make_tree


def start(procs: ProcGroup, *args: str, cwd: Path | None = None) -> Proc:
    argv = [sys.executable, "-m", "trigsync", *args]
    proc = procs.start(argv, name="trigsync", env=ENV, cwd=cwd)
    wait_for(
        lambda: b"watching " in proc.stderr() or not proc.running,
        timeout=20,
        what="trigsync to start watching",
    )
    assert proc.running, proc.describe()
    return proc


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.mkdir()
    (path / "hello.txt").write_text("hello\n")
    return path


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def daemon(rsync_daemon_factory: RsyncDaemonFactory) -> RsyncDaemon:
    return rsync_daemon_factory(use_chroot=True)


def daemon_args(daemon: RsyncDaemon, state: str, *extra: str) -> list[str]:
    return [daemon.url, "--password-file", str(daemon.password_file), "--state-dir", state, *extra]


def test_version() -> None:
    result = trigsync("--version")
    assert result.returncode == 0
    assert result.stdout.strip().startswith("trigsync ")
    assert result.stdout.split()[1][0].isdigit(), result.stdout


def test_unknown_config_key_names_file_and_key(tmp_path: Path, src: Path, state: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[[sync]]\nsource = "{src}"\ntargets = ["{tmp_path}/replica"]\ndelya = 1\n')
    result = trigsync("run", "--config", str(config), "--state-dir", state)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert str(config) in line and "delya" in line, line
    assert "'delay'" in line, f"no hint at the fix: {line}"


def test_invalid_toml_is_a_config_error(tmp_path: Path, state: str) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[[sync]\nsource = \n")
    result = trigsync("run", "--config", str(config), "--state-dir", state)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert str(config) in line and "TOML" in line, line


def test_missing_password_file(tmp_path: Path, src: Path, state: str) -> None:
    missing = tmp_path / "nope.pass"
    url = f"rsync://tsync@127.0.0.1:{free_port()}/www/"
    result = trigsync("run", str(src), url, "--password-file", str(missing), "--state-dir", state)
    assert result.returncode == 3, result.stderr
    line = one_line_error(result)
    assert str(missing) in line and "chmod 600" in line, line


def test_world_readable_password_file(tmp_path: Path, src: Path, state: str) -> None:
    password = tmp_path / "open.pass"
    password.write_text("s3cret\n")
    password.chmod(0o644)
    url = f"rsync://tsync@127.0.0.1:{free_port()}/www/"
    result = trigsync("run", str(src), url, "--password-file", str(password), "--state-dir", state)
    assert result.returncode == 3, result.stderr
    line = one_line_error(result)
    assert str(password) in line and f"chmod 600 {password}" in line, line
    assert "s3cret" not in result.stderr


def test_missing_source_dir(tmp_path: Path, state: str) -> None:
    missing = tmp_path / "no-such-source"
    result = trigsync("run", str(missing), str(tmp_path / "replica"), "--state-dir", state)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert str(missing) in line and "not a directory" in line, line


def test_run_without_targets_is_a_usage_error(src: Path, state: str) -> None:
    result = trigsync("run", str(src), "--state-dir", state)
    assert result.returncode == 2, result.stderr
    assert "usage: trigsync" in result.stderr
    assert "at least one TARGET" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_0(
    procs: ProcGroup, tmp_path: Path, src: Path, state: str, sig: signal.Signals
) -> None:
    replica = tmp_path / "replica"
    proc = start(procs, "run", str(src), str(replica), "--state-dir", state, "--initial-sync")
    wait_trees_equal(src, replica, timeout=15)
    (src / "late.txt").write_text("late")
    wait_trees_equal(src, replica, timeout=15)
    proc.signal(sig)
    assert proc.wait(30) == 0, proc.describe()
    assert b"stopped" in proc.stderr()
    assert b"Traceback" not in proc.stderr(), proc.describe()


def test_once_pushes_the_tree_and_exits_0(src: Path, state: str, daemon: RsyncDaemon) -> None:
    make_tree(src, dirs=4, files_per_dir=5, seed=3)
    (daemon.module_path / "extraneous").write_text("deleted by the reconciling push")
    result = trigsync("run", str(src), *daemon_args(daemon, state, "--once"))
    assert result.returncode == 0, result.stderr
    assert_trees_equal(src, daemon.module_path)


def test_once_with_daemon_down_exits_5(src: Path, state: str, daemon: RsyncDaemon) -> None:
    daemon.stop()
    started = time.monotonic()
    result = trigsync("run", str(src), *daemon_args(daemon, state, "--once"))
    assert result.returncode == 5, result.stderr
    assert "exit 10" in result.stderr, result.stderr
    assert time.monotonic() - started < 30, "--once must not retry forever"
    assert not (daemon.module_path / "hello.txt").exists()


def test_initial_sync_deletes_extraneous_files(
    procs: ProcGroup, src: Path, state: str, daemon: RsyncDaemon
) -> None:
    extra = daemon.module_path / "extraneous"
    extra.write_text("only on the replica")
    # Without --initial-sync, only changed paths travel: the extra file stays.
    proc = start(procs, "run", str(src), *daemon_args(daemon, state))
    (src / "changed.txt").write_text("changed")
    wait_for((daemon.module_path / "changed.txt").exists, timeout=15, what="changed.txt")
    assert extra.exists()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.describe()

    proc = start(procs, "run", str(src), *daemon_args(daemon, state, "--initial-sync"))
    wait_trees_equal(src, daemon.module_path, timeout=15)
    assert not extra.exists()


def test_hostile_names_in_once_run_execute_nothing(
    tmp_path: Path, src: Path, state: str, daemon: RsyncDaemon
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in ("x`touch PWNED`y", "$(touch PWNED)", "; touch PWNED", "-e touch PWNED"):
        (src / name).write_text(name)
    result = trigsync("run", str(src), *daemon_args(daemon, state, "--once"), cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert_trees_equal(src, daemon.module_path)
    assert (daemon.module_path / "x`touch PWNED`y").read_text() == "x`touch PWNED`y"
    for where in (src, daemon.module_path, cwd, tmp_path, Path.cwd()):
        assert not (where / "PWNED").exists(), f"a file name ran a command in {where}"


def _wait_retry_logged(proc: Proc) -> None:
    wait_for(
        lambda: b"exit 10" in proc.stderr() or b"refused" in proc.stderr(),
        timeout=15,
        what="a logged retry after connection refused",
    )


def test_unreachable_daemon_is_retried_until_it_appears(
    procs: ProcGroup, tmp_path: Path, src: Path, state: str
) -> None:
    """Nothing listens on the port at start: trigsync keeps running and catches up later."""
    if rsync_binary() is None:
        pytest.skip("rsync not installed")
    port = free_port()
    late = RsyncDaemon(tmp_path / "late-daemon", use_chroot=True)
    url = f"rsync://{late.user}@{late.host}:{port}/{late.module}/"
    args: Sequence[str] = (url, "--password-file", str(late.password_file), "--state-dir", state)
    proc = start(procs, "run", str(src), *args, "--initial-sync")
    try:
        (src / "while-down.txt").write_text("queued while nothing listened")
        _wait_retry_logged(proc)
        time.sleep(2)
        assert proc.running, proc.describe()
        late.start(ports=[port])
        (src / "after-up.txt").write_text("written once the daemon is up")
        wait_trees_equal(src, late.module_path, timeout=40)
    finally:
        late.kill()


def test_daemon_restart_loses_nothing(
    procs: ProcGroup, src: Path, state: str, daemon: RsyncDaemon
) -> None:
    proc = start(procs, "run", str(src), *daemon_args(daemon, state, "--initial-sync"))
    wait_trees_equal(src, daemon.module_path, timeout=15)
    daemon.stop()
    make_tree(src / "during-outage", dirs=3, files_per_dir=4, seed=9)
    (src / "hello.txt").unlink()
    _wait_retry_logged(proc)
    time.sleep(2)
    assert proc.running, proc.describe()
    daemon.restart()
    wait_trees_equal(src, daemon.module_path, timeout=40)
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.describe()


@pytest.mark.parametrize(
    "args", [["--max-lagg", "60s"], ["--max-lag", "soon"], ["--warn-lag", "-1"]]
)
def test_check_called_wrong_is_unknown_not_critical(tmp_path: Path, args: list[str]) -> None:
    """A monitoring plugin's usage error is UNKNOWN (3), one line on stdout; exit 2 would
    page someone for a CRITICAL that is only a typo in the check's command."""
    result = trigsync("check", "--state-dir", str(tmp_path), *args)
    assert result.returncode == 3, result
    assert result.stdout.startswith("TRIGSYNC UNKNOWN - "), result.stdout
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
