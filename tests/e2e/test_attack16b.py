"""Second attack on issue 16: the lazy fanotify backend (directories found by handle when
their first event comes, a bounded cache of them, handles found outside remembered) and
the slimmer inotify tree, with a real trigsync process and a local replica.

Cases of ``test_attack16`` are not repeated here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BOTH_BACKENDS, Start, local_replica
from tests.e2e.harness import Replica, Trigsync
from tests.e2e.test_attack16 import BROKEN, SETTLE, mount, stopped, umount
from tests.support.proc import ProcGroup, wait_for
from tests.support.trees import wait_trees_equal

# The lazy backend is what these attack; inotify too where it broke, or as a guard.
FANOTIFY = pytest.mark.parametrize("watch_backend", ["fanotify"], indirect=True)


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    return local_replica(tmp_path)


@pytest.fixture
def bound(source: Path, outside: Path) -> Iterator[Path]:
    """``outside/shared`` (same filesystem as the source) bind-mounted at source/shared."""
    (outside / "shared" / "old").mkdir(parents=True)
    (outside / "shared" / "old" / "f").write_text("made before start")
    (source / "shared").mkdir()
    mount("--bind", str(outside / "shared"), str(source / "shared"))
    try:
        yield source / "shared"
    finally:
        umount(source / "shared")


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


@FANOTIFY
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


@FANOTIFY
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
    mount("--bind", str(outside / "shared"), str(source / "shared"))
    try:
        wait_for(lambda: "was mounted or unmounted" in trig.log(), timeout=SETTLE, what="mount")
        wait_trees_equal(source, replica.path, timeout=SETTLE)
        (source / "shared" / "new").write_text("written through the bind mount")
        (source / "shared" / "old" / "g").write_text("deeper")
        wait_trees_equal(source, replica.path, timeout=BROKEN)
    finally:
        umount(source / "shared")


@FANOTIFY
def test_deep_directories_never_cached_chmodded_renamed_and_written_in_one_read(
    source: Path, replica: Replica, outside: Path, start_trigsync: Start
) -> None:
    (source / "a" / "b" / "c" / "d").mkdir(parents=True)
    (source / "a" / "b" / "c" / "d" / "f").write_text("old")
    (source / "p" / "q").mkdir(parents=True)
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    with stopped(trig):
        (source / "a" / "b" / "c" / "d" / "new").write_text("written before the rename")
        os.chmod(source / "a" / "b" / "c" / "d", 0o750)
        os.rename(source / "a" / "b" / "c", source / "x")
        (source / "x" / "d" / "after").write_text("written after it")
        os.chmod(source / "p" / "q", 0o700)
        os.rename(source / "p", outside / "p")
        os.rename(outside / "p", source / "p2")
        (source / "p2" / "q" / "g").write_text("in a directory moved out and back in")
    wait_trees_equal(source, replica.path, timeout=BROKEN)


@FANOTIFY
def test_a_file_held_open_in_a_directory_never_cached_goes_out_once_it_settles(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    (source / "logs" / "2026").mkdir(parents=True)
    start_trigsync(replica, extra={"delay": 0})
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    with open(source / "logs" / "2026" / "app.log", "w") as f:
        f.write("first line\n")
        f.flush()
        wait_trees_equal(source, replica.path, timeout=SETTLE)
        f.write("second line\n")
        f.flush()
        wait_trees_equal(source, replica.path, timeout=SETTLE)


@FANOTIFY
def test_many_directories_made_and_removed_at_once_then_one_kept(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    trig = start_trigsync(replica)
    with stopped(trig):
        for i in range(300):
            d = source / f"t{i}"
            (d / "sub").mkdir(parents=True)
            (d / "sub" / "f").write_text("brief")
            (d / "sub" / "f").unlink()
            (d / "sub").rmdir()
            d.rmdir()
        (source / "t7" / "sub").mkdir(parents=True)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    (source / "t7" / "sub" / "kept").write_text("in the one made again")
    wait_trees_equal(source, replica.path, timeout=BROKEN)


@BOTH_BACKENDS
def test_a_release_symlink_swapped_then_written_deep_in_the_new_release(
    tmp_path: Path, replica: Replica, start_trigsync: Start, source: Path
) -> None:
    for n in (1, 2):
        (tmp_path / f"rel{n}" / "deep" / "er").mkdir(parents=True)
        (tmp_path / f"rel{n}" / "index").write_text(f"release {n}")
    source.rmdir()
    source.symlink_to("rel1")
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    (tmp_path / "cur.tmp").symlink_to("rel2")
    os.rename(tmp_path / "cur.tmp", source)
    wait_for(lambda: "now names" in trig.log(), timeout=SETTLE, what="the swap to be seen")
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    (tmp_path / "rel2" / "deep" / "er" / "later").write_text("after the deploy")
    (tmp_path / "rel1" / "deep" / "er" / "stale").write_text("in the old release")
    wait_trees_equal(source, replica.path, timeout=BROKEN)


@BOTH_BACKENDS
def test_a_source_given_as_a_symlink_is_watched_below_its_top(
    tmp_path: Path, replica: Replica, start_trigsync: Start, source: Path
) -> None:
    """inotify: the start's walk listed the root without following it (listdir opens
    with O_NOFOLLOW since a directory swapped for a symlink must not be listed through
    it), so only the top directory was watched: every change below it was lost."""
    (tmp_path / "rel1" / "sub" / "deeper").mkdir(parents=True)
    source.rmdir()
    source.symlink_to("rel1")
    start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    (source / "sub" / "f").write_text("below the top")
    (source / "sub" / "deeper" / "g").write_text("further down")
    wait_trees_equal(source, replica.path, timeout=BROKEN)


# -- a cache smaller than the tree ------------------------------------------------------------


@pytest.fixture
def small_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """trigsync's lazy fanotify tree holds 3 directories: most are forgotten at once."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "from trigsync.fanlazy import LazyDirs\nLazyDirs.__init__.__kwdefaults__['cap'] = 3\n"
    )
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    )
    return 3


