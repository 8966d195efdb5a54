"""Attacks on the ssh fast path's daemon route (sshroute.py) with setups users have:
what a run by ``rsync://`` to the receiver's private daemon does differently from
``rsync --server`` over ssh. Where it would, the target keeps the spawner's route."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from tests.e2e.conftest import ROUTE_UP, Start
from tests.e2e.harness import Replica, Trigsync, run_cli, write_config
from tests.e2e.test_ssh_route import NO_DAEMON, server, write_one_by_one
from tests.support.proc import wait_for
from tests.support.sshd import SshServer
from tests.support.trees import wait_trees_equal

__all__ = ["server"]  # a fixture, shared with test_ssh_route

FAKE_SUPER = "user.rsync.%stat"  # where rsync --fake-super keeps the owner it cannot set


def start_at(start_trigsync: Start, server: SshServer, path: Path, **options: object) -> Trigsync:
    """trigsync to ``path`` on the test sshd, the fast path on, once the daemon route is
    either up or declined (the runs before that go by plain ssh)."""
    url = f"ssh://{server.user}@{server.host}:{server.port}{path}"
    opts = {"ssh_options": server.ssh_options(), "ssh_fast_path": True, **options}
    trig = start_trigsync(Replica("ssh", url, path, opts))
    wait_for(lambda: ROUTE_UP in trig.log() or NO_DAEMON in trig.log(), timeout=20, what="route")
    return trig


def owned_by_test_user(server: SshServer, path: Path) -> Path:
    entry = pwd.getpwnam(server.user)
    path.mkdir()
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def test_a_target_path_with_a_wildcard_is_refused_and_its_match_untouched(
    source: Path, server: SshServer, tmp_path: Path
) -> None:
    """The receiving rsync glob-expands the destination it is given (the daemon, and
    ``rsync --server`` over ssh too, even with -s): ``site[1]`` is ``site1``, whose files
    the full sync's --delete removes. A path with a wildcard is a one-line config error."""
    beside = owned_by_test_user(server, server.replica / "site1")
    (beside / "keep").write_bytes(b"not the replica's")
    replica = server.replica / "site[1]"
    url = f"ssh://{server.user}@{server.host}:{server.port}{replica}"
    opts: dict[str, object] = {"ssh_options": server.ssh_options()}  # plain ssh globs too
    config = write_config(
        tmp_path / "t.toml",
        source=source,
        replicas=[Replica("ssh", url, replica, opts)],
        state_dir=tmp_path / "state",
    )
    (source / "f0").write_bytes(b"x")
    done = run_cli("run", "--once", "--config", str(config))
    assert sorted(p.name for p in beside.iterdir()) == ["keep"], "a run went outside the replica"
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert "holds a wildcard" in line and "site[1]" in line, line


def test_rsync_path_in_rsync_args_still_runs_the_remote_rsync_it_names(
    source: Path, server: SshServer, start_trigsync: Start
) -> None:
    """``--rsync-path="rsync --fake-super"`` (rsync's way to back up owners to an account
    that cannot set them): a run by ``rsync://`` ignores it, the owners are lost."""
    if os.geteuid() != 0:
        return
    trig = start_at(
        start_trigsync, server, server.replica, rsync_args=["--rsync-path=rsync --fake-super"]
    )
    write_one_by_one(source, server.replica, 3)
    wait_trees_equal(source, server.replica, timeout=10, owners=False)
    for name in ("f0", "f1", "f2"):
        assert os.getxattr(server.replica / name, FAKE_SUPER), name
    assert "rsync_args has --rsync-path" in trig.log()
    assert trig.stop() == 0


def test_run_once_with_the_fast_path_exits_when_the_sync_is_done(
    source: Path, server: SshServer, tmp_path: Path
) -> None:
    """``run --once`` (cron, scripts) ran the spawner's set-up after its sync, which the
    end of the event loop cancelled mid-start: trigsync never exited."""
    opts = {"ssh_options": server.ssh_options(), "ssh_fast_path": True}
    replica = Replica("ssh", server.url, server.replica, opts)
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[replica], state_dir=tmp_path / "state"
    )
    (source / "f0").write_bytes(b"x")
    done = run_cli("run", "--once", "--config", str(config), timeout=15)
    assert done.returncode == 0, done.stderr
    wait_trees_equal(source, server.replica, timeout=5, owners=False)


def test_iconv_in_rsync_args_keeps_every_run_going(
    source: Path, server: SshServer, start_trigsync: Start
) -> None:
    """A daemon without ``charset`` refuses --iconv (exit 4): every run by the route failed,
    none of them a route failure, so nothing after the route came up arrived."""
    trig = start_at(start_trigsync, server, server.replica, rsync_args=["--iconv=UTF-8,UTF-8"])
    write_one_by_one(source, server.replica, 3)
    wait_trees_equal(source, server.replica, timeout=10, owners=False)
    assert "rsync_args has --iconv" in trig.log()
    assert trig.stop() == 0
