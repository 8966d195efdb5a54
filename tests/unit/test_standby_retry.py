"""A standby that dies mid-file and a fresh retry that succeeds: the receiver may keep the
dead run's temp file, so the result must ask for a reconciling sync."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from trigsync import rsync
from trigsync.standby import Standby

# Stands in for rsync: its second run (the standby that takes the second list) reads its
# list and dies as a receiver killed mid-transfer does; every other run succeeds.
FAKE = """#!{python}
import os, pathlib, sys
os.read(0, 1)  # rsync reads its list a byte at a time, once logged in
sys.stdin.buffer.read()
count = pathlib.Path("{count}")
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
if n == 2:
    sys.stderr.write("rsync: connection unexpectedly closed (0 bytes received so far)\\n")
    sys.exit(12)
"""


def test_a_fresh_retry_after_a_standby_cut_short_asks_for_a_reconcile(tmp_path: Path) -> None:
    fake = tmp_path / "rsync"
    fake.write_text(FAKE.format(python=sys.executable, count=tmp_path / "runs"))
    fake.chmod(0o755)
    argv: list[rsync.Arg] = [str(fake), "--files-from=-", "src/", "dst/"]
    standby = Standby(enabled=True, timeout=10, env=None, name="t")

    async def scenario() -> tuple[rsync.Result, rsync.Result]:
        first = await standby.run(argv, b"a\0")  # fresh; a standby follows
        for _ in range(300):
            if standby.ready:
                break
            await asyncio.sleep(0.01)
        assert standby.ready, "no standby started"
        second = await standby.run(argv, b"b\0")
        await standby.drop()
        return first, second

    first, second = asyncio.run(scenario())
    assert first.outcome is rsync.Outcome.OK and not first.left_temp
    assert second.outcome is rsync.Outcome.OK, second.stderr
    assert second.left_temp, "the receiver may hold the dead run's temp file"
    assert rsync.cut_short(second)
