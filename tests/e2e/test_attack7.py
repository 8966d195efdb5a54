"""Attack round 7: README promises on stock setups that earlier tests did not cover."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.conftest import Start
from tests.e2e.harness import Replica


def test_sigterm_during_a_long_delay_sends_what_is_pending_and_exits_at_once(
    start_trigsync: Start, source: Path, tmp_path: Path
) -> None:
    """With delay = 120 (lsyncd users aggregate for minutes), SIGTERM waited out the
    delay before its last send: systemd's 90 s stop timeout killed it, and the change
    was left for the next start. The README: SIGTERM sends what is pending once more and
    exits 0."""
    path = tmp_path / "replica"
    path.mkdir()
    replica = Replica("local", str(path), path)
    ts = start_trigsync(replica, extra={"delay": 120})
    (source / "late.txt").write_text("written just before the stop\n")
    ts.wait_log("late.txt", timeout=5)  # queued; the worker sleeps out the delay
    assert ts.proc is not None
    ts.proc.signal(signal.SIGTERM)
    assert ts.proc.wait(5) == 0, ts.log()[-2000:]
    assert (path / "late.txt").read_text() == "written just before the stop\n"
