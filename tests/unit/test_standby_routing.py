"""Which standby takes a list: one that has logged in, never an older one whose login
stalled (a stock daemon's Nagle meets our delayed ACK in about one login in four).

The stand-in for rsync logs in as rsync does: it reads its stdin (the probe, then the
list) only once its login is done. Its first standby stalls in its login until the
test ends; every other one logs in at once. Which process ran the list is asserted,
not how long it took.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from trigsync import rsync
from trigsync.standby import Standby

FAKE = """#!{python}
import os, pathlib, sys, time
runs = pathlib.Path("{runs}")
with open(runs / "started", "a") as f:
    f.write("x")
n = len((runs / "started").read_text())
if n == 2:  # the first standby to start: its login stalls
    (runs / "stalled.tmp").write_text(str(os.getpid()))
    os.rename(runs / "stalled.tmp", runs / "stalled")
    time.sleep(30)
first = os.read(0, 1)
(runs / f"run{{n}}").write_bytes(first + sys.stdin.buffer.read())
"""


def fake_rsync(tmp_path: Path) -> list[rsync.Arg]:
    runs = tmp_path / "runs"
    runs.mkdir()
    fake = tmp_path / "rsync"
    fake.write_text(FAKE.format(python=sys.executable, runs=runs))
    fake.chmod(0o755)
    return [str(fake), "--files-from=-", "src/", "dst/"]


def test_a_list_goes_to_a_logged_in_standby_not_to_an_older_stalled_one(tmp_path: Path) -> None:
    argv = fake_rsync(tmp_path)
    standby = Standby(enabled=True, timeout=10, env=None, name="t")

    async def scenario() -> tuple[rsync.Result, int | None, bool]:
        await standby.run(argv, b"a\0")  # fresh (run 1); the first standby (2) follows
        marker = tmp_path / "runs" / "stalled"
        while not standby.ready or not marker.exists():
            await asyncio.sleep(0.01)
        # The one that stalls, as it says: on a loaded machine a hedge started beside it
        # may be the second to run its first line.
        stalled = int(marker.read_text())
        second = await standby.run(argv, b"b\0")  # 2 never logs in: another starts, takes it
        still = any(p.pid == stalled and p.returncode is None for p in standby.pool)
        await standby.drop()
        return second, stalled, still

    second, stalled, still = asyncio.run(scenario())
    assert second.outcome is rsync.Outcome.OK, second.stderr
    runs = tmp_path / "runs"
    assert (runs / "run1").read_bytes() == b"a\0"
    assert not (runs / "run2").exists(), "the list waited on the stalled login"
    took = [p.name for p in runs.glob("run*") if p.read_bytes() == b"\0b\0"]
    assert len(took) == 1 and took != ["run1"], took  # the probe NUL, then the list
    assert still, "the stalled standby was kept for a later change"
    assert stalled is not None
