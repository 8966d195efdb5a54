"""rsync exit 23 is examined path by path: one bad path never holds back the others."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Directories made immutable (chattr +i) for the test, made mutable again after."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)  # noqa: S603


def test_a_refused_path_is_set_aside_and_the_rest_keep_flowing(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    immutable: list[Path],
) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    replica = daemon_replica(rsync_daemon_factory)
    (source / "blocked").mkdir()
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=10)
    # The receiver cannot create anything in an immutable directory: rsync exits 23.
    made = subprocess.run(["chattr", "+i", str(replica.path / "blocked")], check=False)  # noqa: S603
    if made.returncode != 0:
        pytest.skip("this filesystem does not support chattr +i")
    immutable.append(replica.path / "blocked")

    (source / "blocked" / "file").write_text("cannot land")
    for i in range(20):
        (source / f"ok{i:02d}").write_text(str(i))
    wait_for(lambda: "partial transfer" in trig.log(), timeout=15, what="exit 23")
    wait_for((replica.path / "ok19").exists, timeout=10, what="the good paths")
    for i in range(20):
        assert (replica.path / f"ok{i:02d}").read_text() == str(i)
    line = next(ln for ln in trig.log().splitlines() if "exit 23" in ln and "retrying" in ln)
    assert "blocked/file" in line and "ok0" not in line, line

    # Later changes go through at once, not behind a backoff.
    started = time.monotonic()
    (source / "later").write_text("fast")
    wait_for((replica.path / "later").exists, timeout=5, what="a later file")
    assert time.monotonic() - started < 2.0
    assert trig.proc is not None and trig.proc.running
