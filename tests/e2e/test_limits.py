"""Running out of inotify watches: a clear fix, or (as root, when asked) a raised limit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Start
from tests.e2e.harness import Replica
from tests.support.trees import wait_trees_equal
from trigsync import fanotify

LIMIT = "/proc/sys/fs/inotify/max_user_watches"
# The lowered limit holds for every watcher on the machine: run alone (see the Makefile).
pytestmark = pytest.mark.serial


@pytest.fixture
def low_watch_limit() -> Iterator[int]:
    """fs.inotify.max_user_watches at 100 for the test, restored afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to change fs.inotify.max_user_watches")
    old = Path(LIMIT).read_text()
    Path(LIMIT).write_text("100\n")
    try:
        yield 100
    finally:
        Path(LIMIT).write_text(old)


def big_tree(source: Path) -> None:
    for i in range(300):
        (source / f"d{i:03d}").mkdir()
    (source / "d000" / "file").write_text("x")


@pytest.mark.usefixtures("low_watch_limit")
def test_too_few_watches_stops_with_the_sysctl_fix(source: Path, tmp_path: Path) -> None:
    big_tree(source)
    replica = tmp_path / "replica"
    replica.mkdir()
    argv = [sys.executable, "-m", "trigsync", "run", str(source), str(replica)]
    argv += ["--state-dir", str(tmp_path / "state"), "--watch-backend", "inotify"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    assert result.returncode == 3, result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if "ERROR" in ln]
    assert "fs.inotify.max_user_watches" in line and "sysctl -w" in line and "301" in line


def test_auto_raise_limits_as_root(
    source: Path, tmp_path: Path, start_trigsync: Start, low_watch_limit: int
) -> None:
    big_tree(source)
    replica = Replica("local", str(tmp_path / "replica"), tmp_path / "replica")
    replica.path.mkdir()
    trig = start_trigsync(replica, extra={"auto_raise_limits": True})
    assert "raised fs.inotify.max_user_watches" in trig.log()
    assert int(Path(LIMIT).read_text()) > low_watch_limit
    (source / "d299" / "late").write_text("seen by a watch that needed the raise")
    wait_trees_equal(source, replica.path, timeout=20)


@pytest.mark.usefixtures("low_watch_limit")
def test_too_few_watches_are_no_matter_to_the_auto_backend(
    source: Path, tmp_path: Path, start_trigsync: Start
) -> None:
    """With ``watch_backend = "auto"`` as root, the same tree is watched with fanotify,
    which needs no watch per directory."""
    if (why := fanotify.probe(os.fsencode(source))) is not None:
        pytest.skip(f"fanotify backend not usable here: {why}")
    big_tree(source)
    replica = Replica("local", str(tmp_path / "replica"), tmp_path / "replica")
    replica.path.mkdir()
    trig = start_trigsync(replica, extra={"watch_backend": "auto"})
    assert "with fanotify: auto: " in trig.log()
    (source / "d299" / "late").write_text("seen without any inotify watch")
    wait_trees_equal(source, replica.path, timeout=20)
