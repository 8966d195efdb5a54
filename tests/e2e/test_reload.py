"""SIGHUP reloads the config file without losing pending paths: targets added, changed and
removed, and excludes changed, while changes wait for a target that is down or paused."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.harness import Replica, Trigsync, write_config
from tests.e2e.test_service import cli, status
from tests.support.proc import ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal


def local_replica(tmp_path: Path, name: str) -> Replica:
    path = tmp_path / name
    path.mkdir()
    return Replica("local", str(path), path)


def reload(ts: Trigsync, tmp_path: Path, source: Path, *replicas: Replica, **kw: object) -> None:
    write_config(
        ts.config,
        source=source,
        replicas=replicas,
        state_dir=tmp_path / "state",
        **kw,  # type: ignore[arg-type]
    )
    seen = ts.log().count("SIGHUP: config")
    assert ts.proc is not None
    ts.proc.signal(signal.SIGHUP)
    wait_for(lambda: ts.log().count("SIGHUP: config") > seen, 10, 0.05, "the reload")
    assert "config not reloaded" not in ts.log(), ts.log()


def pending(state: Path) -> dict[str, int]:
    (sync,) = status(state)["syncs"]
    return {t["target"]: t["pending"] for t in sync["targets"]}


def test_a_target_added_while_changes_wait_for_a_stopped_one(
    start_trigsync: Start, source: Path, rsync_daemon_factory: RsyncDaemonFactory, tmp_path: Path
) -> None:
    old = daemon_replica(rsync_daemon_factory)
    assert old.daemon is not None
    ts = start_trigsync(old)
    state = tmp_path / "state"
    wait_for(lambda: status(state)["syncs"][0]["targets"][0]["batches"], 10, 0.1, "initial sync")
    old.daemon.stop()
    for i in range(10):
        (source / f"while-down-{i}").write_text(f"{i}\n")
    # The changes wait: as paths, or folded into a full sync (a standby that was waiting
    # when the daemon went took one of them, and a run cut short asks for one).
    wait_for(
        lambda: pending(state)[old.url] + _in_flight(state) >= 10 or _full_pending(state),
        10,
        0.1,
        "pending",
    )
    new = local_replica(tmp_path, "added")
    reload(ts, tmp_path, source, old, new)
    assert "add " + new.url in ts.log()
    wait_trees_equal(source, new.path)  # the new target gets a full sync
    old.daemon.restart()
    wait_trees_equal(source, old.path, timeout=45)  # the old one's pending paths still arrive
    assert ts.stop() == 0


def _full_pending(state: Path) -> bool:
    (sync,) = status(state)["syncs"]
    return any(t["full_pending"] for t in sync["targets"])


def _in_flight(state: Path) -> int:
    (sync,) = status(state)["syncs"]
    return sum(t["in_flight"] for t in sync["targets"])


def test_a_changed_target_takes_over_the_pending_set_and_a_removed_one_stops(
    start_trigsync: Start, source: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    kept, gone = local_replica(tmp_path, "kept"), local_replica(tmp_path, "gone")
    ts = start_trigsync(kept, gone)
    wait_trees_equal(source, kept.path)
    assert cli(state, "pause", kept.url).returncode == 0
    for i in range(5):
        (source / f"held-{i}").write_text(f"{i}\n")
    wait_for(lambda: pending(state)[kept.url] == 5, 10, 0.05, "5 pending paths")
    wait_trees_equal(source, gone.path)
    kept.options = {"rsync_args": ["--omit-dir-times"]}  # a new worker for it
    reload(ts, tmp_path, source, kept)
    assert f"replace {kept.url}" in ts.log() and f"remove {gone.url}" in ts.log()
    wait_for(lambda: list(pending(state)) == [kept.url], 10, 0.05, "one target left")
    assert pending(state)[kept.url] == 5  # handed over, and still paused
    assert not (kept.path / "held-0").exists()
    assert cli(state, "resume").returncode == 0
    wait_trees_equal(source, kept.path)
    (source / "after").write_text("after\n")
    wait_trees_equal(source, kept.path)
    assert not (gone.path / "after").exists()  # the removed target gets nothing more
    assert ts.stop() == 0


def test_changed_excludes_take_effect_and_let_in_what_they_kept_out(
    start_trigsync: Start, source: Path, tmp_path: Path
) -> None:
    replica = local_replica(tmp_path, "replica")
    ts = start_trigsync(replica, excludes=["*.tmp"])
    (source / "kept-out.tmp").write_text("x\n")
    (source / "a.log").write_text("a\n")
    wait_for((replica.path / "a.log").exists, 10, 0.05, "a.log")
    assert not (replica.path / "kept-out.tmp").exists()
    reload(ts, tmp_path, source, replica, excludes=["*.log"])
    wait_for((replica.path / "kept-out.tmp").exists, 10, 0.05, "the full sync")
    (source / "later.tmp").write_text("now watched\n")
    (source / "later.log").write_text("now excluded\n")
    wait_for((replica.path / "later.tmp").exists, 10, 0.05, "later.tmp")
    assert not (replica.path / "later.log").exists()
    assert ts.stop() == 0


def test_a_config_that_cannot_work_is_refused_whole(
    start_trigsync: Start, source: Path, tmp_path: Path
) -> None:
    replica = local_replica(tmp_path, "replica")
    ts = start_trigsync(replica)
    bad = Replica("rsyncd", "rsync://u@127.0.0.1:1/www/", tmp_path, {"password_file": "/nope"})
    write_config(ts.config, source=source, replicas=[replica, bad], state_dir=tmp_path / "state")
    assert ts.proc is not None
    ts.proc.signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded" in ts.log(), 10, 0.05, "the refusal")
    assert "password file /nope does not exist" in ts.log()
    (source / "still").write_text("running\n")
    wait_trees_equal(source, replica.path)
    assert len(pending(tmp_path / "state")) == 1
    assert ts.stop() == 0


def test_a_target_removed_on_reload_releases_its_source_view(
    source: Path, tmp_path: Path, procs: ProcGroup
) -> None:
    """Each target's runner holds a nosymfollow view of the source (an fd on a detached
    mount tree): one removed by a reload must not keep it for the life of the daemon."""
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    first = Replica("local", str(tmp_path / "r1"), tmp_path / "r1")
    second = Replica("local", str(tmp_path / "r2"), tmp_path / "r2")
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[first, second], state_dir=tmp_path / "s"
    )
    ts = Trigsync(procs, config, "-v").start()
    assert ts.proc is not None
    pid = ts.proc.pid

    def views() -> int:
        """A detached mount tree's fd reads as "/" (it is the root of its own tree)."""
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError):  # closed since the listing
                count += os.readlink(fd) == "/"
        return count

    (source / "f").write_text("sent to both")
    for replica in (first, second):  # a view is made by a target's first run
        wait_trees_equal(source, replica.path)
    held = views()
    assert held >= 2, held
    write_config(config, source=source, replicas=[first], state_dir=tmp_path / "s")
    ts.proc.signal(signal.SIGHUP)
    wait_for(lambda: views() < held, 10, what="the removed target's view to be released")
    assert ts.stop() == 0
