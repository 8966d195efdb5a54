"""Excluded files never reach a daemon through a directory rename (issue 12, finding 5)."""

from __future__ import annotations

import os
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
