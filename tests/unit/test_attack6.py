"""Attacks on the spawner's private rsync daemon (the ssh fast path's daemon route), by
the local python3 and the real rsync on loopback sockets: what other users of the
receiver can do to it, and a receiver whose temporary directory is unusable."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.proc import children_of, wait_for
from tests.unit.test_spawner import Spawner, assert_serves_alone, spawner
from trigsync.errors import ConfigError
from trigsync.targets import rsyncd, ssh
from trigsync.targets.spawner import HEADER_ROOM, HEADER_TIMEOUT, SPAWNER


def test_connections_that_never_greet_the_daemon_do_not_hold_its_children() -> None:
    """Each connection to the daemon's port is a forked rsync of the receiver's user at
    once, before any secret: one that sends nothing must not hold it past the header
    timeout (the spawner's own rule), or another user piles up processes of that user."""
    with spawner(timeout=2) as sp:
        pid = sp.daemon_pid()
        assert pid is not None
        conns = [socket.create_connection(("127.0.0.1", sp.daemon_port)) for _ in range(5)]
        try:
            wait_for(lambda: children_of(pid), timeout=5, what="a child per connection")
            deadline = time.monotonic() + 5
            for conn in conns:  # each is closed by its child, which then has ended
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    while conn.recv(100):
                        pass
                except TimeoutError:
                    raise AssertionError("an idle connection still held its child") from None
            wait_for(lambda: not children_of(pid), timeout=2, what="idle children to go")
        finally:
            for conn in conns:
                conn.close()


@pytest.mark.xfail(
    strict=True,
    reason="rsyncd's module timeout also ends a standby that waits for its change, and "
    "the global one stops at the module's name: a client stalled at the secret's "
    "challenge holds a daemon child until it closes (needs a gate before the daemon)",
)
def test_a_connection_stalled_at_the_challenge_does_not_hold_a_child() -> None:
    with spawner(timeout=2) as sp:
        pid = sp.daemon_pid()
        assert pid is not None
        with socket.create_connection(("127.0.0.1", sp.daemon_port)) as conn:
            assert conn.recv(100).startswith(b"@RSYNCD:")
            conn.sendall(b"@RSYNCD: 31.0\nroot\n")
            assert b"AUTHREQD" in conn.recv(200)
            deadline = time.monotonic() + 3
            while children_of(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            held = children_of(pid)
    # Outside the spawner: it ends by its session, and takes its directory along.
    assert not held, "a connection without the secret still holds a daemon child"


UNUSABLE_TMP = (
    "mount -t tmpfs -o ro none /tmp && mount -t tmpfs -o ro none /var/tmp && cd / && "
    'exec setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 -c "$@"'
)


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace needs root")
def test_an_unusable_tmp_leaves_the_spawner_serving_and_says_why() -> None:
    """No temporary directory (/tmp full or read-only): no daemon, but the spawner's own
    route must still serve, as when rsync cannot be a daemon, and say why."""
    key = secrets.token_hex(32).encode()
    args = [SPAWNER, str(HEADER_TIMEOUT), str(HEADER_ROOM), "rsync"]
    argv = ["unshare", "--mount", "sh", "-c", UNUSABLE_TMP, "sh", *args]
    pipe = subprocess.PIPE
    with subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=pipe, cwd="/") as proc:  # noqa: S603
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(key + b"\n")
        proc.stdin.flush()
        line = proc.stdout.readline().decode()
        if not line and b"mount" in proc.stderr.read():
            pytest.skip("no mount namespace here")
        port, daemon, why = [*line.split(" ", 2), "", ""][:3]
        assert port.isdigit() and daemon == "0", f"the spawner said {line!r}"
        assert "No usable temporary directory" in why, why
        assert_serves_alone(Spawner(proc, int(port), key, 0))


@pytest.mark.parametrize("end", ["session gone before the answer", "SIGHUP"])
def test_a_spawner_cut_short_leaves_no_secret_behind(tmp_path: Path, end: str) -> None:
    """The session can end while the spawner starts (its answer meets a closed pipe), or
    by a hang-up (sshd's, when the connection drops): the daemon goes, and so must its
    directory with the secret."""
    key = secrets.token_hex(32).encode()
    argv = ["python3", "-c", SPAWNER, str(HEADER_TIMEOUT), str(HEADER_ROOM), "rsync"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    pipe = subprocess.PIPE
    with subprocess.Popen(argv, stdin=pipe, stdout=pipe, cwd="/", env=env) as proc:  # noqa: S603
        assert proc.stdin and proc.stdout
        proc.stdin.write(key + b"\n")
        proc.stdin.flush()
        if end == "SIGHUP":
            assert proc.stdout.readline().split()[1] != b"0"
            proc.send_signal(signal.SIGHUP)
        else:
            proc.stdout.close()  # its answer has nowhere to go
        proc.wait(10)
        wait_for(lambda: not list(tmp_path.glob("trigsync-rsyncd-*")), timeout=3, what="clean")
        wait_for(lambda: not rsync_daemons_in(tmp_path), timeout=3, what="the daemon to end")


def rsync_daemons_in(directory: Path) -> list[int]:
    """rsync daemons whose config lies in ``directory``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"--daemon" in cmdline and os.fsencode(directory) in cmdline:
            found.append(int(pid))
    return found


@pytest.mark.parametrize(
    ("parse", "url"),
    [
        (ssh.parse, "ssh://u@h/srv/site[1]"),
        (ssh.parse, "u@h:/srv/*"),
        (rsyncd.parse, "rsync://h/www/a?b"),
        (rsyncd.parse, "h::www/[x]"),
    ],
)
def test_a_remote_path_with_a_wildcard_is_a_config_error(
    parse: Callable[[str], object], url: str
) -> None:
    with pytest.raises(ConfigError, match="holds a wildcard") as caught:
        parse(url)
    assert "\n" not in str(caught.value) and "rename the directory" in str(caught.value)


def test_ipv6_hosts_stay_allowed() -> None:
    assert ssh.parse("ssh://u@[::1]:22/srv/www").path == "/srv/www/"
    assert rsyncd.parse("rsync://[::1]/www/sub").subdir == "sub"


def test_a_killed_spawners_secret_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """SIGKILL leaves no hook to run: the daemon goes by its parent-death signal, its
    directory (with the secret) stays until the user's next spawner starts."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    other = tmp_path / "trigsync-rsyncd-live"  # a live spawner's: its pid is ours
    other.mkdir()
    (other / "pid").write_text(str(os.getpid()))
    with spawner(env=env) as first:
        assert first.daemon_port
        first.proc.kill()
        first.proc.wait(5)
    left = [p for p in tmp_path.glob("trigsync-rsyncd-*") if p != other]
    assert len(left) == 1 and (left[0] / "secrets").exists()
    wait_for(lambda: not rsync_daemons_in(tmp_path), timeout=5, what="the daemon to end")
    with spawner(env=env) as second:
        assert second.daemon_port
        assert not left[0].exists(), "the killed spawner's secret is still there"
        assert other.exists(), "a live spawner's directory was removed"
