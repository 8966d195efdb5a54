"""Faults injected into a worker, the journal and rsync's start: each is either retried
and reported (the status snapshot says failing, with the error, and the replica then
equals the source) or fatal, with a non-zero exit and a one-line message.

Real rsync to local replicas; the faults are real where the machine allows it (a full
tmpfs, an rsync binary that cannot be executed, SQLite refusing to grow) and injected
by wrapping a function only for an unexpected exception, which has no real trigger.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Replica, Trigsync, write_config
from tests.support.ports import free_port
from tests.support.proc import ProcGroup, wait_for
from tests.support.trees import assert_trees_equal, wait_trees_equal
from trigsync import cli, rsync
from trigsync.changes import Batch, Change, Kind
from trigsync.dispatch import Dispatcher, Settings
from trigsync.state import StateStore
from trigsync.status import TargetStatus
from trigsync.targets import build
from trigsync.targets.base import TargetSpec
from trigsync.watcher import Watcher

FILES = 50


def make_files(src: Path, prefix: str, count: int = FILES) -> list[Change]:
    for i in range(count):
        (src / f"{prefix}{i:03d}").write_bytes(b"%d" % i)
    return [Change(os.fsencode(f"{prefix}{i:03d}"), Kind.CHANGED) for i in range(count)]


async def wait_status(dispatcher: Dispatcher, state: str, timeout: float = 10.0) -> TargetStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (status := dispatcher.status()).state != state:
        assert loop.time() < deadline, f"never {state}: {status}"
        await asyncio.sleep(0.005)
    return status


def test_an_unexpected_error_in_a_run_is_reported_failing_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    changes = make_files(src, "f")
    real_run = rsync.run
    calls = 0

    async def flaky_run(*args: object, **kw: object) -> rsync.Result:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("injected transport fault")
        return await real_run(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rsync, "run", flaky_run)

    async def scenario() -> None:
        target = build(TargetSpec(str(dst)), state_dir=tmp_path / "state")
        settings = Settings(standby=False, backoff_min=0.3)
        dispatcher = Dispatcher(os.fsencode(src), target, rsync.Options(), settings)
        worker = asyncio.create_task(dispatcher.run())
        dispatcher.submit(Batch(tuple(changes)))
        failing = await wait_status(dispatcher, "failing")
        assert failing.last_error is not None
        assert "internal error: RuntimeError: injected transport fault" in failing.last_error
        assert failing.restarts >= 1 and failing.pending == FILES
        await asyncio.wait_for(dispatcher.wait_idle(), 20)
        done = dispatcher.status()
        assert (done.state, done.last_error, done.restarts) == ("idle", None, 3)
        dispatcher.close()
        await asyncio.wait_for(worker, 10)

    asyncio.run(scenario())
    assert_trees_equal(src, dst)
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and "injected" in r.message]
    assert len(logged) == 1, "one line per distinct error, not one per retry"


def test_a_state_database_that_cannot_be_written_never_stops_the_worker(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    changes = make_files(src, "g" + "x" * 150)
    store = StateStore(tmp_path / "state")
    store._db.execute("PRAGMA query_only = 1")  # every write fails from now on

    async def scenario() -> TargetStatus:
        target = build(TargetSpec(str(dst)), state_dir=tmp_path / "state")
        settings = Settings(standby=False, max_pending=FILES // 2)  # mark_full runs too
        dispatcher = Dispatcher(os.fsencode(src), target, rsync.Options(), settings, store=store)
        worker = asyncio.create_task(dispatcher.run())
        dispatcher.submit(Batch(tuple(changes)))  # record, mark_full
        await asyncio.wait_for(dispatcher.wait_idle(), 20)  # confirm
        status = dispatcher.status()
        dispatcher.close()
        await asyncio.wait_for(worker, 10)
        return status

    status = asyncio.run(scenario())
    assert_trees_equal(src, dst)
    assert status.state == "idle" and status.last_error is None
    assert status.journal_error is not None and "readonly" in status.journal_error
    assert store.behind


def test_a_failing_watcher_ends_the_process_with_one_line_and_a_non_zero_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()

    async def broken(self: Watcher) -> object:
        await asyncio.sleep(0.2)
        raise RuntimeError("injected watcher bug")
        yield  # an async generator, like the real one

    monkeypatch.setattr(Watcher, "batches", broken)
    code = cli.main(["run", "--state-dir", str(tmp_path / "state"), str(src), str(dst)])
    assert code != 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "watcher of" in errors[0] and "injected watcher bug" in errors[0]


def test_a_worker_that_ends_on_its_own_ends_the_process_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()

    async def gone(self: Dispatcher) -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("injected end of a worker")

    monkeypatch.setattr(Dispatcher, "run", gone)
    code = cli.main(["run", "--state-dir", str(tmp_path / "state"), str(src), str(dst)])
    assert code != 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "injected end of a worker" in errors[0]


def status_lines(trig: Trigsync) -> list[str]:
    assert trig.proc is not None
    before = trig.log().count(" status ")
    trig.proc.signal(signal.SIGUSR1)
    wait_for(lambda: trig.log().count(" status ") > before, what="the status line")
    return [line for line in trig.log().splitlines() if " status " in line][before:]


def test_rsync_that_cannot_start_is_reported_and_retried(tmp_path: Path, procs: ProcGroup) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    binary = tmp_path / "bin" / "rsync"
    binary.parent.mkdir()
    shutil.copy2(shutil.which("rsync") or "/usr/bin/rsync", binary)
    config = write_config(
        tmp_path / "trigsync.toml",
        source=src,
        replicas=[Replica("local", str(dst), dst)],
        state_dir=tmp_path / "state",
        extra={"rsync_path": str(binary)},
    )
    trig = Trigsync(procs, config).start()
    make_files(src, "a", 5)
    wait_trees_equal(src, dst, timeout=20)
    binary.chmod(0o644)  # exec now fails (EACCES), as it would for EAGAIN or EMFILE
    try:
        # Standbys started before the chmod take the first changes (they deliver them);
        # once they are used up, a change needs a new rsync, which cannot start.
        sent = 0

        def reported() -> bool:
            nonlocal sent
            if trig.log().count("cannot run") >= 1:
                return True
            (src / f"b{sent:03d}").write_bytes(b"%d" % sent)
            sent += 1
            return False

        wait_for(reported, timeout=20, interval=0.05, what="the error")
        wait_for(
            lambda: any("failing" in line for line in status_lines(trig)),
            timeout=20,
            what="a failing status",
        )
        [line] = status_lines(trig)
        assert "cannot run" in line and " 0 restarts" not in line, line
    finally:
        binary.chmod(0o755)
    wait_trees_equal(src, dst, timeout=40)
    assert trig.stop() == 0, trig.log()
    errors = [line for line in trig.log().splitlines() if " ERROR " in line]
    assert len([e for e in errors if "cannot run" in e]) == 1, errors


@pytest.fixture
def tiny_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs as the state directory, always unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(  # noqa: S603
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:  # noqa: S603
            subprocess.run(["umount", "-l", str(mount)], check=False)  # noqa: S603


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_state_disk_keeps_replicating_and_journals_again_when_space_returns(
    tmp_path: Path, procs: ProcGroup, tiny_state_dir: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    # A second target that is down keeps its paths pending, so they must reach the disk.
    down = f"rsync://127.0.0.1:{free_port()}/mod"
    config = write_config(
        tmp_path / "trigsync.toml",
        source=src,
        replicas=[Replica("local", str(dst), dst), Replica("daemon", down, tmp_path / "none")],
        state_dir=tiny_state_dir,
        initial_sync=False,  # a pending full sync would stand for every row
    )
    trig = Trigsync(procs, config).start()
    try:
        make_files(src, "a", 5)
        wait_trees_equal(src, dst, timeout=20)
        filler = fill(tiny_state_dir)
        names = make_files(src, "b" + "y" * 200, 300)
        wait_trees_equal(src, dst, timeout=20)  # replication carries on from memory
        wait_for(lambda: "cannot write" in trig.log(), timeout=20, what="the journal's error")
        assert all("journal behind" in line for line in status_lines(trig))
        key = f"{src} -> {down}"
        assert pending_paths(tiny_state_dir, key) & {c.path for c in names} == set()
        filler.unlink()
        try:
            wait_for(
                lambda: {c.path for c in names} <= pending_paths(tiny_state_dir, key),
                timeout=40,
                what="the journal to catch up",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{trig.log()[-4000:]}") from None
        assert "written again" in trig.log()
        make_files(src, "c", 5)
        wait_trees_equal(src, dst, timeout=20)
        assert trig.stop() == 0, trig.log()
    finally:
        if trig.proc is not None and trig.proc.running:
            trig.kill()
    errors = [line for line in trig.log().splitlines() if "cannot write" in line]
    assert len(errors) == 1 and "full" in errors[0], errors
    assert {c.path for c in names} <= pending_paths(tiny_state_dir, key)


def pending_paths(state_dir: Path, key: str) -> set[bytes]:
    db = sqlite3.connect(state_dir / "state.db", timeout=10)
    try:
        rows = db.execute("SELECT path FROM pending WHERE target = ?", (key,)).fetchall()
    except sqlite3.Error:
        return set()
    finally:
        db.close()
    return {bytes(path) for (path,) in rows}
