"""A move replayed on a replica never follows a symlink the replica holds (issue 12, finding 3)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, ssh_replica
from tests.e2e.harness import Replica
from tests.support.sshd import SshServer
from tests.support.trees import wait_trees_equal
from trigsync.targets.ssh import REMOTE_RENAME

SECRET = b"root:$6$do-not-touch\n"


@pytest.fixture(params=["local", "ssh"])
def moved_replica(request: pytest.FixtureRequest, tmp_path: Path) -> Replica:
    if request.param == "ssh":
        return ssh_replica(request.getfixturevalue("ssh_target"))
    path = tmp_path / "replica"
    path.mkdir()
    return Replica("local", str(path), path)


@contextlib.contextmanager
def outside_of(replica: Path) -> Iterator[Path]:
    """A directory outside both trees, writable by whoever applies the moves."""
    path = Path(tempfile.mkdtemp(prefix="trigsync-outside-", dir="/tmp"))
    (path / "shadow").write_bytes(SECRET)
    st = os.stat(replica)
    for p in (path, path / "shadow"):
        os.chown(p, st.st_uid, st.st_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def outside(moved_replica: Replica) -> Iterator[Path]:
    with outside_of(moved_replica.path) as path:
        yield path


def test_move_under_a_replaced_symlink_stays_in_the_replica(
    source: Path, moved_replica: Replica, outside: Path, start_trigsync: Start
) -> None:
    (source / "x").symlink_to(outside)
    start_trigsync(moved_replica, extra={"delay": 1.0})
    wait_trees_equal(source, moved_replica.path, timeout=30, owners=moved_replica.owners)
    assert os.readlink(moved_replica.path / "x") == str(outside)

    # Within one delay window: the symlink becomes a directory, and a file moves out of it.
    (source / "x").unlink()
    (source / "x").mkdir()
    (source / "x" / "shadow").write_bytes(b"")
    os.rename(source / "x" / "shadow", source / "z")

    wait_trees_equal(source, moved_replica.path, timeout=30, owners=moved_replica.owners)
    assert (outside / "shadow").read_bytes() == SECRET, "a file outside the replica was moved"
    assert sorted(os.listdir(outside)) == ["shadow"]


def test_remote_rename_script_refuses_symlinked_parents(ssh_target: SshServer) -> None:
    """The remote step alone: a pair below a symlink is refused, a plain pair is renamed."""
    with outside_of(ssh_target.replica) as outside:
        _remote_rename(ssh_target, outside)


def _remote_rename(ssh_target: SshServer, outside: Path) -> None:
    replica = ssh_target.replica
    (replica / "x").symlink_to(outside)
    (replica / "a").write_bytes(b"a")
    os.chown(replica / "a", os.stat(replica).st_uid, os.stat(replica).st_gid)
    stdin = os.fsencode(replica) + b"/\0x/shadow\0z\0a\0b\0"
    done = subprocess.run(  # noqa: S603 - fixed argv
        ssh_target.ssh_argv(*REMOTE_RENAME), input=stdin, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"01"
    assert (outside / "shadow").read_bytes() == SECRET
    assert not (replica / "z").exists() and (replica / "b").read_bytes() == b"a"
