"""The progress watchdog on real child processes: a silent one is caught, a busy one is not."""

from __future__ import annotations

import asyncio
import sys
import time

from trigsync import rsync, runwatch

BUSY = "import os, time\nend = time.time() + 2\nwhile time.time() < end: os.write(1, b'x')"


async def _run(code: str, stall: float) -> tuple[str | None, float, rsync.Result]:
    proc = await rsync.spawn([sys.executable, "-c", code], stdout=True)
    started = time.monotonic()
    result = await rsync.finish(proc, stall=stall)
    return (None if result.stalled is None else "stall"), time.monotonic() - started, result


def test_a_silent_child_is_ended_after_the_stall() -> None:
    why, took, result = asyncio.run(_run("import time; time.sleep(30)", stall=0.5))
    assert why == "stall"
    assert took < 5, took
    assert result.code < 0 and b"no progress for" in result.stderr
    assert rsync.cut_short(result)


def test_a_child_that_keeps_writing_is_left_alone() -> None:
    why, took, result = asyncio.run(_run(BUSY, stall=0.5))
    assert why is None and result.code == 0, result.stderr
    assert took >= 2


def test_a_grandchild_counts_and_is_ended_with_its_parent() -> None:
    # The parent waits silently on a child that sleeps: the whole tree is silent.
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"

    async def scenario() -> tuple[rsync.Result, list[int]]:
        proc = await rsync.spawn([sys.executable, "-c", code])
        await asyncio.sleep(0.3)
        tree = runwatch.descendants(proc.pid)
        return await rsync.finish(proc, stall=0.5), tree

    result, tree = asyncio.run(scenario())
    assert result.stalled is not None
    assert len(tree) == 2, tree
    time.sleep(0.1)
    assert all(not _alive(pid) for pid in tree), tree


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
