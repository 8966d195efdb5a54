"""Over ssh with the fast path, runs reach a private rsync daemon on the receiver.

The spawner starts it on the receiver's loopback and the shared connection forwards a
local port to it (``sshroute.py``). These tests check what that daemon must guarantee
beyond the conformance suite (which runs every kind of change over it, as the
``ssh-daemon`` replica): the runs really take it, it lets in nobody without the secret,
it goes away with trigsync and leaves no secret behind, and when it dies the runs go on
by the spawner's route until it is back.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ROUTE_UP, Start
from tests.e2e.harness import Replica, Trigsync
from tests.support.proc import children_of, wait_for
from tests.support.sshd import SshServer
from tests.support.trees import wait_trees_equal

SPAWNER_ENDED = "the remote spawner ended"
NO_DAEMON = "no private daemon on the receiver: "
DAEMON_FAILED = "the receiver's private daemon failed"


@pytest.fixture
def server(bash_sshd: SshServer) -> SshServer:
    bash_sshd.clear_replica()
    bash_sshd.write_home_file(".bashrc", "")
    return bash_sshd


def replica_of(server: SshServer, **options: object) -> Replica:
    opts: dict[str, object] = {"ssh_options": server.ssh_options(), "ssh_fast_path": True}
    return Replica("ssh", server.url, server.replica, {**opts, **options}, ready=ROUTE_UP)


def daemons(server: SshServer) -> dict[int, int]:
    """The private daemons that run as the test user (not their connections): pid -> port."""
    uid = pwd.getpwnam(server.user).pw_uid
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            args = _cmdline(int(pid))
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        ports = [a for a in args if a.startswith(b"--port=")]
        if b"--daemon" in args and ports and b"--daemon" not in _cmdline(parent):
            found[int(pid)] = int(ports[0][len(b"--port=") :])
    return found


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def private_dirs(server: SshServer) -> list[Path]:
    uid = pwd.getpwnam(server.user).pw_uid
    return [p for p in Path("/tmp").glob("trigsync-rsyncd-*") if p.lstat().st_uid == uid]


def write_one_by_one(source: Path, replica: Path, count: int, prefix: str = "f") -> None:
    for i in range(count):
        (source / f"{prefix}{i}").write_bytes(os.urandom(300))
        wait_for((replica / f"{prefix}{i}").exists, timeout=10, interval=0.005, what=f"{i}")


def start(start_trigsync: Start, server: SshServer, **options: object) -> Trigsync:
    return start_trigsync(replica_of(server, **options))


def test_runs_take_the_daemon_and_its_standby_waits_there(
    source: Path, server: SshServer, start_trigsync: Start, tmp_path: Path
) -> None:
    trig = start(start_trigsync, server)
    [(daemon, _)] = daemons(server).items()
    write_one_by_one(source, server.replica, 5)
    (source / "link-abs").symlink_to("/etc/passwd")
    (source / "link-up").symlink_to("../../outside")
    (source / "x").mkdir(mode=0o750)
    with open(os.fsencode(source / "x") + b"/-leading dash\nnewline\xff", "wb") as odd:
        odd.write(b"odd")
    os.chmod(source / "f0", 0o600)
    wait_trees_equal(source, server.replica, timeout=15, owners=False)
    # A standby waits for the next change, logged in: a connection the daemon forked.
    wait_for(lambda: children_of(daemon), timeout=10, what="a standby at the daemon")
    secrets = list((tmp_path / "state" / "ssh").glob("*.pw"))
    assert len(secrets) == 1 and secrets[0].stat().st_mode & 0o777 == 0o600
    assert trig.stop() == 0
    wait_for(lambda: not daemons(server), timeout=10, what="the daemon to end with trigsync")
    wait_for(lambda: not private_dirs(server), timeout=10, what="its secrets to be removed")
    assert not list((tmp_path / "state" / "ssh").glob("*.pw")), "the secret's file stayed"


def test_a_login_without_the_secret_is_refused(
    source: Path, server: SshServer, start_trigsync: Start
) -> None:
    start(start_trigsync, server)
    [port] = daemons(server).values()
    for password in ("wrong", ""):
        argv = ["rsync", "-a", "/etc/hostname", f"rsync://trigsync@127.0.0.1:{port}/root/tmp/"]
        env = {**os.environ, "RSYNC_PASSWORD": password}
        done = subprocess.run(argv, env=env, capture_output=True, timeout=20, check=False)  # noqa: S603
        assert done.returncode == 5, done.stderr  # auth failed
    argv = ["rsync", f"rsync://127.0.0.1:{port}/"]  # the module list: none shows
    done = subprocess.run(argv, capture_output=True, timeout=20, check=False)  # noqa: S603
    assert b"root" not in done.stdout


def test_killed_trigsync_takes_the_daemon_with_it(
    source: Path, server: SshServer, start_trigsync: Start, tmp_path: Path
) -> None:
    trig = start(start_trigsync, server)
    assert daemons(server)
    trig.kill()  # no clean-up from trigsync: its session's end must do it
    wait_for(lambda: not daemons(server), timeout=10, what="the daemon to end")
    wait_for(lambda: not private_dirs(server), timeout=10, what="its secrets to be removed")
    for control in (tmp_path / "state" / "ssh").glob("????????????????"):
        argv = ["ssh", "-o", f"ControlPath={control}", "-O", "exit", "x"]
        subprocess.run(argv, check=False, capture_output=True)  # noqa: S603 - fixed argv


def test_a_dead_daemon_loses_nothing_and_comes_back(
    source: Path, server: SshServer, start_trigsync: Start
) -> None:
    trig = start(start_trigsync, server)
    [daemon] = daemons(server)
    os.kill(daemon, signal.SIGKILL)
    try:
        write_one_by_one(source, server.replica, 3)  # meanwhile: the spawner's route, or plain
    except AssertionError:
        raise AssertionError(trig.log()[-6000:]) from None
    # The spawner sees its daemon die within a second; a run that meets the dead
    # daemon first says so itself, and sets the channel up again either way.
    wait_for(
        lambda: SPAWNER_ENDED in trig.log() or DAEMON_FAILED in trig.log(),
        timeout=10,
        what="word of the dead daemon",
    )
    write_one_by_one(source, server.replica, 3, prefix="g")
    wait_for(lambda: trig.log().count(ROUTE_UP) == 2, timeout=20, what="the route again")
    [again] = daemons(server)
    assert again != daemon
    write_one_by_one(source, server.replica, 3, prefix="h")
    wait_trees_equal(source, server.replica, timeout=15, owners=False)
    assert trig.stop() == 0


def test_a_receiver_whose_rsync_cannot_be_a_daemon_takes_the_spawner_route(
    source: Path, server: SshServer, start_trigsync: Start
) -> None:
    home = Path(pwd.getpwnam(server.user).pw_dir)
    wrapper = server.write_home_file(
        "rsync-no-daemon",
        '#!/bin/sh\nfor a; do [ "$a" = --daemon ] && { echo "no daemons here" >&2; exit 1; }; '
        'done\nexec rsync "$@"\n',
        mode=0o755,
    )
    assert wrapper.parent == home
    replica = replica_of(server, remote_rsync=str(wrapper))
    replica.ready = None
    trig = start_trigsync(replica)
    trig.wait_log(NO_DAEMON)
    assert "rsync --daemon exited 1: no daemons here" in trig.log()
    write_one_by_one(source, server.replica, 4)
    wait_trees_equal(source, server.replica, timeout=15, owners=False)
    assert ROUTE_UP not in trig.log()
    assert trig.stop() == 0
