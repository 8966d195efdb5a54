"""Attack round 7: README promises on stock setups that earlier tests did not cover."""

from __future__ import annotations

import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any, cast

from tests.e2e.conftest import Start, daemon_replica, local_replica, refusing_replica
from tests.e2e.harness import Replica, Trigsync, write_config
from tests.e2e.harness import run_cli as trigsync
from tests.e2e.test_reload import reload
from tests.e2e.test_service import status
from tests.support.proc import ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal


def test_sigterm_during_a_long_delay_sends_what_is_pending_and_exits_at_once(
    start_trigsync: Start, source: Path, tmp_path: Path
) -> None:
    """With delay = 120 (lsyncd users aggregate for minutes), SIGTERM waited out the
    delay before its last send: systemd's 90 s stop timeout killed it, and the change
    was left for the next start. The README: SIGTERM sends what is pending once more and
    exits 0."""
    replica = local_replica(tmp_path)
    path = replica.path
    ts = start_trigsync(replica, extra={"delay": 120})
    (source / "late.txt").write_text("written just before the stop\n")
    ts.wait_log("late.txt", timeout=5)  # queued; the worker sleeps out the delay
    assert ts.proc is not None
    ts.proc.signal(signal.SIGTERM)
    assert ts.proc.wait(5) == 0, ts.log()[-2000:]
    assert (path / "late.txt").read_text() == "written just before the stop\n"


def test_sigterm_stops_while_reconcile_every_is_shorter_than_a_full_sync(
    start_trigsync: Start, source: Path, tmp_path: Path
) -> None:
    """reconcile_every kept ticking after SIGTERM: a tick during the last send queued
    one more full sync, so a full sync longer than reconcile_every (a big tree, a slow
    link) held the stop up for good. Here a tick comes every 10 ms."""
    path = tmp_path / "replica"
    path.mkdir()
    for i in range(200):
        (source / f"f{i}").write_text(f"{i}\n")
    replica = Replica("local", str(path), path)
    ts = start_trigsync(replica, extra={"reconcile_every": 0.01})
    ts.wait_log("full sync done", timeout=5)
    assert ts.proc is not None
    ts.proc.signal(signal.SIGTERM)
    assert ts.proc.wait(5) == 0, ts.log()[-2000:]


def test_an_exclude_regex_dropped_by_reload_lets_its_files_through(
    procs: ProcGroup, source: Path, tmp_path: Path
) -> None:
    """A reload that changes only exclude_regex placed a new watcher and asked for a full
    sync, but kept every worker, whose rsync still ran with the old regex's patterns:
    the files it had kept out never arrived, and trigsync said the full sync was done."""
    replica = local_replica(tmp_path)
    path = replica.path
    (source / "app.log").write_text("kept out, then let in\n")
    (source / "index.html").write_text("<p>\n")
    state = tmp_path / "state"
    regex: dict[str, object] = {"exclude_regex": [r".*\.log"]}
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[replica], state_dir=state, extra=regex
    )
    ts = Trigsync(procs, config, "-v").start()
    wait_trees_equal(source, path, exclude=lambda p: p.endswith(b".log"))
    assert not (path / "app.log").exists()
    reload(ts, tmp_path, source, replica, extra={"exclude_regex": []})
    (source / "later.log").write_text("written after the reload\n")
    wait_trees_equal(source, path, timeout=5)
    assert ts.stop() == 0


def test_reconcile_every_set_by_reload_repairs_drift(
    procs: ProcGroup, source: Path, tmp_path: Path
) -> None:
    """reconcile_every was read once at start: a reload that turned it on (or changed
    it, or added a sync with it) said "config reloaded" and never ran a periodic sync,
    so drift made on the receiver stayed."""
    replica = local_replica(tmp_path)
    path = replica.path
    (source / "page.html").write_text("<p>source</p>\n")
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[replica], state_dir=tmp_path / "state"
    )
    ts = Trigsync(procs, config, "-v").start()
    wait_trees_equal(source, path)
    reload(ts, tmp_path, source, replica, extra={"reconcile_every": 0.3})
    (path / "page.html").write_text("<p>defaced on the receiver</p>\n")
    (path / "stray.php").write_text("<?php\n")
    wait_trees_equal(source, path, timeout=5)
    assert ts.stop() == 0


