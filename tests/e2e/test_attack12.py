"""Hostile-tester cases for issue 12's promises that the rest of the suite does not cover."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import Start
from tests.e2e.harness import Replica
from tests.support.trees import wait_trees_equal

EXCLUDES = ["/site/.env", "site/conf/secret.key"]


def _excluded(path: bytes) -> bool:
    return path in (b"site/.env", b"site/conf/secret.key")


@pytest.mark.parametrize("replica", ["local", "ssh"], indirect=True)
def test_directory_rename_replayed_in_place_leaks_no_excluded_file(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    # The daemon's --link-dest rebuild rebases the excludes (test_link_dest_safety); a
    # rename replayed in place on a local or ssh replica must not carry site_new/.env,
    # replicated legitimately, to site/.env, which is excluded.
    new = source / "site_new"
    (new / "conf").mkdir(parents=True)
    (new / "index.html").write_bytes(b"<h1>hi</h1>\n")
    (new / ".env").write_bytes(b"DB_PASSWORD=hunter2\n")
    (new / "conf" / "secret.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    start_trigsync(replica, excludes=EXCLUDES)
    wait_trees_equal(source, replica.path, timeout=20, exclude=_excluded)
    assert (replica.path / "site_new" / ".env").exists()  # not excluded there

    os.rename(new, source / "site")

    wait_trees_equal(source, replica.path, timeout=20, exclude=_excluded)
    assert not (replica.path / "site" / ".env").exists(), "/site/.env leaked through the rename"
    assert not (replica.path / "site" / "conf" / "secret.key").exists()
