"""Second attack on issue 16: the lazy fanotify backend (directories found by handle when
their first event comes, a bounded cache of them, handles found outside remembered) and
the slimmer inotify tree, with a real trigsync process and a local replica.

Cases of ``test_attack16`` are not repeated here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BOTH_BACKENDS, Start
from tests.e2e.harness import Replica
from tests.support.proc import wait_for
from tests.support.trees import wait_trees_equal

SETTLE = 5.0  # the deadline of an outcome that comes in well under a second
BROKEN = 2.0  # the same, where the test is an expected failure: it costs this much


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    path = tmp_path / "replica"
    path.mkdir()
    return Replica("local", str(path), path)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the source, on the same filesystem."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


def _mount(*argv: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    done = subprocess.run(["mount", *argv], check=False, capture_output=True)  # noqa: S603
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(argv)} is not permitted here")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)  # noqa: S603


@pytest.fixture
def bound(source: Path, outside: Path) -> Iterator[Path]:
    """``outside/shared`` (same filesystem as the source) bind-mounted at source/shared."""
    (outside / "shared" / "old").mkdir(parents=True)
    (outside / "shared" / "old" / "f").write_text("made before start")
    (source / "shared").mkdir()
    _mount("--bind", str(outside / "shared"), str(source / "shared"))
    try:
        yield source / "shared"
    finally:
        _umount(source / "shared")


@BOTH_BACKENDS
def test_a_directory_bind_mounted_from_beside_the_source_is_watched(
    source: Path, bound: Path, replica: Replica, start_trigsync: Start
) -> None:
    start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    (bound / "new").write_text("written through the bind mount")
    (bound / "old" / "g").write_text("deeper")
    wait_trees_equal(source, replica.path, timeout=BROKEN)


@BOTH_BACKENDS
def test_a_hard_link_made_after_start_to_an_old_file_carries_writes_back(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    (source / "a").mkdir()
    (source / "b").mkdir()
    (source / "a" / "orig").write_text("one")
    start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    os.link(source / "a" / "orig", source / "b" / "link")
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    with open(source / "b" / "link", "a") as f:
        f.write(" two")
    wait_trees_equal(source, replica.path, timeout=BROKEN)


@BOTH_BACKENDS
def test_a_neighbour_directory_written_then_moved_in_then_written(
    source: Path, replica: Replica, outside: Path, start_trigsync: Start
) -> None:
    (outside / "n" / "deep").mkdir(parents=True)
    start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    (outside / "n" / "deep" / "noise").write_text("outside: not ours")
    (outside / "n" / "noise").write_text("outside: not ours")
    (source / "poke").write_text("a wake-up after the neighbour's")
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    os.rename(outside / "n", source / "n")
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    (source / "n" / "deep" / "later").write_text("in the moved-in directory")
    (source / "n" / "later").write_text("in the moved-in directory")
    wait_trees_equal(source, replica.path, timeout=BROKEN)


@BOTH_BACKENDS
def test_an_excluded_directory_renamed_in_and_out_of_the_excludes(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    (source / "x.tmp" / "sub").mkdir(parents=True)
    start_trigsync(replica, excludes=["*.tmp"])
    wait_trees_equal(source, replica.path, timeout=SETTLE, exclude=lambda p: b".tmp" in p)
    (source / "x.tmp" / "sub" / "f").write_text("excluded")
    (source / "poke").write_text("a wake-up after it")
    wait_trees_equal(source, replica.path, timeout=SETTLE, exclude=lambda p: b".tmp" in p)
    os.rename(source / "x.tmp", source / "x")
    wait_trees_equal(source, replica.path, timeout=SETTLE, exclude=lambda p: b".tmp" in p)
    (source / "x" / "sub" / "g").write_text("not excluded now")
    wait_trees_equal(source, replica.path, timeout=BROKEN, exclude=lambda p: b".tmp" in p)
    os.rename(source / "x", source / "x.tmp")
    wait_trees_equal(source, replica.path, timeout=SETTLE, exclude=lambda p: b".tmp" in p)
    (source / "x.tmp" / "sub" / "h").write_text("excluded again")
    os.rename(source / "x.tmp", source / "y")
    (source / "y" / "sub" / "i").write_text("and back")
    wait_trees_equal(source, replica.path, timeout=BROKEN, exclude=lambda p: b".tmp" in p)


@BOTH_BACKENDS
def test_a_directory_bind_mounted_from_beside_the_source_after_start_is_watched(
    source: Path, outside: Path, replica: Replica, start_trigsync: Start
) -> None:
    (outside / "shared" / "old").mkdir(parents=True)
    (source / "shared").mkdir()
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    _mount("--bind", str(outside / "shared"), str(source / "shared"))
    try:
        wait_for(lambda: "was mounted or unmounted" in trig.log(), timeout=SETTLE, what="mount")
        wait_trees_equal(source, replica.path, timeout=SETTLE)
        (source / "shared" / "new").write_text("written through the bind mount")
        (source / "shared" / "old" / "g").write_text("deeper")
        wait_trees_equal(source, replica.path, timeout=BROKEN)
    finally:
        _umount(source / "shared")
