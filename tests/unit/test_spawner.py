"""The ssh fast path's spawner, run by the local python3 on real loopback sockets.

It is what other users of the receiver can reach (the port is open to all of them): a
connection without the secret must cost it a socket for a bounded time and nothing more,
and must not keep a run out.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.proc import children_of, wait_for
from trigsync.targets.spawner import HEADER_ROOM, HEADER_TIMEOUT, SPAWNER


@dataclass
class Spawner:
    proc: subprocess.Popen[bytes]
    port: int
    key: bytes
    daemon_port: int  # its private rsync daemon's, 0 if it has none

    def daemon_pid(self) -> int | None:
        """The private daemon's pid: the spawner's child that listens on daemon_port."""
        for pid in self.children(daemon=True):
            if f"--port={self.daemon_port}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        return None

    def connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def children(self, *, daemon: bool = False) -> list[int]:
        """The spawner's children: those it forked for commands, or its daemon."""
        found = []
        for pid in children_of(self.proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if (b"\0--daemon\0" in cmdline) == daemon:
                found.append(pid)
        return found


@contextmanager
def spawner(
    timeout: float = HEADER_TIMEOUT,
    room: int = HEADER_ROOM,
    user: str | None = None,
    rsync: str = "rsync",
    env: dict[str, str] | None = None,
) -> Iterator[Spawner]:
    key = secrets.token_hex(32).encode()
    argv = ["python3", "-c", SPAWNER, str(timeout), str(room), rsync]
    pipe = subprocess.PIPE
    proc = subprocess.Popen(argv, stdin=pipe, stdout=pipe, user=user, cwd="/", env=env)  # noqa: S603
    assert proc.stdin and proc.stdout
    try:
        proc.stdin.write(key + b"\n")
        proc.stdin.flush()
        port, daemon, *_ = proc.stdout.readline().split()
        yield Spawner(proc, int(port), key, int(daemon))
        if proc.returncode is None:  # the test did not end it
            proc.stdin.close()  # the session ends: the spawner exits
            assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()


@contextmanager
def idle_connections(sp: Spawner, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that send nothing, closed at the end."""
    conns: list[socket.socket] = []
    try:
        conns.extend(sp.connect() for _ in range(count))
        yield conns
    finally:
        for conn in conns:
            conn.close()


def assert_serves_alone(sp: Spawner) -> None:
    """A spawner without its daemon still runs a command, and exits with its session."""
    with sp.connect() as conn:
        conn.sendall(sp.key + b"\0echo served\0")
        conn.shutdown(socket.SHUT_WR)
        assert read_all(conn) == b"served\n"
    assert sp.proc.stdin is not None
    sp.proc.stdin.close()
    assert sp.proc.wait(5) == 0


def read_all(conn: socket.socket) -> bytes:
    """What the peer sends until it closes; b"" for a reset (closed with our bytes unread)."""
    out = b""
    try:
        while data := conn.recv(65536):
            out += data
    except ConnectionResetError:
        pass
    return out


def test_a_good_header_runs_the_command_with_the_stream_that_follows() -> None:
    with spawner() as sp, sp.connect() as conn:
        # The header comes in pieces, the stream right behind it: no byte of it is lost
        # to the header's reading, and the command's stdin and stdout block as usual.
        cmd = b"python3 -c 'import os; print(os.get_blocking(0), os.get_blocking(1))'; cat"
        for piece in (sp.key[:7], sp.key[7:] + b"\0" + cmd[:5], cmd[5:] + b"\0stream"):
            conn.sendall(piece)
            time.sleep(0.01)  # separate segments
        conn.shutdown(socket.SHUT_WR)
        assert read_all(conn) == b"True True\nstream"
        wait_for(lambda: not sp.children(), timeout=5, what="the child to be reaped")


def test_a_wrong_secret_is_closed_and_forks_nothing() -> None:
    with spawner() as sp, idle_connections(sp, 3), sp.connect() as wrong:
        wrong.sendall(secrets.token_hex(32).encode() + b"\0touch /nonexistent/x\0")
        started = time.monotonic()
        assert read_all(wrong) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT / 2, "closed only at the deadline"
        # The idle ones came first, and the wrong one was read: none of them has a child.
        assert sp.children() == []


def test_a_header_slower_than_the_deadline_is_dropped() -> None:
    with spawner(timeout=0.5) as sp, sp.connect() as slow:
        started = time.monotonic()
        slow.settimeout(0.05)
        closed = False
        while not closed and time.monotonic() - started < 3:
            try:
                slow.sendall(b"x")  # a byte every 50 ms: no single wait is long
                closed = slow.recv(1) == b""
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        took = time.monotonic() - started
        assert closed, "a header dribbled for 3 s is still awaited"
        assert 0.4 < took < 2, f"dropped after {took:.2f} s, not at the 0.5 s deadline"
        assert sp.children() == []


def test_many_idle_connections_do_not_delay_a_good_one() -> None:
    with spawner() as sp, idle_connections(sp, HEADER_ROOM * 2 + 50):
        took = [run_echo(sp) for _ in range(2)]  # the first waits for the idle ones' accept
        # A few ms on an idle machine; the bound allows for a loaded one.
        assert took[1] < 0.5, f"the run started {took[1]:.2f} s after its header"


def run_echo(sp: Spawner) -> float:
    """Seconds from a run's header to its output."""
    with sp.connect() as good:
        started = time.monotonic()
        good.sendall(sp.key + b"\0echo ran\0")
        assert read_all(good) == b"ran\n"
        return time.monotonic() - started


class Churner(threading.Thread):
    """Another user of the receiver: keeps ``count`` connections open to the port, and
    opens a new one for each that the spawner closes."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.held: list[socket.socket] = []
        self.opened = 0
        self.done = threading.Event()

    def run(self) -> None:
        import select

        while not self.done.is_set():
            while len(self.held) < self.count:
                self.held.append(socket.create_connection(("127.0.0.1", self.port)))
                self.opened += 1
            closed, _, _ = select.select(self.held, [], [], 0.005)
            for conn in closed:
                self.held.remove(conn)
                conn.close()

    def stop(self) -> None:
        self.done.set()
        self.join(5)
        for conn in self.held:
            conn.close()


# Run as the spawner's user (sshd's end of a forwarded connection is that user's): it
# connects, says so, and sends its header once told to (a line on stdin: the secret).
SLOW_CLIENT = """
import socket, sys
conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
conn.sendall(sys.stdin.buffer.readline().strip() + b"\\0echo ran\\0")
conn.shutdown(socket.SHUT_WR)
sys.stdout.buffer.write(conn.recv(100))
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="runs the spawner as another user")
def test_another_users_churn_does_not_push_out_a_header_that_takes_its_time() -> None:
    """A header that crosses a slow ssh connection arrives long after its connection:
    meanwhile another user opens more connections than the room holds."""
    with spawner(user="nobody") as sp:
        churner = Churner(sp.port, HEADER_ROOM + 50)
        churner.start()
        pipe = subprocess.PIPE
        argv = ["python3", "-c", SLOW_CLIENT, str(sp.port)]
        with subprocess.Popen(argv, stdin=pipe, stdout=pipe, user="nobody", cwd="/") as client:  # noqa: S603
            assert client.stdin and client.stdout
            try:
                assert client.stdout.readline() == b"connected\n"
                before = churner.opened
                wait_for(
                    lambda: churner.opened > before + HEADER_ROOM * 2,
                    timeout=10,
                    what="twice the room's worth of other connections",
                )
            finally:
                churner.stop()
            client.stdin.write(sp.key + b"\n")
            client.stdin.close()
            assert client.stdout.read() == b"ran\n"
            assert client.wait(10) == 0


def push(sp: Spawner, src: Path, dest: str, password: str) -> subprocess.CompletedProcess[bytes]:
    url = f"rsync://trigsync@127.0.0.1:{sp.daemon_port}/root{dest}"
    env = {**os.environ, "RSYNC_PASSWORD": password}
    argv = ["rsync", "-a", "--numeric-ids", f"{src}/", url]
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)  # noqa: S603