def test_verify_against_a_daemon_that_refuses_some_paths_lists_the_drift(
    rsync_daemon_factory: RsyncDaemonFactory, source: Path, tmp_path: Path
) -> None:
    """A daemon that refuses a path (its `exclude`, here *.secret) made every verify say
    "cannot verify" (exit 5, "unreachable") and list nothing, not even a file changed on
    the source: drift was hidden behind a reachable, working target."""
    replica = refusing_replica(rsync_daemon_factory, max_connections=4)
    (source / "ok.txt").write_text("ok\n")
    (source / "key.secret").write_text("never on the receiver\n")
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[replica], state_dir=tmp_path / "state"
    )
    assert trigsync("run", "--config", str(config), "--once").returncode == 5
    (source / "ok.txt").write_text("changed since\n")
    done = trigsync("verify", "--config", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot verify" not in done.stdout, done.stdout
    assert "ok.txt" in done.stdout and "key.secret" in done.stdout, done.stdout


def test_pause_names_a_target_with_or_without_its_trailing_slash(
    start_trigsync: Start, source: Path, tmp_path: Path
) -> None:
    """The README pauses `rsync://backup@10.0.0.2/www/` for the target its config writes
    `rsync://backup@10.0.0.2/www`: that was "no target", exit 1, and nothing paused."""
    replica = local_replica(tmp_path)
    path = replica.path
    ts = start_trigsync(replica)
    state = str(tmp_path / "state")
    done = trigsync("pause", f"{path}/", "--state-dir", state)
    assert done.returncode == 0, done.stderr
    (source / "held.txt").write_text("waits for resume\n")
    ts.wait_log("held.txt", timeout=5)
    assert not (path / "held.txt").exists(), "the target was not paused"
    assert trigsync("resume", f"{path}//", "--state-dir", state).returncode == 0
    wait_trees_equal(source, path, timeout=5)


def test_changes_while_stopped_arrive_after_the_clock_was_stepped_back(
    procs: ProcGroup, source: Path, tmp_path: Path
) -> None:
    """The catch-up after a clean stop sends files whose ctime is after the stop's
    wall-clock time. A clock that was ahead at the stop (NTP steps it back while
    trigsync is down, a VM resumed) put the stop in the future: every file changed while
    stopped looked older, and stayed off the replica for good. Here the stop time is
    moved an hour ahead, as such a clock would have written it. (A clock stepped back by
    less than trigsync was down leaves no trace to find.)"""
    replica = local_replica(tmp_path)
    path = replica.path
    (source / "page.html").write_text("v1\n")
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[replica], state_dir=state, initial_sync=False
    )
    ts = Trigsync(procs, config, "-v").start()
    (source / "page.html").write_text("v1, sent\n")
    wait_trees_equal(source, path)
    assert ts.stop() == 0
    with sqlite3.connect(state / "state.db") as db:
        (stopped,) = db.execute("SELECT value FROM meta WHERE key = 'stopped_at'").fetchone()
        ahead = repr(float(stopped) + 3600)
        db.execute("UPDATE meta SET value = ? WHERE key = 'stopped_at'", (ahead,))
    (source / "page.html").write_text("v2, written while stopped\n")
    ts = Trigsync(procs, config, "-v").start()
    wait_trees_equal(source, path, timeout=5)
    assert ts.stop() == 0


