"""A storm of new files (issue 16): sent as it comes, in runs of at most ``lanes.CHUNK``
paths that overlap; a long list handed to rsync without the event loop; and the
journal forgets nothing a run that took only part of the pending set left behind.

Real rsync to a local replica, the dispatcher in process.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.support.trees import assert_trees_equal
from trigsync import lanes, rsync
from trigsync.changes import Batch, Change, Kind
from trigsync.dispatch import Dispatcher, Settings
from trigsync.state import StateStore
from trigsync.status import RunReport
from trigsync.targets import build
from trigsync.targets.base import TargetSpec


def storm(src: Path, dirs: int, files: int, name: str = "f") -> list[Change]:
    """``files`` new files in each of ``dirs`` new directories, and their changes."""
    changes = []
    for d in range(dirs):
        (src / f"d{d:03d}").mkdir()
        changes.append(Change(b"d%03d" % d, Kind.NEW))
        for f in range(files):
            rel = f"d{d:03d}/{name}{f:04d}"
            (src / rel).write_bytes(b"%d" % f)
            changes.append(Change(os.fsencode(rel), Kind.NEW))
    return changes


def on_replica(dst: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(dst))


def test_a_storm_goes_in_runs_of_a_chunk_and_the_journal_keeps_what_they_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lanes, "CHUNK", 300)
    monkeypatch.setattr(lanes, "CHUNK_MIN", 100)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    changes = storm(src, dirs=40, files=50)  # 2,040 paths
    store = StateStore(tmp_path / "state")
    sizes: list[int] = []
    forgotten: list[set[bytes]] = []

    async def scenario() -> None:
        target = build(TargetSpec(str(dst)), state_dir=tmp_path / "state")
        dispatcher = Dispatcher(
            os.fsencode(src), target, rsync.Options(), Settings(standby=False), store=store
        )

        def observe(report: RunReport) -> None:
            # A run that took a chunk must not confirm the rows of what stays pending:
            # after a crash now, the next start must still send every path not delivered.
            sizes.append(len(report.paths))
            store.flush()
            rows = {
                bytes(p)
                for (p,) in store._db.execute(
                    "SELECT path FROM pending WHERE target = ?", (dispatcher.key,)
                )
            }
            missing = {c.path for c in changes if not (dst / os.fsdecode(c.path)).exists()}
            forgotten.append(missing - rows)

        dispatcher.observers.append(observe)
        worker = asyncio.create_task(dispatcher.run())
        dispatcher.submit(Batch(tuple(changes)))
        await asyncio.wait_for(dispatcher.wait_idle(), 60)
        dispatcher.close()
        await asyncio.wait_for(worker, 10)

    asyncio.run(scenario())
    assert_trees_equal(src, dst)
    assert len(sizes) >= len(changes) // 300 and max(sizes) <= 300, sizes
    assert sum(sizes) == len(changes), sizes
    assert not any(forgotten), [sorted(f)[:3] for f in forgotten]


def test_a_long_list_reaches_rsync_while_the_event_loop_is_busy(tmp_path: Path) -> None:
    # rsync reads its list one byte per system call; one of 200,000 paths drains for
    # seconds, and rsync waited for the loop (busy translating the storm) at every pipeful.
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    changes = storm(src, dirs=10, files=300, name="a-rather-long-name-for-a-file-of-a-storm-")
    data = rsync.path_list(c.path for c in changes)
    assert len(data) > 2 * rsync.LIST_IN_THREAD  # more than a pipe holds
    argv = rsync.batch_argv(os.fsencode(src), rsync.Options(), rsync.Transport(f"{dst}/"))

    async def scenario() -> tuple[bool, rsync.Result]:
        proc = await rsync.spawn(argv, stdin=True, stdout=True)
        run = asyncio.ensure_future(rsync.finish(proc, data, stall=None))
        for _ in range(20):  # the run hands its list over and starts waiting
            await asyncio.sleep(0)
        # Now the loop is busy for as long as it takes (or 20 s): nothing it would do
        # for rsync can happen meanwhile.
        deadline = time.monotonic() + 20
        while on_replica(dst) < 3000 and time.monotonic() < deadline:
            time.sleep(0.02)
        done_while_busy = on_replica(dst) == 3000
        return done_while_busy, await run

    done_while_busy, result = asyncio.run(scenario())
    assert result.code == 0, result.stderr
    assert done_while_busy, "rsync waited for the event loop to be handed its list"
    assert_trees_equal(src, dst)