@FANOTIFY
def test_forgotten_directories_renamed_deleted_and_moved_out_and_in(
    source: Path, replica: Replica, outside: Path, small_cache: int, start_trigsync: Start
) -> None:
    for i in range(10):
        (source / f"d{i}" / "sub").mkdir(parents=True)
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    for i in range(10):  # each is cached, and all but a few are forgotten again
        (source / f"d{i}" / "sub" / "f").write_text(f"{i}")
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    with stopped(trig):
        (source / "d3" / "sub" / "g").write_text("before its move out")
        os.rename(source / "d3", outside / "d3")
        (outside / "d3" / "sub" / "h").write_text("while outside")
        os.rename(outside / "d3", source / "e3")
        (source / "e3" / "sub" / "i").write_text("after its move back in")
        (source / "d5" / "sub" / "x").write_text("in a directory deleted next")
        shutil.rmtree(source / "d5")
        (source / "d7" / "sub" / "y").write_text("before the deep rename")
        os.rename(source / "d7" / "sub", source / "top")
        (source / "top" / "z").write_text("after it")
        os.link(source / "d1" / "sub" / "f", source / "d2" / "sub" / "linked")
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    for i in (0, 4, 6, 8, 9):  # the cache turns over again
        (source / f"d{i}" / "sub" / "f").write_text(f"{i} again")
    (source / "e3" / "sub" / "late").write_text("in the moved-in directory")
    (source / "top" / "late").write_text("in the renamed one")
    with open(source / "d2" / "sub" / "linked", "a") as f:
        f.write(" through the link")
    wait_trees_equal(source, replica.path, timeout=BROKEN)


