"""Hostile-tester cases for issue 12's promises that the rest of the suite does not cover."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, local_replica
from tests.e2e.harness import Replica, Trigsync, write_config
from tests.support.proc import ProcGroup, wait_for
from tests.support.trees import wait_trees_equal
from trigsync.excludes import Excludes

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


@pytest.fixture
def small_fs(replica: Replica) -> Iterator[Replica]:
    """The replica on a 1 MiB tmpfs: a receiver that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(  # noqa: S603 - a fixed argv
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(replica.path)], check=True
    )
    try:
        yield replica
    finally:
        subprocess.run(["umount", "-l", str(replica.path)], check=False)  # noqa: S603


@pytest.mark.parametrize("replica", ["local", "rsyncd"], indirect=True)
def test_a_file_too_big_for_a_full_target_holds_back_no_other_change(
    source: Path, small_fs: Replica, start_trigsync: Start
) -> None:
    # The README: a path the receiver refuses is retried on its own "while everything
    # else flows". A disk-full receiver makes rsync exit 11, not 23, so the batch is
    # retried whole, forever, and every later change waits behind the one big file.
    replica = small_fs
    start_trigsync(replica, initial_sync=False)
    (source / "big.bin").write_bytes(os.urandom(2 << 20))  # twice the target's size
    time.sleep(1.0)  # its runs fail with ENOSPC and are retried with backoff
    for i in range(5):
        (source / f"small{i}.txt").write_bytes(b"fits easily\n")
    wait_for(
        lambda: all((replica.path / f"small{i}.txt").exists() for i in range(5)),
        timeout=10,
        what="the small files to reach the full target beside the big one",
    )


def _below(replica: Replica, name: str) -> Replica:
    """A replica one directory below ``replica``'s, owned by its user, who can make it again
    (the ssh fixture's own replica directory sits in a directory only root may write)."""
    path = replica.path / name
    path.mkdir()
    owner = replica.path.stat()
    os.chown(path, owner.st_uid, owner.st_gid)
    return dataclasses.replace(replica, url=f"{replica.url.rstrip('/')}/{name}", path=path)


def _tree_with_depth(source: Path) -> None:
    (source / "a" / "b").mkdir(parents=True)
    (source / "a" / "b" / "f.txt").write_bytes(b"deep\n")
    (source / "top.txt").write_bytes(b"top\n")


@pytest.mark.parametrize("replica", ["local", "ssh"], indirect=True)
def test_a_replica_deleted_under_trigsync_is_rebuilt_whole(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    # Someone removes the replica directory (a cleanup script, a wrong rm -rf). rsync
    # makes the last component again ("created directory") for the next change, so the
    # replica then holds that one file and nothing else until a reconcile, 10 min later.
    replica = _below(replica, "site")
    _tree_with_depth(source)
    start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=20)

    shutil.rmtree(replica.path)
    (source / "next.txt").write_bytes(b"the next change\n")
    wait_trees_equal(source, replica.path, timeout=10)


@pytest.mark.parametrize("replica", ["ssh"], indirect=True)
def test_a_deleted_replica_its_user_cannot_make_again_is_rebuilt_whole_once_it_is_back(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    # The ssh user may not write the replica's parent (deploy@web2:/var/www): rsync
    # cannot make the replica again and exits 11 ("mkdir ... failed"). That is the
    # target failing, loudly, not a path to set aside; once an admin puts the directory
    # back, empty, the whole tree must follow, not only the changes made since.
    _tree_with_depth(source)
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=20)
    owner = replica.path.stat()

    shutil.rmtree(replica.path)
    try:
        (source / "next.txt").write_bytes(b"the next change\n")
        wait_for(
            lambda: "mkdir" in trig.log() and "Permission denied" in trig.log(),
            timeout=10,
            what="the failing mkdir to be reported",
        )
        assert "set aside" not in trig.log() and "retrying them every" not in trig.log()
    finally:
        replica.path.mkdir(exist_ok=True)  # the admin puts it back (the fixture needs it too)
        os.chown(replica.path, owner.st_uid, owner.st_gid)
    wait_trees_equal(source, replica.path, timeout=20)


NAMES = [b"x.d]", b"x.1", b"x.a", b"foo\\x", b"foo*", b"foox", b"a[b", b"ab", b"-x", b"b-", b"]z"]


