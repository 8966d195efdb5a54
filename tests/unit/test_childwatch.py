"""Children are waited for through pidfds: no thread per rsync started."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from trigsync import childwatch, rsync


def test_a_child_is_waited_for_without_a_thread_of_its_own() -> None:
    if not childwatch.use_pidfds():
        pytest.skip("this kernel or Python has no pidfd_open")

    async def scenario() -> tuple[int, int, int]:
        before = threading.active_count()
        proc = await asyncio.create_subprocess_exec("sh", "-c", "sleep 0.2; exit 7")
        during = threading.active_count()
        return before, during, await proc.wait()

    before, during, code = asyncio.run(scenario())
    assert code == 7
    assert during == before, "a thread was started to wait for the child"


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_stopping_a_child_that_just_died_reports_its_real_exit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Popen.send_signal polls first, which reaped a child that had just exited behind
    # asyncio's back: the pidfd watcher then said 255, with a WARNING at every recycle.
    if not childwatch.use_pidfds():
        pytest.skip("this kernel or Python has no pidfd_open")

    async def scenario() -> int | None:
        proc = await asyncio.create_subprocess_exec("sleep", "30")
        os.kill(proc.pid, signal.SIGKILL)
        while not _zombie(proc.pid):  # dead, not yet reaped: the loop has not run
            time.sleep(0.001)
        await rsync.stop(proc)
        return proc.returncode

    assert asyncio.run(scenario()) == -signal.SIGKILL
    assert "exit status already read" not in caplog.text