@FANOTIFY
def test_two_syncs_on_one_filesystem_one_inside_the_other_s_excludes(
    procs: ProcGroup, tmp_path: Path, source: Path, watch_backend: str
) -> None:
    inner = source / "inner"
    (inner / "x" / "deep").mkdir(parents=True)
    (source / "top" / "deep").mkdir(parents=True)
    outer_replica, inner_replica = tmp_path / "r-outer", tmp_path / "r-inner"
    outer_replica.mkdir()
    inner_replica.mkdir()
    config = tmp_path / "two.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[[sync]]\nsource = "{source}"\nexcludes = ["/inner/"]\ninitial_sync = true\n'
        f'watch_backend = "{watch_backend}"\ntargets = ["{outer_replica}"]\n'
        f'[[sync]]\nsource = "{inner}"\ninitial_sync = true\n'
        f'watch_backend = "{watch_backend}"\ntargets = ["{inner_replica}"]\n'
    )
    trig = Trigsync(procs, config, "-v").start()
    wait_for(lambda: trig.log().count("watching ") >= 2, timeout=SETTLE, what="both to watch")

    def equal(timeout: float) -> None:
        wait_trees_equal(source, outer_replica, timeout=timeout, exclude=_below(b"inner"))
        wait_trees_equal(inner, inner_replica, timeout=timeout)

    equal(SETTLE)
    (inner / "x" / "deep" / "f").write_text("the inner sync's only")
    (source / "top" / "deep" / "g").write_text("the outer sync's only")
    os.rename(inner / "x", source / "top" / "x")  # from the inner sync to the outer one
    (source / "top" / "x" / "deep" / "h").write_text("moved across")
    os.rename(source / "top" / "deep", inner / "deep")  # and the other way
    (inner / "deep" / "i").write_text("moved the other way")
    equal(BROKEN)


def _below(top: bytes) -> Callable[[bytes], bool]:
    return lambda p: p == top or p.startswith(top + b"/")


