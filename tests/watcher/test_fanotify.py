"""The fanotify backend against the real kernel: what a whole-filesystem mark must get
right that per-directory inotify watches get for free (bind mounts, other filesystems
below the source, neighbours on the same filesystem, several watchers), and the choice
of backend."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.watcher.test_watcher import run, watching, write
from trigsync import fanotify, fanwatch
from trigsync.changes import Kind
from trigsync.errors import WatchError

C, M, D = Kind.NEW, Kind.CHANGED, Kind.DELETED


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if (why := fanotify.probe(os.fsencode(tmp_path))) is not None:
        pytest.skip(f"fanotify backend not usable here: {why}")
    (tmp_path / "src").mkdir()
    return tmp_path


@contextlib.contextmanager
def mounted(*argv: str) -> Iterator[None]:
    """``mount ARGV...`` for the block; the target is the last argument."""
    subprocess.run(["mount", *argv], check=True)  # noqa: S603
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", argv[-1]], check=True)  # noqa: S603


def test_neighbours_on_the_filesystem_are_filtered_out(root: Path) -> None:
    src = root / "src"
    (root / "neighbour").mkdir()

    async def scenario() -> None:
        async with watching(src, backend="fanotify") as w:
            for i in range(200):  # a busy neighbour: writes, renames, deletes
                write(root / "neighbour" / f"n{i}")
                os.rename(root / "neighbour" / f"n{i}", root / "neighbour" / f"m{i}")
            os.unlink(root / "neighbour" / "m0")
            write(src / "mine")
            assert await w.quiet() == {b"mine": C}

    run(scenario)


def test_two_watchers_on_one_filesystem_see_their_own_trees(root: Path) -> None:
    other = root / "other"
    other.mkdir()

    async def scenario() -> None:
        async with (
            watching(root / "src", backend="fanotify") as a,
            watching(other, backend="fanotify") as b,
        ):
            write(root / "src" / "a")
            write(other / "b")
            assert await a.quiet() == {b"a": C}
            assert await b.quiet() == {b"b": C}
            os.rename(root / "src" / "a", other / "moved")  # out of one, into the other
            assert await a.quiet() == {b"a": D}
            assert await b.quiet() == {b"moved": M}

    run(scenario)


@pytest.mark.root
def test_source_reached_through_a_bind_mount(root: Path) -> None:
    (root / "bind").mkdir()
    (root / "src" / "sub").mkdir()
    with mounted("--bind", str(root / "src"), str(root / "bind")):

        async def scenario() -> None:
            async with watching(root / "bind", backend="fanotify") as w:
                write(root / "src" / "sub" / "via-the-other-path")
                write(root / "bind" / "via-the-bind")
                assert await w.quiet() == {
                    b"sub/via-the-other-path": C,
                    b"via-the-bind": C,
                }

        run(scenario)


@pytest.mark.root
def test_another_filesystem_mounted_below_the_source(root: Path) -> None:
    mnt = root / "src" / "mnt"
    mnt.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)):
        (mnt / "deep").mkdir()

        async def scenario() -> None:
            async with watching(root / "src", backend="fanotify") as w:
                write(mnt / "deep" / "on-tmpfs")
                write(root / "src" / "on-the-root-fs")
                assert await w.quiet() == {b"mnt/deep/on-tmpfs": C, b"on-the-root-fs": C}

        run(scenario)


def test_statistics_count_the_tree_not_the_filesystem(root: Path) -> None:
    (root / "src" / "a" / "b").mkdir(parents=True)

    async def scenario() -> None:
        async with watching(root / "src", backend="fanotify") as w:
            # Nothing is listed at start: directories are known once an event names them.
            assert w.watcher.statistics().watches == 1
            os.rmdir(root / "src" / "a" / "b")
            assert await w.quiet() == {b"a/b": D}
            assert w.watcher.statistics().watches == 2  # the root and a, b's parent

    run(scenario)


# -- the choice ---------------------------------------------------------------------------


def test_choice_follows_the_setting_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanotify, "probe", lambda path: None)
    assert fanwatch.choose("inotify", b"/x") == ("inotify", "watch_backend = inotify")
    assert fanwatch.choose("fanotify", b"/x")[0] == "fanotify"
    backend, why = fanwatch.choose("auto", b"/x")
    assert backend == "fanotify" and why.startswith("auto: ")
    monkeypatch.setattr(fanotify, "probe", lambda path: "fanotify needs CAP_SYS_ADMIN")
    assert fanwatch.choose("auto", b"/x") == ("inotify", "auto: fanotify needs CAP_SYS_ADMIN")
    with pytest.raises(WatchError, match=r'CAP_SYS_ADMIN; set watch_backend = "auto"'):
        fanwatch.choose("fanotify", b"/x")


def test_probe_says_why_not_for_a_non_root_process() -> None:
    if os.geteuid() == 0:
        code = "import os, sys; os.setuid(65534); from trigsync import fanotify; " + (
            "print(fanotify.probe(b'/'))"
        )
        out = subprocess.run(  # noqa: S603
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "CAP_SYS_ADMIN" in out.stdout
    else:
        assert "CAP_SYS_ADMIN" in str(fanotify.probe(b"/"))
