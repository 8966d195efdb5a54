"""Every kind of change reaches every kind of target: real rsync daemon, real sshd, local dir.

After each operation the replica must equal the source: names, types, bytes, modes and
symlink targets.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import BOTH_BACKENDS, Start
from tests.e2e.harness import Replica
from tests.support.trees import assert_trees_equal, wait_trees_equal
from tests.support.workload import WEIRD_NAMES, make_tree

pytestmark = BOTH_BACKENDS


def settle(source: Path, replica: Replica, timeout: float = 15.0) -> None:
    wait_trees_equal(source, replica.path, timeout=timeout, owners=replica.owners)


def test_initial_sync_and_basic_file_changes(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    make_tree(source, dirs=3, files_per_dir=4, seed=1)
    (source / "stale-on-replica-only").write_text("x")
    os.remove(source / "stale-on-replica-only")
    (replica.path / "extra").write_text("the initial sync deletes me")
    trig = start_trigsync(replica)
    settle(source, replica)

    f = source / "file.txt"
    f.write_bytes(b"hello\n")  # create
    settle(source, replica)
    with f.open("ab") as fh:  # append
        fh.write(b"more\n")
    settle(source, replica)
    f.write_bytes(b"HELLO\nMORE\n")  # overwrite with the same size, within the same second
    settle(source, replica)
    f.write_bytes(b"HELLO\nMORX\n")
    settle(source, replica)
    os.truncate(f, 2)  # truncate
    settle(source, replica)
    f.unlink()  # delete
    settle(source, replica)
    assert not (replica.path / "file.txt").exists()
    assert trig.stop() == 0, trig.log()


def test_directories_renames_and_moves(
    source: Path, replica: Replica, start_trigsync: Start, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    start_trigsync(replica)

    deep = source / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)  # mkdir -p
    (deep / "leaf.txt").write_text("leaf")
    (source / "empty").mkdir()  # an empty directory
    settle(source, replica)

    os.rename(source / "a" / "b" / "c" / "d" / "e" / "leaf.txt", source / "leaf-moved.txt")
    os.rename(source / "a" / "b", source / "empty" / "b-moved")  # dir across directories
    settle(source, replica)
    (source / "empty" / "b-moved" / "c" / "after-rename.txt").write_text("new path")
    settle(source, replica)

    os.rename(source / "empty", outside / "gone")  # out of the tree
    settle(source, replica)
    (outside / "gone" / "written-outside.txt").write_text("must not appear")

    make_tree(outside / "incoming", dirs=3, files_per_dir=3, seed=2)
    os.rename(outside / "incoming", source / "incoming")  # into the tree
    settle(source, replica)

    shutil.rmtree(source / "incoming")  # rm -rf
    settle(source, replica)
    assert not any(b"written-outside" in p for p in os.listdir(os.fsencode(replica.path)))


def test_modes_symlinks_and_hard_links(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    start_trigsync(replica)
    target = source / "data.bin"
    target.write_bytes(os.urandom(5000))
    (source / "sub").mkdir()
    settle(source, replica)

    target.chmod(0o600)  # chmod a file
    (source / "sub").chmod(0o700)  # chmod a directory
    settle(source, replica)

    os.symlink("data.bin", source / "rel-link")
    os.symlink("../data.bin", source / "sub" / "up-link")
    os.symlink("does/not/exist", source / "dangling")
    os.link(target, source / "hard-link")  # its bytes must arrive
    settle(source, replica)
    assert (replica.path / "hard-link").read_bytes() == target.read_bytes()
    assert os.readlink(replica.path / "sub" / "up-link") == "../data.bin"

    os.remove(source / "rel-link")
    os.symlink("sub", source / "rel-link")  # retarget a symlink
    settle(source, replica)


def test_hostile_file_names(
    source: Path,
    replica: Replica,
    start_trigsync: Start,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    start_trigsync(replica)
    base = os.fsencode(source)
    for name in WEIRD_NAMES:
        with open(os.path.join(base, name), "wb") as fh:
            fh.write(name)
    os.mkdir(os.path.join(base, b"dir with \n newline \xff"))
    with open(os.path.join(base, b"dir with \n newline \xff", b"-child"), "wb") as fh:
        fh.write(b"child")
    settle(source, replica)
    for name in (b"-rf", b"--delete", b"new\nline", b"caf\xe9"):
        os.remove(os.path.join(base, name))
    settle(source, replica)
    for where in (source, replica.path, tmp_path, Path.cwd(), Path("/")):
        assert not (where / "PWNED").exists(), f"a file name ran a command in {where}"


def test_big_file(source: Path, replica: Replica, start_trigsync: Start) -> None:
    start_trigsync(replica)
    chunk = os.urandom(1 << 20)
    with (source / "big.bin").open("wb") as fh:
        for i in range(200):
            fh.write(chunk[i:] + chunk[:i])
    settle(source, replica, timeout=120)


def test_excludes_apply_to_watcher_and_rsync(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    (source / "cache").mkdir()
    (source / "cache" / "old").write_text("excluded before start")
    (source / "keep.txt").write_text("kept")
    start_trigsync(replica, excludes=["*.tmp", "cache/"])
    (source / "x.tmp").write_text("never")
    (source / "cache" / "new").write_text("never")
    (source / "y.txt").write_text("yes")
    ignore = lambda p: p.endswith(b".tmp") or p == b"cache" or p.startswith(b"cache/")  # noqa: E731
    wait_trees_equal(source, replica.path, timeout=15, owners=replica.owners, exclude=ignore)
    assert not (replica.path / "x.tmp").exists()
    assert not (replica.path / "cache").exists()
    assert_trees_equal(source, replica.path, owners=replica.owners, exclude=ignore)
