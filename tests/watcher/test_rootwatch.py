"""What inotify cannot see: a filesystem mounted or unmounted in the tree, the source
symlink swapped by a deploy. The watcher follows both and asks for one full sync, on
either backend (test_watcher's autouse ``backend`` fixture runs each test on both)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.watcher.test_watcher import (
    Collector,
    backend,  # noqa: F401 - autouse: both backends
    run,
    sent,
    watching,
    write,
)
from trigsync.changes import Kind

M = Kind.CHANGED

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    return tmp_path / "src"


@contextlib.contextmanager
def mounted(*argv: str) -> Iterator[None]:
    """``mount argv...``; the last argument is the mount point, lazily unmounted at the end."""
    subprocess.run(["mount", *argv], check=True)  # noqa: S603 - a fixed argv
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", argv[-1]], check=False, capture_output=True)  # noqa: S603


def fulls(w: Collector) -> int:
    return sum(b.full for b in w.batches)


@pytest.mark.root
@needs_root
def test_a_mount_in_the_tree_asks_for_a_full_sync_and_watches_the_new_filesystem(
    src: Path,
) -> None:
    (src / "mnt").mkdir()
    write(src / "mnt" / "hidden")

    async def scenario() -> None:
        async with watching(src) as w:
            with mounted("-t", "tmpfs", "none", str(src / "mnt")):
                await w.quiet()
                assert fulls(w) == 1
                (src / "mnt" / "sub").mkdir()
                write(src / "mnt" / "sub" / "f")
                assert sent(await w.quiet()) == {b"mnt/sub": M, b"mnt/sub/f": M}

    run(scenario)


@pytest.mark.root
@needs_root
def test_a_bind_mount_unmounted_in_the_tree_asks_for_a_full_sync(src: Path, tmp_path: Path) -> None:
    # Unmounting a bind mount raises no IN_UNMOUNT: its filesystem stays mounted elsewhere.
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path / "elsewhere" / "shown")
    (src / "mnt").mkdir()
    write(src / "mnt" / "underneath")

    async def scenario() -> None:
        with mounted("--bind", str(tmp_path / "elsewhere"), str(src / "mnt")):
            async with watching(src) as w:
                subprocess.run(["umount", str(src / "mnt")], check=True)  # noqa: S603
                await w.quiet()
                assert fulls(w) == 1
                write(src / "mnt" / "underneath", b"more", "ab")
                assert await w.quiet() == {b"mnt/underneath": M}

    run(scenario)


@pytest.mark.root
@needs_root
def test_a_mount_outside_the_tree_is_ignored(src: Path, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()

    async def scenario() -> None:
        async with watching(src) as w:
            with mounted("-t", "tmpfs", "none", str(tmp_path / "other")):
                await w.quiet()
            await w.quiet()
            assert w.batches == []

    run(scenario)


def test_a_swapped_source_symlink_is_followed_with_a_full_sync(tmp_path: Path) -> None:
    # Capistrano: current -> rel1, then ln -sfn rel2 current.tmp; mv -T current.tmp current.
    for n in (1, 2):
        (tmp_path / f"rel{n}").mkdir()
    (tmp_path / "current").symlink_to("rel1")

    async def scenario() -> None:
        async with watching(tmp_path / "current") as w:
            (tmp_path / "current.tmp").symlink_to("rel2")
            os.rename(tmp_path / "current.tmp", tmp_path / "current")
            await w.quiet()
            assert fulls(w) == 1
            write(tmp_path / "rel1" / "old")
            write(tmp_path / "rel2" / "new")
            assert await w.quiet() == {b"new": Kind.NEW}
            # An unrelated name beside the symlink asks for nothing.
            write(tmp_path / "unrelated")
            (tmp_path / "rel3").mkdir()
            await w.quiet()
            assert fulls(w) == 1

    run(scenario)


def test_a_source_symlink_that_vanishes_keeps_the_old_directory_watched(
    tmp_path: Path,
) -> None:
    (tmp_path / "rel1").mkdir()
    (tmp_path / "current").symlink_to("rel1")

    async def scenario() -> None:
        async with watching(tmp_path / "current") as w:
            (tmp_path / "current").unlink()
            write(tmp_path / "rel1" / "f")
            assert await w.quiet() == {b"f": Kind.NEW}
            assert fulls(w) == 0 and w.error is None

    run(scenario)


def test_an_idle_watcher_of_a_symlinked_source_uses_no_cpu(tmp_path: Path) -> None:
    (tmp_path / "rel1").mkdir()
    (tmp_path / "current").symlink_to("rel1")

    async def scenario() -> None:
        async with watching(tmp_path / "current") as w:
            write(tmp_path / "rel1" / "f")
            await w.quiet()
            before = time.process_time()
            await asyncio.sleep(0.5)
            assert time.process_time() - before < 0.05

    run(scenario)