@pytest.mark.parametrize(
    "pattern",
    [
        "*.[[:digit:]]",
        "foo\\*",
        "*[[:alpha:]]",
        "a[b*",
        "[\\-]*",
        "*[a\\-]",
        "[]a]*",
        "[!a-f]*",
        "*[[:digit:]x]",
        "[[:bogus:]]*",
        "*[a-]",
        "foo\\x",
    ],
)
def test_the_watcher_excludes_no_name_that_rsync_sends(tmp_path: Path, pattern: str) -> None:
    # The watcher drops events for what it thinks is excluded, so a name it excludes
    # and rsync does not is never sent, only repaired by a reconcile. rsync's wildmatch
    # knows [[:digit:]] classes and backslash escapes (in a pattern with a wildcard).
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name in NAMES:
        (src / os.fsdecode(name)).write_bytes(b"")
    subprocess.run(  # noqa: S603 - a fixed argv
        ["rsync", "-a", f"--exclude={pattern}", f"{src}/", f"{dst}/"], check=True
    )
    sent = {os.fsencode(n) for n in os.listdir(dst)}
    matcher = Excludes([pattern])
    wrong = [n for n in NAMES if matcher.excludes(n, is_dir=False) == (n in sent)]
    assert not wrong, f"{pattern!r}: trigsync and rsync disagree on {wrong}"


@pytest.mark.parametrize("replica", ["local"], indirect=True)
def test_a_filesystem_mounted_inside_the_tree_while_running_is_replicated(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    # A mount makes no inotify event, and the watch on source/mnt stays on the directory
    # underneath: what is written on the new filesystem is never seen (an unmount is,
    # test_unmount.py). /proc/self/mountinfo signals POLLPRI on every mount change.
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = source / "mnt"
    mnt.mkdir()
    start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=10)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(mnt)], check=True)  # noqa: S603
    try:
        (mnt / "sub").mkdir()
        (mnt / "sub" / "on-the-mount.txt").write_bytes(b"written after the mount\n")
        wait_trees_equal(source, replica.path, timeout=10)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # noqa: S603


def test_a_write_through_one_hard_link_reaches_every_name(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    # Two names, one inode (cp -al, a hard-linked release, ln): an append or chmod
    # through one name changes both, but inotify names only the one written through.
    (source / "d").mkdir()
    (source / "log.txt").write_bytes(b"one\n")
    os.link(source / "log.txt", source / "d" / "same.txt")
    start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=20)

    with (source / "log.txt").open("ab") as handle:
        handle.write(b"two\n")
    (source / "log.txt").chmod(0o600)

    wait_trees_equal(source, replica.path, timeout=10)


def _restart_with(
    procs: ProcGroup,
    tmp_path: Path,
    source: Path,
    first: dict[str, object],
    then: dict[str, object],
) -> None:
    """Run trigsync on ``first``'s config until it is equal, stop it, start it on ``then``'s."""
    config = tmp_path / "trigsync.toml"
    state = tmp_path / "state"
    write_config(config, source=source, state_dir=state, **first)  # type: ignore[arg-type]
    trig = Trigsync(procs, config, "-v").start()
    for replica in first["replicas"]:  # type: ignore[attr-defined]
        wait_trees_equal(source, replica.path, timeout=20, exclude=lambda p: p.endswith(b".log"))
    assert trig.stop() == 0
    write_config(config, source=source, state_dir=state, **then)  # type: ignore[arg-type]
    Trigsync(procs, config, "-v").start()


def test_an_exclude_removed_across_a_restart_sends_what_it_had_kept_out(
    source: Path, tmp_path: Path, procs: ProcGroup
) -> None:
    # *.log was excluded, the user drops the exclude and restarts (systemctl restart). The
    # catch-up looks only at ctimes since the stop: the old logs are never sent (SIGHUP
    # with the same edit reconciles every target).
    (source / "page.html").write_bytes(b"page\n")
    (source / "app.log").write_bytes(b"an old log line\n")
    replica = local_replica(tmp_path, "replica")
    _restart_with(
        procs,
        tmp_path,
        source,
        {"replicas": [replica], "excludes": ["*.log"], "initial_sync": True},
        {"replicas": [replica], "excludes": [], "initial_sync": False},
    )
    wait_trees_equal(source, replica.path, timeout=10)


