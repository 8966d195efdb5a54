"""A full sync still deletes when one source directory cannot be read (issue 12, finding 6).

Root reads every directory, so trigsync runs here as ``nobody`` (setpriv).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Replica, write_config
from tests.support.proc import ProcGroup, wait_for
from tests.support.trees import assert_trees_equal, wait_trees_equal

UNPRIVILEGED = "nobody"


def _as_nobody() -> list[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run trigsync as an unprivileged user")
    entry = pwd.getpwnam(UNPRIVILEGED)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]


@pytest.fixture
def base() -> Iterator[Path]:
    """source/{a,b,c} with b unreadable; a replica holding stale files everywhere."""
    path = Path(tempfile.mkdtemp(prefix="trigsync-unreadable-", dir="/tmp"))
    path.chmod(0o755)
    for d in "abc":
        (path / "source" / d).mkdir(parents=True)
        (path / "source" / d / "keep").write_bytes(d.encode())
        (path / "replica" / d).mkdir(parents=True)
        (path / "replica" / d / "keep").write_bytes(d.encode())
        (path / "replica" / d / "stale").write_bytes(b"deleted on the source")
    (path / "replica" / "stale_top").write_bytes(b"deleted on the source")
    entry = pwd.getpwnam(UNPRIVILEGED)
    for root, dirs, files in os.walk(path):
        for name in [".", *dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    (path / "source" / "b").chmod(0)
    try:
        yield path
    finally:
        (path / "source" / "b").chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


def _config(base: Path, *, initial_sync: bool) -> Path:
    replica = Replica("local", str(base / "replica"), base / "replica")
    path = base / f"trigsync-{int(initial_sync)}.toml"
    write_config(
        path,
        source=base / "source",
        replicas=[replica],
        state_dir=base / "state",
        initial_sync=initial_sync,
    )
    path.chmod(0o644)
    return path


def _argv(config: Path, *args: str) -> list[str]:
    return [*_as_nobody(), sys.executable, "-m", "trigsync", "run", "--config", str(config), *args]


def _stale_left(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base / "replica")) for p in (base / "replica").rglob("stale*"))


def test_deletions_happen_everywhere_but_under_the_unreadable_dir(base: Path) -> None:
    done = subprocess.run(  # noqa: S603 - fixed argv
        _argv(_config(base, initial_sync=True), "--once"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 5, done.stderr  # incomplete, and said so
    assert b"full sync incomplete" in done.stderr
    assert _stale_left(base) == ["b/stale"], done.stderr  # b's copy kept, all else deleted

    (base / "source" / "b").chmod(0o755)
    done = subprocess.run(  # noqa: S603 - fixed argv
        _argv(_config(base, initial_sync=True), "--once"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert_trees_equal(base / "source", base / "replica")


def test_an_incomplete_full_sync_stays_owed_across_a_restart(base: Path, procs: ProcGroup) -> None:
    proc = procs.start(_argv(_config(base, initial_sync=True), "-v"), name="trigsync")
    wait_for(lambda: b"full sync incomplete" in proc.stderr(), 30, what="the full sync")
    # Readable again while it runs, well before the stop: nothing changes after the stop,
    # so only the owed full sync, kept in the state directory, can delete b/stale.
    (base / "source" / "b").chmod(0o755)
    time.sleep(1.0)
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stderr()
    assert _stale_left(base) == ["b/stale"]

    proc = procs.start(_argv(_config(base, initial_sync=False), "-v"), name="trigsync-2")
    wait_for(lambda: not _stale_left(base), 30, what="the owed full sync")
    # b/stale goes before that run ends: rsync may still be writing b/.keep.XXXXXX then.
    wait_trees_equal(base / "source", base / "replica", timeout=10)
