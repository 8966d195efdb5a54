"""Faults at the receiver: a stalled peer, one target down for minutes, one with a bad password.

Each test runs the real CLI against real rsync daemons. A failing target must be retried
without holding back the others, without losing a change, and without growing memory
or the durable pending set beyond one entry per distinct path.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BOTH_BACKENDS, Start, daemon_replica
from tests.e2e.harness import Replica, Trigsync
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.stallproxy import StallProxy
from tests.support.trees import assert_trees_equal, diff, snapshot, wait_trees_equal
from tests.support.workload import list_tree, make_tree

# The issue asks for a two-minute outage; CI may shorten it (and the RSS workload).
OUTAGE_SECONDS = float(os.environ.get("TRIGSYNC_OUTAGE_SECONDS", "120"))
RSS_WRITES = int(os.environ.get("TRIGSYNC_RSS_WRITES", "200000"))
RSS_FILES = 200
RSS_GROWTH_LIMIT_KIB = 20 * 1024
RSS_ROUND_PAUSE = 0.02  # after each round of rewriting all RSS_FILES
BURST_DIRS = 40
BURST_FILES_PER_DIR = 100
BURST_PAUSE = 0.1  # between directories: the burst lasts several seconds
LATENCY_SAMPLES = 5
LATENCY_LIMIT = 1.0
# Retries back off to at most 30 s (+20 % jitter); then the catch-up itself.
CATCH_UP_TIMEOUT = 90.0

_FAILED_RUN = re.compile(r"rsync exit (\d+) .*retrying in")
# A run trigsync's progress watchdog ended counts as a timeout, as rsync's exit 30 does.
_STALLED_RUN = re.compile(r"rsync made no progress for .*retrying in")


def alive(trig: Trigsync) -> bool:
    return trig.proc is not None and trig.proc.running


def failures(trig: Trigsync, url: str, codes: tuple[int, ...]) -> int:
    """How many failed runs to ``url`` with one of ``codes`` the log reports as retried."""
    count = 0
    for line in trig.log().splitlines():
        m = _FAILED_RUN.search(line)
        code = int(m.group(1)) if m else 30 if _STALLED_RUN.search(line) else None
        if url in line and code in codes:
            count += 1
    return count


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` from /proc, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def pending_rows(state_dir: Path, key: str, prefix: bytes = b"") -> tuple[int, bool]:
    """Durable pending rows for one target (paths under ``prefix``), and its full-sync flag."""
    db = sqlite3.connect(state_dir / "state.db", timeout=10)
    try:
        rows = db.execute("SELECT path FROM pending WHERE target = ?", (key,)).fetchall()
        flag = db.execute("SELECT full FROM target WHERE name = ?", (key,)).fetchone()
    finally:
        db.close()
    count = sum(1 for (path,) in rows if bytes(path).startswith(prefix))
    return count, bool(flag and flag[0])


def write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def arrival_seconds(source: Path, replica: Path, name: str, data: bytes) -> float:
    """Write one file and time its arrival (full content) at the replica."""
    target = replica / name
    started = time.monotonic()
    write(source / name, data)
    deadline = started + 10
    while time.monotonic() < deadline:
        try:
            if target.read_bytes() == data:
                return time.monotonic() - started
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise AssertionError(f"{name} did not reach {replica} within 10 s")


# Serial: beside other workers the stall can land in the tail of the initial full sync
# (trees equal, run not yet ended); rsync's keepalives (4 bytes a second) then count as
# progress, so neither rsync's --timeout nor trigsync's progress watchdog ends that run.
@pytest.mark.serial
@pytest.mark.timeout(120)
@BOTH_BACKENDS
def test_stalled_peer_times_out_is_retried_and_converges_after_heal(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    daemon = rsync_daemon_factory(use_chroot=True)
    make_tree(source, dirs=3, files_per_dir=5, seed=11)
    with StallProxy(daemon.port) as proxy:
        url = f"rsync://{daemon.user}@127.0.0.1:{proxy.port}/{daemon.module}/"
        replica = Replica(
            "rsyncd",
            url,
            daemon.module_path,
            {"password_file": str(daemon.password_file)},
            log=daemon.log_path,
            daemon=daemon,
        )
        trig = start_trigsync(replica, extra={"timeout": 2, "contimeout": 2})
        wait_trees_equal(source, replica.path, timeout=30)
        assert proxy.bytes_up > 0, "trigsync did not go through the proxy"

        proxy.stall()
        stalled_at = time.monotonic()
        for i in range(20):
            write(source / f"during-stall-{i:02d}", os.urandom(2000))
        (source / "d000").rename(source / "renamed-during-stall")
        wait_for(
            lambda: failures(trig, url, (30, 12, 10)) >= 1,
            timeout=15,
            what="a timed-out run to the stalled peer",
        )
        first = time.monotonic() - stalled_at
        # It keeps trying, one bounded run after another, and stays up.
        wait_for(
            lambda: failures(trig, url, (30, 12, 10)) >= 2,
            timeout=20,
            what="a second retried run",
        )
        assert alive(trig), trig.log()
        assert not (replica.path / "during-stall-00").exists(), "bytes got through a stall"
        assert failures(trig, url, (30,)) >= 1, (
            "no run ended on a timeout (exit 30, or no progress)"
        )

        proxy.heal()
        healed_at = time.monotonic()
        wait_trees_equal(source, replica.path, timeout=45)
        converged = time.monotonic() - healed_at
        assert alive(trig), trig.log()
        assert trig.stop() == 0
    print(f"stall: first failure after {first:.1f}s; converged {converged:.1f}s after heal")
    assert first < 10.0, f"the stalled run took {first:.1f}s to fail with timeout = 2"


@pytest.mark.long
@pytest.mark.timeout(OUTAGE_SECONDS + RSS_WRITES / 2000 + 300)
def test_one_target_down_for_minutes_holds_back_nothing_and_loses_nothing(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    tmp_path: Path,
) -> None:
    a = daemon_replica(rsync_daemon_factory)
    b = daemon_replica(rsync_daemon_factory)
    assert a.daemon is not None and b.daemon is not None
    make_tree(source / "seed", dirs=3, files_per_dir=10, seed=21)
    trig = start_trigsync(a, b)
    wait_trees_equal(source, a.path, timeout=30)
    wait_trees_equal(source, b.path, timeout=30)
    assert trig.proc is not None
    pid = trig.proc.pid

    halfway = threading.Event()
    errors: list[BaseException] = []

    def burst() -> None:
        try:
            for d in range(BURST_DIRS):
                base = source / "burst" / f"d{d:02d}"
                base.mkdir(parents=True)
                for f in range(BURST_FILES_PER_DIR):
                    write(base / f"f{f:03d}", b"%d/%d " % (d, f) * 20)
                if d == BURST_DIRS // 2:
                    halfway.set()
                time.sleep(BURST_PAUSE)
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            halfway.set()

    thread = threading.Thread(target=burst, name="burst")
    thread.start()
    try:
        assert halfway.wait(60), "the burst never got halfway"
        # SIGTERM: the daemon's receivers remove their temp files as they exit (after a
        # SIGKILL they stay behind: see test_receiver_killed_mid_file_leaves_no_temp_file).
        b.daemon.stop()
        down_at = time.monotonic()
    finally:
        thread.join(120)
    assert not thread.is_alive() and not errors, errors
    burst_done = time.monotonic()
    assert down_at < burst_done - 1, "B went down after the burst, not during it"

    # A is not held back by B: it has the whole burst within seconds.
    lag_a = wait_trees_equal(source, a.path, timeout=10)
    assert alive(trig), trig.log()
    latencies = [
        arrival_seconds(source, a.path, f"probe-{i}", os.urandom(2048))
        for i in range(LATENCY_SAMPLES)
    ]
    assert max(latencies) < LATENCY_LIMIT, f"latency to A while B is down: {latencies}"

    # Memory and the durable pending set stay bounded by distinct paths, not by writes.
    hot = source / "hot"
    hot.mkdir()
    for i in range(RSS_FILES):
        write(hot / f"h{i:03d}", b"write ------")
    wait_trees_equal(source, a.path, timeout=20)
    rss_before = rss_kib(pid)
    rss_started = time.monotonic()
    for n in range(RSS_WRITES):
        # Same-length rewrites in place: O_TRUNC costs ~0.3 ms per write on ext4 here.
        fd = os.open(hot / f"h{n % RSS_FILES:03d}", os.O_WRONLY)
        try:
            os.write(fd, b"write %06d" % n)
        finally:
            os.close(fd)
        if n % RSS_FILES == RSS_FILES - 1:
            # ~8,000 writes/s: fast, but within what a watcher reads before the kernel's
            # 16,384-event queue overflows (an overflow would swap paths for a full sync).
            time.sleep(RSS_ROUND_PAUSE)
    rss_seconds = time.monotonic() - rss_started
    wait_trees_equal(source, a.path, timeout=60)
    rss_after = rss_kib(pid)
    assert alive(trig), trig.log()
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB, (
        f"RSS grew from {rss_before} KiB to {rss_after} KiB over {RSS_WRITES} writes"
    )
    key = f"{source} -> {b.url}"
    hot_rows, _ = pending_rows(tmp_path / "state", key, b"hot/")
    all_rows, full = pending_rows(tmp_path / "state", key)
    distinct = len(list_tree(source))
    assert hot_rows <= RSS_FILES + 1, f"{hot_rows} pending rows for {RSS_FILES} hot files"
    assert all_rows <= distinct, f"{all_rows} pending rows for B, {distinct} paths in source"
    # Every hot file is pending for B (a full sync, after an overflow, covers them too).
    assert full or hot_rows == RSS_FILES, f"{hot_rows} of {RSS_FILES} hot files pending for B"

    # Stay down for the whole outage, failing with 'connection refused' and retrying.
    remaining = OUTAGE_SECONDS - (time.monotonic() - down_at)
    if remaining > 0:
        time.sleep(remaining)
    assert alive(trig), trig.log()
    assert failures(trig, b.url, (10, 12)) >= 1, trig.log()[-3000:]
    assert diff(snapshot(source), snapshot(b.path)), "B was never really down"
    assert_trees_equal(source, a.path)

    b.daemon.restart()
    catch_up = wait_trees_equal(source, b.path, timeout=CATCH_UP_TIMEOUT)
    assert_trees_equal(source, a.path)
    assert alive(trig), trig.log()
    assert trig.stop() == 0
    print(
        f"outage: A lag after burst {lag_a:.2f}s; latency to A {max(latencies) * 1000:.0f} ms max; "
        f"RSS {rss_before} -> {rss_after} KiB over {RSS_WRITES} writes in {rss_seconds:.1f}s; "
        f"B pending rows {all_rows} (hot {hot_rows}, full={full}) of {distinct} paths; "
        f"B down {OUTAGE_SECONDS:.0f}s, caught up {catch_up:.1f}s after restart"
    )


@pytest.mark.timeout(90)
@BOTH_BACKENDS
def test_wrong_password_on_one_target_is_reported_and_the_other_replicates(
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    start_trigsync: Start,
    tmp_path: Path,
) -> None:
    daemon = rsync_daemon_factory(use_chroot=True)
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-s3cret\n")
    wrong.chmod(0o600)
    bad = Replica(
        "rsyncd", daemon.url, daemon.module_path, {"password_file": str(wrong)}, daemon=daemon
    )
    local = tmp_path / "local-replica"
    local.mkdir()
    good = Replica("local", str(local), local)
    make_tree(source, dirs=3, files_per_dir=5, seed=31)

    trig = start_trigsync(bad, good)
    wait_trees_equal(source, local, timeout=20)
    wait_for(lambda: "auth failed" in trig.log(), timeout=20, what="the auth failure in the log")

    # Live changes still reach the healthy target while the other one is failing.
    (source / "after-auth-failure.txt").write_text("still replicating")
    next(p for p in sorted(source.rglob("*.bin"))).unlink()
    wait_trees_equal(source, local, timeout=10)

    assert alive(trig), trig.log()
    lines = [ln for ln in trig.log().splitlines() if "auth failed" in ln]
    assert any(daemon.url in ln and "exit 5" in ln and "retry" in ln for ln in lines), lines
    assert "not-the-s3cret" not in trig.log(), "the password reached the log"
    assert "auth failed" in daemon.log_text()
    assert list(daemon.module_path.iterdir()) == [], "a wrong password delivered files"
    assert trig.stop() == 0


@pytest.mark.timeout(90)
@BOTH_BACKENDS
def test_receiver_killed_mid_file_leaves_no_temp_file(
    source: Path, rsync_daemon_factory: RsyncDaemonFactory, start_trigsync: Start
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    assert replica.daemon is not None
    # --bwlimit keeps the file in flight long enough to kill the receiver under it.
    trig = start_trigsync(replica, extra={"rsync_args": ["--bwlimit=4m"]})
    wait_for(lambda: "full sync done" in trig.log(), timeout=10, what="the initial sync")
    data = os.urandom(16 << 20)
    write(source / "big", data)
    wait_for(
        lambda: any(p.name.startswith(".big.") for p in replica.path.iterdir()),
        timeout=10,
        what="rsync's temp file on the receiver",
    )
    replica.daemon.kill()  # SIGKILL: a crash or power loss, no cleanup on the receiver
    wait_for(
        lambda: failures(trig, replica.url, (10, 12, 30)) >= 1,
        timeout=20,
        what="the cut-off run to fail",
    )
    replica.daemon.restart()
    wait_for(
        lambda: (
            (replica.path / "big").exists() and (replica.path / "big").stat().st_size == len(data)
        ),
        timeout=30,
        what="the file to arrive after the restart",
    )
    time.sleep(1.0)  # a reconciling run, if any, follows the batch
    assert alive(trig), trig.log()
    wait_trees_equal(source, replica.path, timeout=10)
