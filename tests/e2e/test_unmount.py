"""A filesystem unmounted inside the source tree: the replica follows what is left."""

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


@pytest.fixture
def mountpoint(source: Path) -> Iterator[Path]:
    """A tmpfs mounted at ``source/mnt`` (root only), unmounted at the end if still there."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    path = source / "mnt"
    path.mkdir()
    (path / "under-the-mount").write_text("hidden while mounted")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "none", str(path)], check=False)  # noqa: S603
    if mounted.returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False, capture_output=True)  # noqa: S603


@BOTH_BACKENDS
def test_unmount_inside_the_tree_reconciles(
    source: Path, tmp_path: Path, mountpoint: Path, start_trigsync: Start
) -> None:
    replica = Replica("local", str(tmp_path / "replica"), tmp_path / "replica")
    replica.path.mkdir()
    (mountpoint / "on-the-mount").write_text("only while mounted")
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=10)
    assert (replica.path / "mnt" / "on-the-mount").exists()

    before = trig.log().count("full sync done")
    subprocess.run(["umount", str(mountpoint)], check=True)  # noqa: S603
    wait_for(lambda: trig.log().count("full sync done") > before, timeout=10, what="a reconcile")
    wait_trees_equal(source, replica.path, timeout=10)
    assert (replica.path / "mnt" / "under-the-mount").exists()
    assert not (replica.path / "mnt" / "on-the-mount").exists()


def test_a_bind_mount_unmounted_inside_the_tree_is_followed(
    source: Path, tmp_path: Path, start_trigsync: Start
) -> None:
    # Unmounting a bind mount raises no IN_UNMOUNT (its filesystem stays mounted where it
    # came from): only the mount table says that source/mnt shows another directory now.
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount")
    elsewhere, mnt = tmp_path / "elsewhere", source / "mnt"
    elsewhere.mkdir()
    (elsewhere / "from-the-bind").write_text("only while bound")
    mnt.mkdir()
    (mnt / "under-the-mount").write_text("hidden while bound")
    subprocess.run(["mount", "--bind", str(elsewhere), str(mnt)], check=True)  # noqa: S603
    try:
        replica = Replica("local", str(tmp_path / "replica"), tmp_path / "replica")
        replica.path.mkdir()
        start_trigsync(replica)
        wait_trees_equal(source, replica.path, timeout=10)
        assert (replica.path / "mnt" / "from-the-bind").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)  # noqa: S603
    wait_trees_equal(source, replica.path, timeout=10)
    assert not (replica.path / "mnt" / "from-the-bind").exists()
