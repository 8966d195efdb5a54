"""The watcher against the real filesystem: what each kind of change turns into."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from trigsync import fanotify
from trigsync import watcher as watcher_module
from trigsync.changes import Batch, Change, Kind, PendingSet
from trigsync.errors import WatchError, WatchLimitError
from trigsync.excludes import Excludes
from trigsync.fanwatch import FanotifySource
from trigsync.watcher import Watcher

C, M, D = Kind.NEW, Kind.CHANGED, Kind.DELETED
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root to change /proc/sys/fs/inotify limits"
)


class Collector:
    """Runs ``watcher.batches()`` in a task and merges what it yields."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.batches: list[Batch] = []
        self.raw: list[Change] = []
        self.pending = PendingSet()
        self.error: BaseException | None = None
        self._got = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for batch in self.watcher.batches():
                self.batches.append(batch)
                self.raw.extend(batch.changes)
                self.pending.extend(batch)
                self._got.set()
        except Exception as exc:
            self.error = exc
            self._got.set()

    async def quiet(self, quiet: float = 0.2, timeout: float = 5.0) -> dict[bytes, Kind]:
        """Wait until nothing arrived for ``quiet`` seconds; take the merged changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.error is None:
            self._got.clear()
            try:
                await asyncio.wait_for(self._got.wait(), quiet)
            except TimeoutError:
                break
            assert loop.time() < deadline, "the watcher never went quiet"
        return {c.path: c.kind for c in self.pending.take().changes}

    async def stop(self) -> None:
        self.watcher.close()
        await asyncio.wait_for(self._task, 2)


@contextlib.asynccontextmanager
async def watching(root: Path, **kwargs: Any) -> AsyncIterator[Collector]:
    watcher = Watcher(os.fsencode(root), **kwargs)
    watcher.start()
    collector = Collector(watcher)
    try:
        yield collector
    finally:
        await collector.stop()


def sent(kinds: dict[bytes, Kind]) -> dict[bytes, Kind]:
    """NEW and CHANGED alike: a file reported after the batch that saw it created (held
    until its close, or found by a listing while just written) goes out CHANGED."""
    return {p: M if k is C else k for p, k in kinds.items()}


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def write(path: bytes | Path, data: bytes = b"x", mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)


# Watch-limit tests: fanotify has no per-directory watches to run out of.
INOTIFY_ONLY = {
    "test_watch_limit_at_start_names_the_sysctl",
    "test_watch_limit_at_runtime_logs_advice_and_still_reports",
}


def listed(backend: str, dirs: int) -> int:
    """The directories a watcher knows right after start: fanotify finds them lazily,
    when their first event comes, and knows only the root."""
    return dirs if backend == "inotify" else 1


@pytest.fixture(autouse=True, params=["inotify", "fanotify"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Every test here runs on both backends: a Watcher built without one uses this one."""
    name = str(request.param)
    if name == "fanotify":
        if request.node.originalname in INOTIFY_ONLY:
            pytest.skip("inotify's watch limit: fanotify has no per-directory watches")
        if (why := fanotify.probe(os.fsencode(tmp_path))) is not None:
            pytest.skip(f"fanotify backend not usable here: {why}")
        monkeypatch.setattr(watcher_module, "InotifySource", FanotifySource)
    return name