def test_a_reload_that_replaces_a_worker_keeps_its_last_success_and_counts(
    procs: ProcGroup, source: Path, tmp_path: Path
) -> None:
    """A reload that changed a target's settings gave it a new worker with fresh counts:
    status said LAST SUCCESS never (trigsync_last_success_timestamp_seconds vanished from
    the metrics) and SENT 0 for a target that had just been sent to."""
    replica = local_replica(tmp_path)
    path = replica.path
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[replica], state_dir=state, initial_sync=False
    )
    ts = Trigsync(procs, config, "-v").start()
    (source / "a.txt").write_text("a\n")
    wait_trees_equal(source, path)
    wait_for(lambda: target_status(state)["paths_sent"] == 1, 5, what="the count")
    before = target_status(state)
    changed = Replica("local", str(path), path, {"rsync_args": ["--bwlimit=100m"]})
    reload(ts, tmp_path, source, changed, initial_sync=False)
    (source / "b.txt").write_text("b, sent by the new worker\n")
    wait_trees_equal(source, path)
    wait_for(lambda: target_status(state)["batches"] >= 2, 5, what="the counts carried over")
    after = target_status(state)
    assert after["last_success"] >= before["last_success"], (before, after)
    assert (after["batches"], after["paths_sent"]) == (2, 2), after
    assert ts.stop() == 0


def target_status(state: Path) -> dict[str, Any]:
    ((target,),) = (s["targets"] for s in status(state)["syncs"])
    return cast("dict[str, Any]", target)


def test_the_sersync_command_hook_runs_after_a_reload(
    procs: ProcGroup, source: Path, tmp_path: Path
) -> None:
    """sersync's command plugin (command_hook) hung on the first target's worker as an
    extra observer; a reload that kept that worker reset its observers to its hooks, and
    one that replaced it built a worker without it: after the first SIGHUP that changed
    the sync (a target added, a setting changed), the command never ran again."""
    first, second = tmp_path / "r1", tmp_path / "r2"
    first.mkdir()
    second.mkdir()
    replicas = [Replica("local", str(first), first)]
    done = tmp_path / "ran"
    done.mkdir()
    argv = [sys.executable, "-c", COMMAND, str(done)]
    extra: dict[str, object] = {"command_hook": [{"argv": argv}]}
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "t.toml",
        source=source,
        replicas=replicas,
        state_dir=state,
        extra=extra,
        initial_sync=False,  # a file written during a full sync goes with it, unnamed
    )
    ts = Trigsync(procs, config, "-v").start()
    (source / "before.php").write_text("<?php\n")
    wait_for((done / "before.php").exists, 5, what="the command before the reload")
    replicas.append(Replica("local", str(second), second))
    reload(ts, tmp_path, source, *replicas, extra=extra, initial_sync=False)
    (source / "after.php").write_text("<?php\n")
    wait_trees_equal(source, second, timeout=5)
    wait_for((done / "after.php").exists, 5, what="the command after the reload")
    assert ts.stop() == 0


# Records each call by the base name of its argument, the path sent.
COMMAND = "import os, sys; open(os.path.join(sys.argv[1], os.path.basename(sys.argv[2])), 'w')"


def test_doctor_names_the_fix_for_a_host_the_daemon_denies(
    rsync_daemon_factory: RsyncDaemonFactory, source: Path, tmp_path: Path
) -> None:
    """A tutorial's `hosts allow = 192.168.1.0/24` that leaves out the sender: doctor said
    "cannot list module www: @ERROR: access denied ..." and no fix."""
    replica = daemon_replica(rsync_daemon_factory)
    assert replica.daemon is not None
    conf = replica.daemon.config_path
    conf.write_text(conf.read_text() + "hosts allow = 192.168.1.0/24\n")
    replica.daemon.restart()
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[replica], state_dir=tmp_path / "state"
    )
    done = trigsync("doctor", "--config", str(config))
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("ERROR")]
    assert "denies this host (127.0.0.1)" in line and "'hosts allow'" in line, line
