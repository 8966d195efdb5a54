"""One trigsync, three targets: a target that goes down holds back no other, then catches up."""

from __future__ import annotations

import random
from pathlib import Path

from tests.e2e.conftest import Start
from tests.e2e.harness import Replica
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal


def burst(source: Path, tag: str, rng: random.Random, files: int = 500) -> None:
    for i in range(files):
        d = source / f"{tag}-{i % 10}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:04d}").write_bytes(rng.randbytes(rng.randint(0, 1024)))
        if i % 50 == 49:
            earlier = source / f"{tag}-{(i - 1) % 10}" / f"f{i - 1:04d}"
            earlier.rename(source / f"{tag}-moved-{i}")
        if i % 70 == 69:
            (source / f"{tag}-{(i - 2) % 10}" / f"f{i - 2:04d}").unlink()


def test_down_daemon_holds_back_no_other_target(
    source: Path, tmp_path: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    rng = random.Random(77)
    down = rsync_daemon_factory(use_chroot=True)
    up = rsync_daemon_factory(use_chroot=True)
    local = tmp_path / "local-replica"
    local.mkdir()
    replicas = [
        Replica("rsyncd", d.url, d.module_path, {"password_file": str(d.password_file)})
        for d in (down, up)
    ]
    trig = start_trigsync(*replicas, Replica("local", str(local), local))

    burst(source, "before", rng)
    down.stop()  # mid-burst: its batches now fail with connection refused
    burst(source, "during", rng)

    for path in (local, up.module_path):
        wait_trees_equal(source, path, timeout=30)
    assert not down.running
    assert not (down.module_path / "during-0").exists()
    # Its first failure may be exit 12 (killed mid-transfer); the retries meet a closed port.
    wait_for(lambda: "exit 10" in trig.log(), timeout=15, what="a refused retry logged")

    down.restart()
    (source / "after-restart").write_text("the restarted daemon gets this too")
    wait_trees_equal(source, down.module_path, timeout=60)
    for path in (local, up.module_path):
        wait_trees_equal(source, path, timeout=10)
    assert trig.proc is not None and trig.proc.running, trig.log()[-3000:]