@pytest.fixture
def src(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    return tmp_path / "src"


def test_new_file_is_created_once(src: Path) -> None:
    async def scenario() -> None:
        async with watching(src) as w:
            write(src / "f", b"hello" * 1000)
            write(src / "empty", b"")
            assert await w.quiet() == {b"f": C, b"empty": C}
            assert sorted(w.raw, key=lambda c: c.path) == [Change(b"empty", C), Change(b"f", C)]
            assert w.watcher.statistics().events_read >= 4

    run(scenario)


def test_append_chmod_and_root_attrib_are_changes(src: Path) -> None:
    write(src / "f")

    async def scenario() -> None:
        async with watching(src) as w:
            write(src / "f", b"more", "ab")
            assert await w.quiet() == {b"f": M}
            os.chmod(src / "f", 0o600)
            assert await w.quiet() == {b"f": M}
            os.chmod(src, 0o750)
            assert await w.quiet() == {b".": M}

    run(scenario)


def test_watch_modify_reports_writes_before_close(src: Path) -> None:
    write(src / "log")

    async def scenario() -> None:
        async with watching(src, watch_modify=True) as w:
            with open(src / "log", "ab") as f:
                f.write(b"line\n")
                f.flush()
                assert await w.quiet() == {b"log": M}

    run(scenario)


def test_modification_without_close_is_reported_after_settling(src: Path) -> None:
    write(src / "t", b"0123456789")
    write(src / "log")

    async def scenario() -> None:
        async with watching(src, modify_settle=0.3) as w:
            os.truncate(src / "t", 2)  # truncate(2): IN_MODIFY and no close
            with open(src / "log", "ab") as f:  # a log kept open
                f.write(b"line\n")
                f.flush()
                started = time.monotonic()
                assert await w.quiet(quiet=0.6) == {b"t": M, b"log": M}
                assert time.monotonic() - started >= 0.3
            seen = len(w.raw)
            write(src / "t", b"closed")  # a normal write is reported at its close, once
            assert await w.quiet() == {b"t": M, b"log": M}  # log: closed at the end of with
            assert w.raw[seen:].count(Change(b"t", M)) == 1

    run(scenario)


def test_delete_file_and_dir(src: Path, backend: str) -> None:
    write(src / "f")
    (src / "d").mkdir()

    async def scenario() -> None:
        async with watching(src) as w:
            assert w.watcher.watch_count == listed(backend, 2)
            (src / "f").unlink()
            (src / "d").rmdir()
            assert await w.quiet() == {b"f": D, b"d": D}
            assert w.watcher.watch_count == 1

    run(scenario)


def test_files_in_new_nested_dirs_are_all_reported(src: Path) -> None:
    async def scenario() -> None:
        async with watching(src) as w:
            expected: dict[bytes, Kind] = {}
            rel = b""
            for level in range(50):
                rel = (rel + b"/" if rel else b"") + b"d%d" % level
                os.mkdir(os.fsencode(src) + b"/" + rel)
                expected[rel] = C
                for i in range(5):
                    write(os.fsencode(src) + b"/" + rel + b"/f%d" % i)
                    expected[rel + b"/f%d" % i] = C
            assert sent(await w.quiet()) == sent(expected)
            assert w.watcher.watch_count == 51

    run(scenario)


def test_rename_file_and_dir_inside_tree(src: Path) -> None:
    write(src / "a")
    (src / "d" / "sub").mkdir(parents=True)
    write(src / "d" / "x")
    write(src / "d" / "sub" / "y")

    async def scenario() -> None:
        async with watching(src) as w:
            os.rename(src / "a", src / "b")
            os.rename(src / "d", src / "e")
            # The target may move its copy, so the new paths are CHANGED, not CREATED.
            assert await w.quiet() == {
                b"a": D,
                b"b": M,
                b"d": D,
                b"e": M,
                b"e/x": M,
                b"e/sub": M,
                b"e/sub/y": M,
            }
            moves = [(m.old, m.new) for b in w.batches for m in b.moves]
            assert moves == [(b"a", b"b"), (b"d", b"e")]
            for b in w.batches:  # each rename is placed right before its old path's deletion
                for m in b.moves:
                    assert b.changes[m.after] == Change(m.old, D)
            assert w.watcher.watch_count == 3
            write(src / "e" / "sub" / "new")
            assert await w.quiet() == {b"e/sub/new": C}

    run(scenario)


def test_dir_moved_out_is_deleted_and_forgotten(src: Path, tmp_path: Path) -> None:
    (src / "d" / "sub").mkdir(parents=True)
    write(src / "d" / "x")
    out = tmp_path / "outside"
    out.mkdir()

    async def scenario() -> None:
        async with watching(src) as w:
            os.rename(src / "d", out / "d")
            assert await w.quiet() == {b"d": D}
            assert w.watcher.watch_count == 1
            write(out / "d" / "x", b"y", "ab")
            write(out / "d" / "sub" / "z")
            (out / "d" / "new").mkdir()
            assert await w.quiet() == {}
            assert w.raw == [Change(b"d", D)]

    run(scenario)


def test_write_right_after_moving_out_is_not_reported(src: Path, tmp_path: Path) -> None:
    (src / "d").mkdir()
    (tmp_path / "outside").mkdir()

    async def scenario() -> None:
        async with watching(src) as w:
            os.rename(src / "d", tmp_path / "outside" / "d")
            write(tmp_path / "outside" / "d" / "quick")  # inside the pairing window
            assert await w.quiet() == {b"d": D}

    run(scenario)


def test_dir_moved_in_is_created_whole(src: Path, tmp_path: Path) -> None:
    tree = tmp_path / "outside" / "in"
    (tree / "a" / "b").mkdir(parents=True)
    write(tree / "top")
    write(tree / "a" / "b" / "deep")
    os.symlink("a", tree / "link")

    async def scenario() -> None:
        async with watching(src) as w:
            os.rename(tree, src / "in")
            assert sent(await w.quiet()) == sent(
                {
                    b"in": M,  # it may replace an empty directory a target has
                    b"in/top": C,
                    b"in/a": C,
                    b"in/a/b": C,
                    b"in/a/b/deep": C,
                    b"in/link": C,
                }
            )
            assert w.watcher.watch_count == 4
            write(src / "in" / "a" / "b" / "later")
            assert await w.quiet() == {b"in/a/b/later": C}

    run(scenario)


def test_links_are_created_and_never_followed(src: Path, backend: str) -> None:
    write(src / "f")
    (src / "d").mkdir()

    async def scenario() -> None:
        async with watching(src) as w:
            os.symlink("nowhere", src / "dangling")
            os.symlink("d", src / "dirlink")
            os.link(src / "f", src / "hard")
            assert await w.quiet() == {b"dangling": C, b"dirlink": C, b"hard": C}
            assert w.watcher.watch_count == listed(backend, 2)

    run(scenario)


def test_odd_names_survive_as_exact_bytes(src: Path) -> None:
    names = [b"new\nline", b"with space", b"-dash", b"caf\xe9", b"--", b"\xff\xfe"]
    root = os.fsencode(src)

    async def scenario() -> None:
        async with watching(src) as w:
            for name in names:
                write(root + b"/" + name)
            os.mkdir(root + b"/dir \xe9\n")
            write(root + b"/dir \xe9\n/in\xe9")
            expected = dict.fromkeys(names, C)
            expected[b"dir \xe9\n"] = C
            expected[b"dir \xe9\n/in\xe9"] = C
            assert sent(await w.quiet()) == sent(expected)
            os.rename(root + b"/caf\xe9", root + b"/caf\xe9\n2")
            assert await w.quiet() == {b"caf\xe9": D, b"caf\xe9\n2": M}

    run(scenario)


def test_excluded_paths_are_not_watched_or_reported(src: Path, backend: str) -> None:
    (src / "skip" / "inner").mkdir(parents=True)
    (src / "keep").mkdir()

    async def scenario() -> None:
        async with watching(src, excludes=Excludes(["skip/", "hidden/", "*.tmp"])) as w:
            assert w.watcher.watch_count == listed(backend, 2)  # root and keep
            write(src / "skip" / "f")
            write(src / "skip" / "inner" / "g")
            write(src / "a.tmp")
            write(src / "keep" / "b.tmp")
            write(src / "keep.txt")
            assert await w.quiet() == {b"keep.txt": C}
            os.rename(src / "a.tmp", src / "a.txt")  # out of excluded: moved in
            os.rename(src / "keep.txt", src / "keep.tmp")  # into excluded: moved out
            # a.txt may have existed (renamed over): CHANGED, so a later delete still travels
            assert await w.quiet() == {b"a.txt": M, b"keep.txt": D}
            os.rename(src / "keep", src / "hidden")
            assert await w.quiet() == {b"keep": D}
            assert w.watcher.watch_count == 1
            write(src / "hidden" / "c")
            assert await w.quiet() == {}

    run(scenario)


def test_idle_watcher_uses_no_cpu(src: Path) -> None:
    async def scenario() -> None:
        async with watching(src) as w:
            write(src / "f")
            await w.quiet()
            before = time.process_time()
            await asyncio.sleep(0.5)
            assert time.process_time() - before < 0.05

    run(scenario)


def test_root_deleted_raises_watch_error(src: Path) -> None:
    write(src / "f")

    async def scenario() -> None:
        async with watching(src) as w:
            shutil.rmtree(src)
            await w.quiet()
            assert isinstance(w.error, WatchError)
            assert "was deleted or moved away" in str(w.error)

    run(scenario)


def test_root_moved_raises_watch_error(src: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with watching(src) as w:
            os.rename(src, tmp_path / "elsewhere")
            await w.quiet()
            assert isinstance(w.error, WatchError)

    run(scenario)


def test_missing_root_raises_watch_error(tmp_path: Path) -> None:
    with pytest.raises(WatchError, match="cannot watch source directory"):
        Watcher(os.fsencode(tmp_path / "missing")).start()


@contextlib.contextmanager
def inotify_limit(name: str, value: int, kernel: str = "inotify") -> Any:
    path = Path("/proc/sys/fs") / kernel / name
    old = path.read_text()
    path.write_text(str(value))
    try:
        yield
    finally:
        path.write_text(old)


@pytest.mark.root
@pytest.mark.serial  # it lowers a machine-wide sysctl: run alone (see the Makefile)
@needs_root
def test_overflow_gives_full_batch_and_keeps_watching(src: Path, backend: str) -> None:
    watcher = Watcher(os.fsencode(src))
    with inotify_limit("max_queued_events", 64, backend):
        watcher.start()  # the queue size is fixed when the instance is created
    root = os.fsencode(src)
    for i in range(2000):
        write(root + b"/f%d" % i)

    async def scenario() -> None:
        w = Collector(watcher)
        try:
            await w.quiet(quiet=1.0)  # the full sync waits for the episode to be over
            assert sum(b.full for b in w.batches) == 1, "one reconcile per overflow episode"
            assert watcher.statistics().overflows >= 1
            write(src / "after")
            assert await w.quiet() == {b"after": C}
        finally:
            await w.stop()

    run(scenario)


@pytest.mark.root
@pytest.mark.serial  # it lowers a machine-wide sysctl: run alone (see the Makefile)
@needs_root
def test_watch_limit_at_start_names_the_sysctl(src: Path) -> None:
    for i in range(50):
        (src / f"d{i}").mkdir()
    watcher = Watcher(os.fsencode(src))
    with inotify_limit("max_user_watches", 5), pytest.raises(WatchLimitError) as info:
        watcher.start()
    message = str(info.value)
    assert "max_user_watches" in message
    assert "sysctl -w" in message
    assert "needs about 51 watches" in message
    assert watcher.watch_count == 0


@pytest.mark.root
@pytest.mark.serial  # it lowers a machine-wide sysctl: run alone (see the Makefile)
@needs_root
def test_watch_limit_at_runtime_logs_advice_and_still_reports(
    src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with watching(src) as w:
            with inotify_limit("max_user_watches", 1):  # our root watch already uses it
                (src / "new" / "sub").mkdir(parents=True)
                write(src / "new" / "f")
                got = await w.quiet(quiet=0.05)
            assert got == {b"new": C, b"new/sub": C, b"new/f": C}
            assert w.watcher.watch_count == 1

    with caplog.at_level(logging.ERROR, logger="trigsync.watcher"):
        run(scenario)
    assert any(
        "max_user_watches" in r.getMessage() and "sysctl -w" in r.getMessage()
        for r in caplog.records
    )


def test_root_given_as_symlink_is_watched(src: Path, tmp_path: Path) -> None:
    os.symlink(src, tmp_path / "link")

    async def scenario() -> None:
        async with watching(tmp_path / "link") as w:
            write(src / "f")
            assert await w.quiet() == {b"f": C}

    run(scenario)


@pytest.mark.parametrize("seen_by", ["listing", "create event"])
def test_file_still_written_in_a_new_dir_is_reported_once_at_its_close(
    src: Path, seen_by: str
) -> None:
    # A big file written into a new directory: found by the directory's listing, or by
    # its IN_CREATE when it already holds data, it must not be sent half-written.
    chunk = b"x" * (256 * 1024)

    async def scenario() -> None:
        async with watching(src) as w:
            os.mkdir(src / "big")
            if seen_by == "create event":
                await asyncio.sleep(0.1)  # the directory is watched before the file exists
            with open(src / "big" / "big.bin", "wb") as f:
                f.write(chunk)  # before the watcher runs again: it finds data already
                for _ in range(15):
                    await asyncio.sleep(0.02)
                    f.write(chunk)
                    f.flush()
                before_close = len(w.raw)
            assert sent(await w.quiet()) == {b"big": M, b"big/big.bin": M}
            reports = [i for i, c in enumerate(w.raw) if c.path == b"big/big.bin"]
            assert len(reports) == 1, w.raw
            assert reports[0] >= before_close, "reported while still being written"

    run(scenario)