@FANOTIFY
def test_hostile_directory_names_never_cached(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    """A handle resolves through readlink, which ends a deleted directory's path with
    " (deleted)": a live directory of that name, a newline, bytes that are not UTF-8."""
    src = os.fsencode(source)
    names = [b"gone (deleted)", b"line\nbreak", b"latin-\xe9", b" (deleted)"]
    for name in names:
        os.makedirs(src + b"/" + name + b"/sub")
    os.mkdir(src + b"/gone")
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    with stopped(trig):
        with open(src + b"/gone/f", "wb") as f:  # queued in a directory deleted next
            f.write(b"brief")
        shutil.rmtree(src + b"/gone")
        for name in names:
            with open(src + b"/" + name + b"/sub/f", "wb") as f:
                f.write(name)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    for name in names:
        with open(src + b"/" + name + b"/g", "wb") as f:
            f.write(name)
    wait_trees_equal(source, replica.path, timeout=BROKEN)


@FANOTIFY
def test_a_mount_below_the_source_and_a_mkdir_in_a_bind_mount_in_one_wake_up(
    source: Path, bound: Path, replica: Replica, start_trigsync: Start
) -> None:
    """fanotify: a mount change forgets which mounts resolve handles; the mkdir read in
    the same wake-up marked the filesystem again through the bind mount it is on, so
    that mount alone resolved its handles from then on, and a directory of the source
    proper read as outside it (every change in one not cached yet was lost)."""
    (source / "a" / "b").mkdir(parents=True)
    (source / "mnt").mkdir()
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    (bound / "x").write_text("the bind mount's directory is cached now")
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    try:
        with stopped(trig):
            (bound / "newdir").mkdir()
            mount("-t", "tmpfs", "-o", "size=1m", "none", str(source / "mnt"))
        wait_for(lambda: "was mounted or unmounted" in trig.log(), timeout=SETTLE, what="mount")
        wait_trees_equal(source, replica.path, timeout=SETTLE)
        (source / "a" / "b" / "f").write_text("in a directory of the source not cached yet")
        wait_trees_equal(source, replica.path, timeout=BROKEN)
    finally:
        umount(source / "mnt")


@FANOTIFY
def test_the_source_renamed_away_stops_trigsync(
    source: Path, replica: Replica, outside: Path, start_trigsync: Start
) -> None:
    (source / "d").mkdir()
    (source / "d" / "f").write_text("kept on the replica")
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    os.rename(source, outside / "renamed")
    (outside / "renamed" / "d" / "g").write_text("written after the move")
    assert trig.proc is not None
    wait_for(lambda: not trig.proc.running, timeout=SETTLE, what="trigsync to stop")  # type: ignore[union-attr]
    assert trig.proc.returncode == 4, trig.log()[-2000:]
    assert (replica.path / "d" / "f").read_text() == "kept on the replica"


# -- without CAP_DAC_READ_SEARCH (docker's default set with SYS_ADMIN added, say) ---------------


def _without_dac_read_search(*args: str) -> list[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop CAP_DAC_READ_SEARCH")
    drop = ["setpriv", "--inh-caps=-dac_read_search", "--bounding-set=-dac_read_search"]
    return [*drop, sys.executable, "-m", "trigsync", *args]


def test_auto_without_dac_read_search_falls_back_to_inotify_and_says_why(
    procs: ProcGroup, source: Path, replica: Replica, tmp_path: Path
) -> None:
    """fanotify was chosen (it can mark the filesystem), but no handle could be resolved
    (open_by_handle_at needs CAP_DAC_READ_SEARCH): every directory below the top read as
    one elsewhere on the filesystem, and every change in it was lost, without a word."""
    (source / "a" / "b").mkdir(parents=True)
    argv = _without_dac_read_search(
        "run", str(source), str(replica.path), "--state-dir", str(tmp_path / "state"),
        "--watch-backend", "auto", "--initial-sync",
    )  # fmt: skip
    proc = procs.start(argv, name="trigsync", env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wait_for(lambda: b"watching " in proc.stderr() or not proc.running, timeout=20, what="start")
    assert b"with inotify: auto: fanotify needs CAP_DAC_READ_SEARCH" in proc.stderr()
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    (source / "a" / "b" / "f").write_text("below the top")
    wait_trees_equal(source, replica.path, timeout=BROKEN)


def test_fanotify_without_dac_read_search_is_one_line_naming_the_fix(
    source: Path, replica: Replica, tmp_path: Path
) -> None:
    argv = _without_dac_read_search(
        "run", str(source), str(replica.path), "--state-dir", str(tmp_path / "state"),
        "--watch-backend", "fanotify",
    )  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    assert done.returncode == 4, done
    assert done.stderr.count("\n") == 1, done.stderr
    assert "needs CAP_DAC_READ_SEARCH" in done.stderr, done.stderr


@FANOTIFY
def test_hard_links_made_after_start_in_a_small_cache(
    source: Path, replica: Replica, small_cache: int, start_trigsync: Start
) -> None:
    for d in ("a/x", "b/y", "c/z", "e"):
        (source / d).mkdir(parents=True)
    (source / "a" / "x" / "orig").write_text("one")
    (source / "c" / "z" / "other").write_text("one")
    start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    os.link(source / "a" / "x" / "orig", source / "b" / "y" / "link")
    os.link(source / "c" / "z" / "other", source / "e" / "link2")
    for i in range(6):  # the cache turns over
        (source / "e" / f"n{i}").mkdir()
        (source / "e" / f"n{i}" / "f").write_text("x")
    wait_trees_equal(source, replica.path, timeout=SETTLE)
    with open(source / "b" / "y" / "link", "a") as f:
        f.write(" through the new name")
    with open(source / "c" / "z" / "other", "a") as f:
        f.write(" through the old name")
    wait_trees_equal(source, replica.path, timeout=BROKEN)
    os.rename(source / "a", source / "a2")
    with open(source / "b" / "y" / "link", "a") as f:
        f.write(" after a rename")
    wait_trees_equal(source, replica.path, timeout=BROKEN)
