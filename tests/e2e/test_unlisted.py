"""A run that lists a directory whole may deliver paths it was not given: their events,
arriving after it, must still be able to delete them. Real rsync, a local target; the
test holds the events back to make the race certain."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.support.trees import assert_trees_equal
from trigsync.changes import Batch, Change, Kind
from trigsync.dispatch import Dispatcher, Settings
from trigsync.rsync import Options
from trigsync.targets import build
from trigsync.targets.base import TargetSpec


def test_a_file_sent_unlisted_and_then_deleted_is_deleted_on_the_target(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    dst.mkdir()
    names = [b"d/f%02d" % i for i in range(20)]
    for name in names:
        (src / os.fsdecode(name)).write_bytes(b"x")
    # Created after the batch below was taken: the batch does not name it.
    (src / "d" / "late").write_bytes(b"late")

    async def scenario() -> None:
        target = build(TargetSpec(str(dst)), state_dir=tmp_path / "state")
        dispatcher = Dispatcher(os.fsencode(src), target, Options(), Settings(standby=False))
        worker = asyncio.create_task(dispatcher.run())
        dispatcher.submit(Batch((Change(b"d", Kind.NEW), *(Change(n, Kind.NEW) for n in names))))
        await dispatcher.wait_idle()
        assert (dst / "d" / "late").exists(), "d/ was not listed whole, so nothing is tested"
        # Its events reach us only now, after the run: created, and deleted again.
        os.unlink(src / "d" / "late")
        dispatcher.submit(Batch((Change(b"d/late", Kind.NEW), Change(b"d/late", Kind.DELETED))))
        await dispatcher.wait_idle()
        dispatcher.close()
        await worker

    asyncio.run(scenario())
    assert not (dst / "d" / "late").exists()
    assert_trees_equal(src, dst)
