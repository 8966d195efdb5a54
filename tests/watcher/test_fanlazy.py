"""fanotify's lazy directories against the real kernel: nothing is listed at start, a
change anywhere in a tree made before start is caught at once, and directories the
bounded cache never knew (or forgot) are renamed and deleted with correct paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.watcher.test_watcher import Collector, run, watching, write
from trigsync import fanotify
from trigsync.changes import Kind
from trigsync.fanwatch import FanotifySource

C, M, D = Kind.NEW, Kind.CHANGED, Kind.DELETED


@pytest.fixture
def src(tmp_path: Path) -> Path:
    if (why := fanotify.probe(os.fsencode(tmp_path))) is not None:
        pytest.skip(f"fanotify backend not usable here: {why}")
    (tmp_path / "src").mkdir()
    return tmp_path / "src"


def deep(src: Path, levels: int) -> Path:
    path = src.joinpath(*(f"d{i}" for i in range(levels)))
    path.mkdir(parents=True)
    return path


def source(w: Collector) -> FanotifySource:
    s = w.watcher._source
    assert isinstance(s, FanotifySource)
    return s


def test_a_change_deep_in_a_tree_never_listed_is_caught_right_after_start(src: Path) -> None:
    bottom = deep(src, 40)
    for i in range(300):
        (src / f"wide{i}").mkdir()
    write(bottom / "old", b"1")

    async def scenario() -> None:
        async with watching(src, backend="fanotify") as w:
            assert w.watcher.watch_count == 1  # the root: not one directory was listed
            write(bottom / "old", b"2")
            write(bottom / "new")
            write(src / "wide7" / "f")
            rel = os.fsencode(bottom.relative_to(src))
            assert await w.quiet() == {rel + b"/old": M, rel + b"/new": C, b"wide7/f": C}
            assert w.watcher.watch_count == 42  # root, the chain of 40, wide7

    run(scenario)


def test_renames_and_deletes_of_directories_never_known(src: Path) -> None:
    (src / "a" / "b" / "c").mkdir(parents=True)
    write(src / "a" / "b" / "c" / "f")
    deep(src / "gone", 5)

    async def scenario() -> None:
        async with watching(src, backend="fanotify") as w:
            os.rename(src / "a" / "b", src / "a" / "x")
            write(src / "a" / "x" / "c" / "g")
            shutil.rmtree(src / "gone")
            got = await w.quiet()
            assert got.pop(b"a/b") == D
            assert got.pop(b"gone") == D
            assert got.pop(b"a/x/c/g") in (C, M)
            # What the rename's new end lists is CHANGED; nothing else, nothing old.
            assert set(got) <= {b"a/x", b"a/x/c", b"a/x/c/f"}
            assert set(got.values()) <= {M}
            assert not any(p.startswith(b"gone/") for p in got)

    run(scenario)


def test_the_cache_stays_bounded_and_forgotten_directories_keep_their_paths(src: Path) -> None:
    for i in range(40):
        (src / f"d{i}" / "sub").mkdir(parents=True)

    async def scenario() -> None:
        async with watching(src, backend="fanotify") as w:
            dirs = source(w).dirs
            assert dirs is not None
            dirs.cap = 8
            for i in range(40):
                write(src / f"d{i}" / "sub" / "f")
            assert await w.quiet() == {b"d%d/sub/f" % i: C for i in range(40)}
            write(src / "poke")  # a wake-up past the one that touched them all
            assert await w.quiet() == {b"poke": C}
            write(src / "poke2")
            await w.quiet()
            assert w.watcher.watch_count <= 8
            # d3/sub was forgotten: renamed, then written, it is found where it is now.
            os.rename(src / "d3", src / "moved")
            write(src / "moved" / "sub" / "g")
            shutil.rmtree(src / "d5")
            got = await w.quiet()
            assert got[b"d3"] == D
            assert got[b"moved/sub/g"] in (C, M)
            assert got[b"d5"] == D
            assert not any(p.startswith((b"d3/", b"d5/")) for p in got)

    run(scenario)
