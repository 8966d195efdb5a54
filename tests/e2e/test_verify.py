"""``trigsync verify`` reports drift on the receiver and exits non-zero."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Start, daemon_replica
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from tests.support.workload import make_tree


def verify(
    source: Path, url: str, password_file: str, state: Path
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "trigsync", "verify", str(source), url]
    argv += ["--password-file", password_file, "--state-dir", str(state)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603


def test_verify_finds_drift_made_on_the_receiver(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, tmp_path: Path
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    password = str(replica.options["password_file"])
    make_tree(source, dirs=3, files_per_dir=5, seed=5)
    subprocess.run(  # noqa: S603 - fixed argv
        ["rsync", "-a", f"--password-file={password}", f"{source}/", replica.url], check=True
    )
    clean = verify(source, replica.url, password, tmp_path / "state")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "in sync" in clean.stdout

    victim = sorted(p for p in replica.path.rglob("*") if p.is_file())[0]
    victim.write_text("edited on the receiver")
    (replica.path / "stray").write_text("only on the receiver")
    drift = verify(source, replica.url, password, tmp_path / "state")
    assert drift.returncode == 1, drift.stdout + drift.stderr
    assert str(victim.relative_to(replica.path)) in drift.stdout
    assert re.search(r"\*deleting +stray", drift.stdout)


def test_verify_of_an_unreachable_target_says_so(source: Path, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    pw.chmod(0o600)
    result = verify(source, "rsync://u@127.0.0.1:9/www/", str(pw), tmp_path / "state")
    assert result.returncode == 5
    assert "cannot verify" in result.stdout and "exit 10" in result.stdout


def test_reconcile_every_repairs_drift_made_on_the_receiver(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    make_tree(source, dirs=2, files_per_dir=3, seed=9)
    start_trigsync(replica, extra={"reconcile_every": 1})
    wait_trees_equal(source, replica.path, timeout=10)
    (replica.path / "stray").write_text("made on the receiver")
    victim = sorted(p for p in replica.path.rglob("*") if p.is_file() and p.name != "stray")[0]
    victim.write_text("edited on the receiver")
    # No change on the source: only the periodic full sync can repair this.
    wait_trees_equal(source, replica.path, timeout=10)
