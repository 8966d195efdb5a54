"""rsync exits 23 and 11 are examined path by path: one bad path never holds back the others."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from trigsync import partial, rsync
from trigsync.changes import Batch, Change, Kind
from trigsync.dispatch import Dispatcher, Settings
from trigsync.targets import build
from trigsync.targets.base import TargetSpec


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Directories made immutable (chattr +i) for the test, made mutable again after."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)  # noqa: S603


def test_a_refused_path_is_set_aside_and_the_rest_keep_flowing(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    immutable: list[Path],
) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    replica = daemon_replica(rsync_daemon_factory)
    (source / "blocked").mkdir()
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=10)
    # The receiver cannot create anything in an immutable directory: rsync exits 23.
    made = subprocess.run(["chattr", "+i", str(replica.path / "blocked")], check=False)  # noqa: S603
    if made.returncode != 0:
        pytest.skip("this filesystem does not support chattr +i")
    immutable.append(replica.path / "blocked")

    (source / "blocked" / "file").write_text("cannot land")
    for i in range(20):
        (source / f"ok{i:02d}").write_text(str(i))
    wait_for(lambda: "partial transfer" in trig.log(), timeout=15, what="exit 23")
    wait_for((replica.path / "ok19").exists, timeout=10, what="the good paths")
    for i in range(20):
        assert (replica.path / f"ok{i:02d}").read_text() == str(i)
    line = next(ln for ln in trig.log().splitlines() if "exit 23" in ln and "retrying" in ln)
    assert "blocked/file" in line and "ok0" not in line, line

    # Later changes go through at once, not behind a backoff.
    started = time.monotonic()
    (source / "later").write_text("fast")
    wait_for((replica.path / "later").exists, timeout=5, what="a later file")
    assert time.monotonic() - started < 2.0
    assert trig.proc is not None and trig.proc.running


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a receiver's disk that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)  # noqa: S603
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)  # noqa: S603


def _runs_through(
    monkeypatch: pytest.MonkeyPatch, src: Path, dst: Path, changes: list[Change]
) -> tuple[int, Dispatcher]:
    """Send ``changes`` to ``dst`` with real rsync runs, counted, until nothing is pending."""
    real_run = rsync.run
    runs = 0

    async def counted(*args: object, **kw: object) -> rsync.Result:
        nonlocal runs
        runs += 1
        return await real_run(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rsync, "run", counted)

    async def scenario() -> Dispatcher:
        target = build(TargetSpec(str(dst)), state_dir=src.parent / "state")
        dispatcher = Dispatcher(os.fsencode(src), target, rsync.Options(), Settings(standby=False))
        worker = asyncio.create_task(dispatcher.run())
        dispatcher.submit(Batch(tuple(changes)))
        await asyncio.wait_for(dispatcher.wait_idle(), 30)
        dispatcher.close()
        await asyncio.wait_for(worker, 10)
        return dispatcher

    return runs, asyncio.run(scenario())


def test_a_file_too_big_for_the_receiver_is_set_aside_alone(
    tmp_path: Path, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ENOSPC makes rsync exit 11 at the first file it cannot write, and the paths after
    # it in its order are not sent either: halving delivers them and sets the big one aside.
    src = tmp_path / "src"
    src.mkdir()
    names = [f"f{i:02d}" for i in range(40)]
    for name in names:
        (src / name).write_bytes(b"small\n")
    (src / "f10.big").write_bytes(os.urandom(2 << 20))
    changes = [Change(os.fsencode(n), Kind.CHANGED) for n in [*names, "f10.big"]]

    runs, dispatcher = _runs_through(monkeypatch, src, tiny_disk, changes)

    assert sorted(os.listdir(tiny_disk)) == names
    assert [c.path for c in dispatcher.unconfirmed().changes] == [b"f10.big"]
    error = dispatcher.status().last_error
    assert error is not None and "exit 11" in error and "No space left on device" in error, error
    assert "f10.big" in error and "f09" not in error, error
    assert runs <= 1 + 2 * 6, runs  # one run, then two per halving of 41 paths


def test_a_full_disk_costs_a_bounded_number_of_runs_and_keeps_every_path(
    tmp_path: Path, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every half fails on a full disk: halving down to single paths would cost two runs
    # per path, every minute. The isolation stops at partial.MAX_RUNS and sets the rest
    # aside, none dropped, with the receiver's own word in the status.
    fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i:03d}").write_bytes(b"x" * 5000)
    changes = [Change(b"f%03d" % i, Kind.CHANGED) for i in range(200)]

    runs, dispatcher = _runs_through(monkeypatch, src, tiny_disk, changes)

    assert runs <= 1 + partial.MAX_RUNS, runs
    assert sorted(c.path for c in dispatcher.unconfirmed().changes) == [c.path for c in changes]
    error = dispatcher.status().last_error
    assert error is not None and "No space left on device" in error, error
