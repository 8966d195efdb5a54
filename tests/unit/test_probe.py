"""The login probe: the loop hears of a standby's login the moment it reads its stdin.

A shell stands in for rsync: it reads one byte of its stdin when told to (a file
appears), as rsync does once its login is done.
"""

from __future__ import annotations

import asyncio
import fcntl
import time
from pathlib import Path

from trigsync.probe import PIPE_DEFAULT, Probe

F_GETPIPE_SZ = 1032


async def _stand_in(gate: Path) -> asyncio.subprocess.Process:
    script = f'while [ ! -e "{gate}" ]; do sleep 0.01; done; head -c 1 >/dev/null; sleep 5'
    return await asyncio.create_subprocess_exec("sh", "-c", script, stdin=asyncio.subprocess.PIPE)


def _pipe_size(proc: asyncio.subprocess.Process) -> int:
    assert proc.stdin is not None
    fd = proc.stdin.transport.get_extra_info("pipe").fileno()
    return int(fcntl.fcntl(fd, F_GETPIPE_SZ))


def test_the_login_is_heard_when_the_probe_is_read_not_before(tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    async def scenario() -> tuple[float | None, float, float | None, int]:
        proc = await _stand_in(gate)
        heard: list[float] = []
        probe = Probe(proc, lambda: heard.append(time.monotonic()))
        await asyncio.sleep(0.2)
        early = heard[0] if heard else None
        opened = time.monotonic()
        gate.touch()
        deadline = opened + 5
        while not heard and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        size = _pipe_size(proc)
        probe.cancel()
        proc.kill()
        await proc.wait()
        return early, opened, heard[0] if heard else None, size

    early, opened, heard, size = asyncio.run(scenario())
    assert early is None, "heard a login before the probe was read"
    assert heard is not None and heard >= opened, "the read was not heard"
    assert size == PIPE_DEFAULT, "the pipe kept its one-page size after the login"


def test_a_standby_that_dies_unread_is_no_login(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "exit 3", stdin=asyncio.subprocess.PIPE
        )
        heard: list[str] = []
        probe = Probe(proc, lambda: heard.append("login"))
        await proc.wait()
        await asyncio.sleep(0.1)  # the broken pipe wakes the loop: it must not count
        probe.cancel()
        return heard

    assert asyncio.run(scenario()) == []
