"""A long initial sync shows its progress in `trigsync status` while it runs."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.conftest import Start
from tests.e2e.harness import Replica
from tests.e2e.test_service import only_target
from tests.support.proc import wait_for
from tests.support.trees import wait_trees_equal


def test_status_shows_the_progress_of_a_long_initial_sync(
    start_trigsync: Start, source: Path, tmp_path: Path
) -> None:
    for i in range(30):
        (source / f"f{i:02}").write_bytes(os.urandom(200_000))
    path = tmp_path / "replica"
    path.mkdir()
    # 6 MB at 2 MB/s: about 3 s of initial sync to watch.
    replica = Replica("local", str(path), path, {"rsync_args": ["--bwlimit=2m"]})
    start_trigsync(replica)
    state = tmp_path / "state"
    shown: list[str] = []

    def progressing() -> bool:
        text = only_target(state)["progress"]
        if text:
            shown.append(text)
        return len(shown) >= 2

    wait_for(progressing, 20, 0.2, "progress in the status")
    assert "%, " in shown[-1] and "files sent" in shown[-1]
    wait_trees_equal(source, path, timeout=30)
    wait_for(lambda: only_target(state)["progress"] is None, 10, 0.1, "progress cleared")