@pytest.mark.skipif(os.geteuid() != 0, reason="the daemon's ids as root need root")
def test_the_private_daemon_as_root_keeps_owners_and_symlinks(tmp_path: Path) -> None:
    """rsyncd runs a root daemon's modules as nobody unless told: the spawner's says root."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "owned").write_bytes(b"x")
    os.chown(src / "owned", 4321, 4322)
    (src / "abs").symlink_to("/etc/passwd")
    (src / "up").symlink_to("../../elsewhere")
    with spawner() as sp:
        assert sp.daemon_port
        done = push(sp, src, f"{dst}/", sp.key.decode())
        assert done.returncode == 0, done.stderr
        st = (dst / "owned").stat()
        assert (st.st_uid, st.st_gid) == (4321, 4322)
        assert os.readlink(dst / "abs") == "/etc/passwd"  # neither munged nor sanitized
        assert os.readlink(dst / "up") == "../../elsewhere"
        refused = push(sp, src, f"{tmp_path}/other/", "not the secret")
        assert refused.returncode == 5 and not (tmp_path / "other").exists()


def test_the_spawner_ends_with_its_daemon_and_takes_it_along() -> None:
    with spawner() as sp:
        pid = sp.daemon_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert sp.proc.wait(5) == 3  # the channel is then set up again, with a new daemon
    with spawner() as sp:
        pid = sp.daemon_pid()
        assert sp.proc.stdin is not None
        sp.proc.stdin.close()  # the session ends
        assert sp.proc.wait(5) == 0
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=5, what="the daemon to end")


def test_an_rsync_that_cannot_be_a_daemon_leaves_the_spawner_serving(tmp_path: Path) -> None:
    key = secrets.token_hex(32).encode()
    argv = ["python3", "-c", SPAWNER, str(HEADER_TIMEOUT), str(HEADER_ROOM), "false"]
    pipe = subprocess.PIPE
    with subprocess.Popen(argv, stdin=pipe, stdout=pipe, cwd="/") as proc:  # noqa: S603
        assert proc.stdin and proc.stdout
        proc.stdin.write(key + b"\n")
        proc.stdin.flush()
        port, daemon, why = proc.stdout.readline().decode().split(" ", 2)
        assert daemon == "0" and why.startswith("rsync --daemon exited 1"), why
        assert_serves_alone(Spawner(proc, int(port), key, 0))


def test_a_burst_of_connections_is_taken_at_once_and_silent_ones_end() -> None:
    """Another user of the receiver can open them; each holds a process (as the spawner's
    user) until the daemon's timeout (the header's), and a run still gets in meanwhile."""
    with spawner(timeout=3) as sp, tempfile.TemporaryDirectory() as tmp:
        daemon = sp.daemon_pid()
        assert daemon is not None
        idle = [socket.create_connection(("127.0.0.1", sp.daemon_port)) for _ in range(20)]
        try:
            # All at once: rsync's listen backlog of 5 would hold 15 back for a SYN's retry.
            wait_for(lambda: len(children_of(daemon)) >= 20, timeout=2, what="20 connections")
            src = Path(tmp) / "src"
            src.mkdir()
            (src / "f").write_bytes(b"through")
            done = push(sp, src, f"{tmp}/dst/", sp.key.decode())
            assert done.returncode == 0, done.stderr
            assert (Path(tmp) / "dst" / "f").read_bytes() == b"through"
            wait_for(lambda: not children_of(daemon), timeout=8, what="the idle ones to end")
        finally:
            for conn in idle:
                conn.close()
