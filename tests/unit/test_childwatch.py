"""Children are waited for through pidfds: no thread per rsync started."""

from __future__ import annotations

import asyncio
import threading

import pytest

from trigsync import childwatch


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
