"""A daemon's --link-dest rebuild of a renamed directory: it leaks no excluded file
(issue 12, finding 5) and never writes through a symlink the replica holds (finding 3)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal

EXCLUDES = ["/site/.env", "site/conf/secret.key", "*.tmp"]


def excluded(path: bytes) -> bool:
    return path in (b"site/.env", b"site/conf/secret.key") or path.endswith(b".tmp")


@pytest.mark.parametrize("files", [40], ids=["worth-linking"])
def test_directory_renamed_onto_an_excluded_path_leaks_nothing(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start, files: int
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    new = source / "site_new"
    (new / "conf").mkdir(parents=True)
    for i in range(files):  # enough for the daemon's --link-dest rebuild
        (new / f"page{i:02d}.html").write_bytes(os.urandom(4096))
    (new / ".env").write_bytes(b"DB_PASSWORD=hunter2\n")
    (new / "conf" / "secret.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    start_trigsync(replica, excludes=EXCLUDES)
    wait_trees_equal(source, replica.path, timeout=30, exclude=excluded)
    assert (replica.path / "site_new" / ".env").exists()  # not excluded there

    os.rename(new, source / "site")

    wait_trees_equal(source, replica.path, timeout=30, exclude=excluded)
    assert not (replica.path / "site" / ".env").exists(), "/site/.env leaked through the rename"
    assert not (replica.path / "site" / "conf" / "secret.key").exists()


def test_rename_over_a_replicated_symlink_rebuilds_inside_the_replica(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    # chroot: the daemon keeps symlinks exact, and /victim resolves to module/victim
    replica = daemon_replica(rsync_daemon_factory)
    (source / "victim").mkdir()
    (source / "victim" / "keep").write_bytes(b"must stay\n")
    (source / "site").symlink_to("/victim")
    new = source / "site_new"
    new.mkdir()
    for i in range(40):
        (new / f"page{i:02d}.html").write_bytes(os.urandom(4096))
    start_trigsync(replica, extra={"delay": 1.0})
    wait_trees_equal(source, replica.path, timeout=30)
    assert os.readlink(replica.path / "site") == "/victim"

    (source / "site").unlink()  # in one delay window: the symlink goes, a directory takes
    os.rename(new, source / "site")  # its name

    wait_trees_equal(source, replica.path, timeout=30)
    assert (replica.path / "victim" / "keep").read_bytes() == b"must stay\n"


@pytest.mark.parametrize("where", ["old", "below-old"])
def test_rebuild_never_links_through_a_symlink_in_the_old_directory(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start, where: str
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    (source / "victim").mkdir()
    (source / "victim" / "keep").write_bytes(b"must not be linked\n")
    old = source / "site_new"
    if where == "old":  # site_new -> /victim is replicated as a symlink
        old.symlink_to("/victim")
        inner = old
    else:  # site_new/sub -> /victim
        old.mkdir()
        (old / "sub").symlink_to("/victim")
        inner = old / "sub"
    start_trigsync(replica, extra={"delay": 1.0})
    wait_trees_equal(source, replica.path, timeout=30)

    # In one delay window: the symlink becomes a directory holding a copy of the file it
    # pointed at (same bytes, mode and time), and the directory is renamed.
    inner.unlink()
    inner.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "victim" / "keep", inner / "keep")
    for i in range(40):
        (old / f"page{i:02d}.html").write_bytes(os.urandom(4096))
    os.rename(old, source / "site")

    wait_trees_equal(source, replica.path, timeout=30)
    kept = (replica.path / "victim" / "keep").stat()
    assert kept.st_nlink == 1, "the rebuild hard-linked a file through a replica symlink"
