"""rsync.signal_child: signals a child asyncio waits for, and never spoils its exit code."""

from __future__ import annotations

import asyncio
import signal
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from trigsync import rsync


def _run(main: Callable[[], Coroutine[Any, Any, int]], watcher: str) -> int:
    if watcher == "default":
        return asyncio.run(main())
    loop = asyncio.new_event_loop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pidfd = asyncio.PidfdChildWatcher()
        asyncio.set_child_watcher(pidfd)
    try:
        pidfd.attach_loop(loop)
        return loop.run_until_complete(main())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(None)  # type: ignore[arg-type]
        loop.close()


async def _child(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*argv)


def test_a_live_child_gets_the_signal() -> None:
    async def main() -> int:
        proc = await _child("sleep", "30")
        rsync.signal_child(proc, signal.SIGTERM)
        return await asyncio.wait_for(proc.wait(), 10)

    assert asyncio.run(main()) == -signal.SIGTERM


@pytest.mark.parametrize("watcher", ["default", "pidfd"])
def test_a_child_that_just_exited_keeps_its_exit_code(watcher: str) -> None:
    """It exits while the loop is busy (so asyncio has not set returncode yet); the
    signal meant for it must not reap it behind the watcher. With the pidfd watcher,
    ``proc.terminate()`` did (Popen.send_signal polls first): asyncio reported 255."""

    async def main() -> int:
        proc = await _child("sh", "-c", "exit 7")
        time.sleep(0.3)  # the loop is blocked: the child is gone, returncode still None
        assert proc.returncode is None
        rsync.signal_child(proc, signal.SIGTERM)
        rsync.signal_child(proc, signal.SIGKILL)
        return await asyncio.wait_for(proc.wait(), 10)

    assert _run(main, watcher) == 7


def test_a_reaped_child_is_left_alone() -> None:
    async def main() -> int:
        proc = await _child("true")
        code = await proc.wait()
        rsync.signal_child(proc, signal.SIGKILL)  # its pid may be another's by now
        return code

    assert asyncio.run(main()) == 0