def test_a_target_added_across_a_restart_gets_the_whole_tree(
    source: Path, tmp_path: Path, procs: ProcGroup
) -> None:
    # A second target added to the config, then a restart: it starts empty and only
    # changes from now on reach it (SIGHUP with the same edit gives it a full sync).
    (source / "d").mkdir()
    (source / "d" / "page.html").write_bytes(b"page\n")
    first, added = local_replica(tmp_path, "first"), local_replica(tmp_path, "added")
    _restart_with(
        procs,
        tmp_path,
        source,
        {"replicas": [first], "initial_sync": True},
        {"replicas": [first, added], "initial_sync": False},
    )
    wait_trees_equal(source, added.path, timeout=10)


def test_a_source_given_as_a_release_symlink_follows_the_deploy_swap(
    tmp_path: Path, procs: ProcGroup
) -> None:
    # Capistrano-style deploys: source = /var/www/current -> releases/1, and a deploy
    # swaps it atomically (ln -sfn releases/2 current.tmp; mv -T current.tmp current).
    # trigsync keeps watching releases/1 and says nothing; the replica serves release 1
    # until the next reconcile. Expected: it follows the swap, or exits non-zero with a
    # one-line reason so that its supervisor restarts it (which then reconciles).
    for n in (1, 2):
        (tmp_path / f"rel{n}").mkdir()
        (tmp_path / f"rel{n}" / "index.html").write_bytes(b"release %d\n" % n)
    (tmp_path / "rel2" / "new.html").write_bytes(b"only in release 2\n")
    current = tmp_path / "current"
    current.symlink_to("rel1")
    replica = local_replica(tmp_path, "replica")
    config = write_config(
        tmp_path / "trigsync.toml", source=current, replicas=[replica], state_dir=tmp_path / "st"
    )
    trig = Trigsync(procs, config, "-v").start()
    wait_trees_equal(current, replica.path, timeout=20)

    (tmp_path / "current.tmp").symlink_to("rel2")
    os.rename(tmp_path / "current.tmp", current)
    time.sleep(0.5)
    (current / "later.html").write_bytes(b"written after the deploy\n")

    def followed_or_failed() -> bool:
        if trig.proc is not None and not trig.proc.running:
            return True
        try:
            wait_trees_equal(current, replica.path, timeout=0.1)
        except AssertionError:
            return False
        return True

    wait_for(followed_or_failed, timeout=10, what="the replica to follow the swapped source")
    if trig.proc is not None and not trig.proc.running:
        assert trig.proc.wait(1) != 0, trig.log()


def _run_once(source: Path, target: Path, state: Path) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "trigsync", "run", str(source), str(target)]
    argv += ["--state-dir", str(state), "--initial-sync", "--once"]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False)  # noqa: S603


def test_a_target_that_holds_the_source_is_refused_before_it_deletes_it(tmp_path: Path) -> None:
    # trigsync run /srv/www/site /srv/www: the full sync's --delete removed the source
    # itself (only target-inside-source was refused).
    outer = tmp_path / "outer"
    (outer / "site").mkdir(parents=True)
    (outer / "site" / "precious.html").write_bytes(b"the only copy\n")
    done = _run_once(outer / "site", outer, tmp_path / "state")
    assert (outer / "site" / "precious.html").exists(), "the full sync deleted the source"
    assert done.returncode == 2, done.stderr
    assert done.stderr.count(b"\n") == 1 and b"inside" in done.stderr, done.stderr


def test_a_target_inside_the_source_through_a_symlink_is_refused(tmp_path: Path) -> None:
    # The check compared the paths as written: a target reached through a symlink into
    # the source replicated into itself, a level deeper at every run, forever.
    source = tmp_path / "source"
    (source / "backup").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"a\n")
    (tmp_path / "bk").symlink_to(source / "backup")
    done = _run_once(source, tmp_path / "bk", tmp_path / "state")
    assert not (source / "backup" / "backup").exists(), "replicated into itself"
    assert done.returncode == 2, done.stderr
    assert done.stderr.count(b"\n") == 1 and b"inside" in done.stderr, done.stderr
