"""A source directory swapped for a symlink never makes rsync copy what it points to.

``--files-from`` implies ``--relative``, and rsync's sender follows a symlink in any
directory above a listed name: a pending ``a/key`` sent after ``a`` became a symlink to
a directory outside the source would copy that directory's ``key`` onto the replica, as
root. Both layers are under test here: the check before each list (ancestry.py) and the
kernel's no-symlink view of the source (sourceview.py) that closes its race.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BOTH_BACKENDS, Start
from tests.e2e.harness import Replica
from tests.support.trees import wait_trees_equal

SETTLE = 5.0
SECRET = b"not part of the source"
# With a delay, changes merge in the pending set before they are sent, whatever the
# timing of the reads: what a busy target does too (changes wait while a run is in flight).
DELAYED = {"delay": 0.5}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


def _leaks(replica: Path) -> list[Path]:
    """Files on the replica that hold the secret (symlinks are not followed)."""
    found = []
    for dirpath, _, files in os.walk(replica):
        for name in files:
            path = Path(dirpath) / name
            try:
                if not path.is_symlink() and SECRET in path.read_bytes():
                    found.append(path)
            except OSError:
                pass  # replaced while we looked
    return found


@BOTH_BACKENDS
def test_dir_swapped_for_a_symlink_never_copies_what_it_points_to(
    source: Path, replica: Replica, outside: Path, start_trigsync: Start
) -> None:
    secret = outside / "secret"
    secret.mkdir()
    (secret / "key").write_bytes(SECRET)
    (source / "a").mkdir()
    (source / "a" / "key").write_text("public")
    start_trigsync(replica, extra=DELAYED)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    shutil.rmtree(source / "a")
    os.symlink(secret, source / "a")
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    assert (replica.path / "a").is_symlink()
    assert not _leaks(replica.path)


@BOTH_BACKENDS
def test_dir_raced_against_a_symlink_never_leaks(
    source: Path, tmp_path: Path, outside: Path, start_trigsync: Start
) -> None:
    """A writer swaps ``d`` between a directory and a symlink to ``outside`` for 1.5 s
    while files below it change: ``outside``'s file never reaches the replica."""
    replica = Replica("local", str(tmp_path / "replica"), tmp_path / "replica")
    replica.path.mkdir()
    (outside / "f").write_bytes(SECRET)
    (source / "d").mkdir()
    (source / "d" / "f").write_text("public")
    start_trigsync(replica, extra={"delay": 0.02})
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    stop = threading.Event()

    def swap() -> None:
        d, parked = source / "d", source / "parked"
        n = 0
        while not stop.is_set():
            n += 1
            (d / "f").write_text(f"public {n}")
            (d / f"g{n % 5}").write_text(f"more {n}")
            os.rename(d, parked)
            os.symlink(outside, d)
            time.sleep(0.002)
            os.unlink(d)
            os.rename(parked, d)

    racer = threading.Thread(target=swap)
    racer.start()
    leaks: list[Path] = []
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and not leaks:
            leaks = _leaks(replica.path)
            time.sleep(0.01)
    finally:
        stop.set()
        racer.join()
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    assert not leaks and not _leaks(replica.path)
