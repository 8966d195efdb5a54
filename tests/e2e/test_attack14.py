"""Hostile tests of issue 14 (trigsync as a service), run as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from tests.e2e.conftest import local_replica
from tests.e2e.harness import ENV, Replica, Trigsync, write_config
from tests.e2e.harness import run_cli as trigsync
from tests.support.proc import ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from trigsync import control
from trigsync.errors import ControlError


def lock_pid(state: Path) -> int | None:
    """The pid of the daemon holding ``state`` (written into its lock file)."""
    with contextlib.suppress(OSError, ValueError):
        return int((state / "lock").read_text().strip())
    return None


@contextlib.contextmanager
def reaped(state: Path) -> Iterator[None]:
    """Kill whatever daemon a -d start left holding ``state``."""
    try:
        yield
    finally:
        pid = lock_pid(state)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_daemon_with_a_pid_file_in_a_missing_directory_fails_fast(
    tmp_path: Path, source: Path
) -> None:
    """-d waits for the child's 'ready'; writing the pid file raised inside the sidecar,
    so the parent waited forever and the child ran on without heartbeat or watchdog."""
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[local_replica(tmp_path)], state_dir=state
    )
    pid_file = tmp_path / "missing" / "trigsync.pid"
    with reaped(state):
        try:
            result = trigsync(
                "run", "--config", str(config), "-d", "--pid-file", str(pid_file), timeout=15
            )
        except subprocess.TimeoutExpired:
            pytest.fail("trigsync -d --pid-file MISSING/DIR/pid never returned")
        assert result.returncode == 3, result
        assert str(pid_file) in result.stderr, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr  # one line
        time.sleep(0.5)
        assert lock_pid(state) is None or not Path(f"/proc/{lock_pid(state)}").exists()


def test_a_config_that_is_not_utf8_is_one_line_at_start_and_refused_on_reload(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """tomllib decodes the file itself: its UnicodeDecodeError escaped config.load, a
    traceback at start and an unretrieved task exception (no refusal line) on SIGHUP."""
    replica = local_replica(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"# caf\xe9\nstate_dir = 'x'\n")
    result = trigsync("run", "--config", str(bad))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "UTF-8" in result.stderr, result.stderr

    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[replica], state_dir=tmp_path / "state"
    )
    ts = Trigsync(procs, config, "-v").start()
    assert ts.proc is not None
    good = config.read_bytes()
    config.write_bytes(b"# caf\xe9\n" + good)
    ts.proc.signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded" in ts.log(), 10, what="the reload refused")
    assert "Traceback" not in ts.log(), ts.log()
    (source / "after.txt").write_text("still replicating\n")
    wait_trees_equal(source, replica.path)
    assert ts.stop() == 0


@pytest.mark.parametrize("name", ["n\nExecStartPre=/bin/touch /tmp/pwned\n", "bad\udcff"])
def test_service_install_refuses_a_config_path_a_unit_cannot_hold(
    tmp_path: Path, source: Path, name: str
) -> None:
    """A newline in the config's path ended Description= and ExecStart= and injected an
    ExecStartPre= line into [Service]; bytes that are not UTF-8 were a traceback."""
    where = Path(os.fsencode(tmp_path).decode() + "/" + name)  # surrogateescape'd bytes
    os.makedirs(os.fsencode(where))
    config = Path(os.fsdecode(os.fsencode(where) + b"/t.toml"))
    write_config(
        config, source=source, replicas=[local_replica(tmp_path)], state_dir=tmp_path / "s"
    )
    units = tmp_path / "units"
    result = trigsync("service", "install", "--config", str(config), "--unit-dir", str(units))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "systemd unit cannot hold" in result.stderr, result.stderr
    assert not (units / "trigsync.service").exists()


def test_service_install_escapes_specifiers_in_the_description(
    tmp_path: Path, source: Path
) -> None:
    """systemd expands %-specifiers in Description= too: '%h' became the home directory."""
    where = tmp_path / "p%h"
    where.mkdir()
    config = write_config(
        where / "t.toml",
        source=source,
        replicas=[local_replica(tmp_path)],
        state_dir=tmp_path / "s",
    )
    units = tmp_path / "units"
    result = trigsync("service", "install", "--config", str(config), "--unit-dir", str(units))
    assert result.returncode == 0, result
    text = (units / "trigsync.service").read_text()
    assert f"({str(config).replace('%', '%%')})" in text, text
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(  # noqa: S603 - argv list, no shell
            ["systemd-analyze", "verify", str(units / "trigsync.service")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0, verify.stderr


@pytest.fixture
def slow_loris() -> Iterator[str]:
    """An HTTP server that answers one header byte every 0.2 s, forever: no socket
    timeout ever fires on the client."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    closing = threading.Event()
    clients: list[socket.socket] = []

    def trickle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not closing.wait(0.2):
                conn.sendall(b"a")

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                clients.append(conn)
                threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    closing.set()
    server.close()
    for conn in clients:
        with contextlib.suppress(OSError):
            conn.close()


def test_a_slow_webhook_never_blocks_replication_or_the_stop(
    procs: ProcGroup, tmp_path: Path, source: Path, slow_loris: str
) -> None:
    """Each webhook POST ran in asyncio's default executor (6 threads on 2 cores); the
    time limit abandons the await, not the thread, so a server that trickles keeps every
    thread busy for good. The journal and the full sync's scan use the same executor:
    past 6 runs, sync-now never ran and SIGTERM hung in the journal's final save."""
    replica = local_replica(tmp_path)
    config = write_config(
        tmp_path / "t.toml",
        source=source,
        replicas=[replica],
        state_dir=tmp_path / "state",
        initial_sync=False,
        extra={"webhook": slow_loris, "hook_timeout": 0.5},
    )
    ts = Trigsync(procs, config, "-v").start()
    assert ts.proc is not None
    for i in range(10):  # one run and one webhook POST each
        (source / f"f{i}").write_text(f"{i}\n")
        wait_trees_equal(source, replica.path)
        time.sleep(0.6)
    wait_for(lambda: ts.log().count("webhook") >= 8, 20, what="8 webhook time-outs")
    (replica.path / "f0").unlink()  # only a reconciling sync puts it back
    state = str(tmp_path / "state")
    assert trigsync("sync-now", "--state-dir", state).returncode == 0
    wait_trees_equal(source, replica.path, timeout=10)
    began = time.monotonic()
    ts.proc.signal(signal.SIGTERM)
    try:
        code = ts.proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"SIGTERM: no exit within 15 s; log:\n{ts.log()[-2000:]}")
    assert code == 0, ts.log()
    assert time.monotonic() - began < 10


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_hook_that_floods_stderr_does_not_grow_the_daemon(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """A hook's stderr was read whole into memory (communicate) to log its last line:
    one that writes without end grew the daemon by 1.5 GB in 3 s. Then, at the time
    limit, proc.wait() never returned (Python 3.11 waits for the child's pipes, and the
    cancelled reader had paused stderr): that target's hooks were wedged for good."""
    replica = local_replica(tmp_path)
    config = write_config(
        tmp_path / "t.toml",
        source=source,
        replicas=[replica],
        state_dir=tmp_path / "state",
        initial_sync=False,
        extra={"on_success": ["sh", "-c", "exec yes flood >&2"], "hook_timeout": 1},
    )
    ts = Trigsync(procs, config).start()
    assert ts.proc is not None
    before = peak_rss_mb(ts.proc.pid)
    (source / "a").write_text("a\n")
    wait_trees_equal(source, replica.path)
    wait_for(lambda: "killed after its time limit" in ts.log(), 15, what="the hook killed")
    grown = peak_rss_mb(ts.proc.pid) - before
    assert grown < 50, f"the daemon grew by {grown:.0f} MB reading a hook's stderr"
    (source / "b").write_text("b\n")
    wait_trees_equal(source, replica.path)
    wait_for(lambda: ts.log().count("killed after its time limit") == 2, 15, what="hook 2")
    assert ts.stop() == 0


def test_the_canary_never_overwrites_a_file_of_the_same_name_in_the_source(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """The probe was written with O_TRUNC and unlinked after: a file already in the
    source under the canary's name (canary_name is configurable) was destroyed, in the
    source and, through replication, on every target."""
    replica = local_replica(tmp_path)
    (source / "index.html").write_text("the site's front page\n")
    config = write_config(
        tmp_path / "t.toml",
        source=source,
        replicas=[replica],
        state_dir=tmp_path / "state",
        top={"canary_name": "index.html", "canary_timeout": 5},
    )
    Trigsync(procs, config).start()
    wait_trees_equal(source, replica.path)
    result = trigsync("check", "--canary", "--state-dir", str(tmp_path / "state"))
    assert (source / "index.html").read_text() == "the site's front page\n"
    assert result.returncode == 2, result
    assert "index.html" in result.stdout, result.stdout
    time.sleep(0.5)
    wait_trees_equal(source, replica.path)


def test_two_daemons_on_one_source_run_their_canaries_at_once(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """Two daemons (two state directories, two targets) on one source use the same
    probe name: each overwrote the other's probe and removed it when done, so at least
    one canary failed with 'the target holds other bytes' or 'it never arrived'."""
    states = []
    for name in ("one", "two"):
        replica = local_replica(tmp_path, f"replica-{name}")
        state = tmp_path / f"state-{name}"
        config = write_config(
            tmp_path / f"{name}.toml",
            source=source,
            replicas=[replica],
            state_dir=state,
            top={"canary_timeout": 10},
        )
        ts = Trigsync(procs, config)
        ts.start()
        states.append(state)
    checks = [
        subprocess.Popen(  # noqa: S603 - argv list, no shell
            [sys.executable, "-m", "trigsync", "check", "--canary", "--state-dir", str(s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
        for s in states
    ]
    outputs = [p.communicate(timeout=30)[0] for p in checks]
    assert [p.returncode for p in checks] == [0, 0], outputs
    assert not [p for p in source.iterdir() if p.name.startswith(".trigsync-canary")]


def sighup(ts: Trigsync) -> None:
    assert ts.proc is not None
    ts.proc.signal(signal.SIGHUP)


def reloads(ts: Trigsync) -> int:
    return ts.log().count("SIGHUP: config reloaded")


def test_many_sighups_that_change_a_paused_target_lose_nothing(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """Twenty reloads in a row, each replacing the worker of a paused target (its
    rsync_args change) and each changing the excludes, while files keep coming: the
    pause lasts across all of them, and after resume the replica equals the source."""
    replica, state, throttle = throttled(tmp_path, source)

    def configure(i: int) -> None:
        throttle(1000 + i, excludes=[f"*.tmp{i}"])

    configure(0)
    ts = Trigsync(procs, tmp_path / "t.toml", "-v").start()
    wait_trees_equal(source, replica.path)
    assert trigsync("pause", "--state-dir", str(state)).returncode == 0
    for i in range(1, 21):
        (source / f"f{i}").write_text(f"{i}\n")
        configure(i)
        sighup(ts)
        time.sleep(0.05)
    wait_for(lambda: reloads(ts) >= 1, 10, what="the reloads")
    time.sleep(2)
    assert not (replica.path / "f20").exists(), "a paused target was sent to"
    assert "config not reloaded" not in ts.log(), ts.log()[-3000:]
    assert trigsync("resume", "--state-dir", str(state)).returncode == 0
    wait_trees_equal(source, replica.path, timeout=20)
    assert ts.stop() == 0


def test_a_reload_whose_new_watcher_cannot_be_placed_is_refused_whole(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changed excludes place a second watcher beside the first (twice the watches for a
    moment), but only in _apply, after everything else had been switched: a watch limit
    there escaped the reload (an unretrieved task exception, no refusal line), left the
    target's new worker paused for good and fed every later change to it. Replication
    stopped while the daemon looked alive. In-process: the kernel limit is global here."""
    from trigsync import config as cfgmod
    from trigsync import watcher as watchermod
    from trigsync.engine import Engine
    from trigsync.errors import WatchLimitError
    from trigsync.reload import Reloader

    replica = local_replica(tmp_path)
    path = tmp_path / "t.toml"
    write_config(path, source=source, replicas=[replica], state_dir=tmp_path / "state")
    engine = Engine(cfgmod.load(path))
    real_start = watchermod.Watcher.start
    calls = []

    def start(self: watchermod.Watcher) -> None:
        if self._fd < 0:  # batches() calls start() again: only placements count
            calls.append(self)
        if len(calls) == 2 and self._fd < 0:  # the reload's watcher: the kernel's limit is reached
            raise WatchLimitError("inotify watch limit reached (fs.inotify.max_user_watches)")
        real_start(self)

    monkeypatch.setattr(watchermod.Watcher, "start", start)

    async def scenario() -> str | None:
        stop = asyncio.Event()
        running = asyncio.create_task(engine.run(stop))
        await asyncio.wait_for(engine.ready.wait(), 10)
        write_config(
            path,
            source=source,
            replicas=[replica],
            state_dir=tmp_path / "state",
            excludes=["*.tmp"],
        )
        try:
            outcome = await Reloader(engine, lambda: cfgmod.load(path)).reload()
        finally:
            (source / "after-reload.txt").write_text("must still arrive\n")
            await asyncio.to_thread(wait_trees_equal, source, replica.path, 10)
            stop.set()
            await asyncio.wait_for(running, 20)
        return outcome

    assert asyncio.run(scenario()) is None  # refused: the old config runs on


def test_a_reader_that_goes_away_is_no_traceback(tmp_path: Path) -> None:
    """`trigsync check ... | head -c0` (or status | head -1): print() met EPIPE and the
    command died with a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        result = subprocess.run(  # noqa: S603 - argv list, no shell
            [sys.executable, "-m", "trigsync", "check", "--state-dir", str(tmp_path / "none")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (1, 2), result


def answers(state: Path) -> bool:
    """Whether the daemon on ``state`` answers a status request on its control socket."""
    try:
        control.request(control.socket_path(state), "status")
    except ControlError:
        return False
    return True


def raw_request(sock_path: Path, body: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(str(sock_path))
        sock.sendall(body)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    data: dict[str, object] = json.loads(reply)
    return data


def test_malformed_control_requests_are_refused_not_taken_for_all(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """{"target": {}} (or [], 0, false) paused every target: select() read any falsy
    target as 'all'. A canary_timeout of 1e999 (inf) or true was accepted."""
    replica = local_replica(tmp_path)
    state = tmp_path / "state"
    config = write_config(tmp_path / "t.toml", source=source, replicas=[replica], state_dir=state)
    Trigsync(procs, config).start()
    wait_for(lambda: answers(state), 10, what="the control socket")  # opens after "watching"
    sock = state / "control.sock"
    for target in (b"{}", b"[]", b"0", b"false"):
        reply = raw_request(sock, b'{"command": "pause", "target": ' + target + b"}\n")
        assert reply["ok"] is False, (target, reply)
    for timeout in (b"1e999", b"true"):
        reply = raw_request(sock, b'{"command": "canary", "canary_timeout": ' + timeout + b"}\n")
        assert reply["ok"] is False, (timeout, reply)
    status = raw_request(sock, b'{"command": "status"}\n')
    targets = status["status"]["syncs"][0]["targets"]  # type: ignore[index]
    assert [t["paused"] for t in targets] == [False]


def test_a_notify_socket_nobody_reads_never_stalls_the_daemon(
    procs: ProcGroup, tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sd_notify was a blocking sendto() from the event loop: once the listener's queue
    was full (net.unix.max_dgram_qlen, 10 datagrams; a busy PID 1, a supervisor that
    sets NOTIFY_SOCKET and never reads) the whole daemon froze: no replication, no
    control socket, no exit on SIGTERM."""
    replica = local_replica(tmp_path)
    notify = tmp_path / "notify"
    state = tmp_path / "state"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))  # and never read
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
        monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
        config = write_config(
            tmp_path / "t.toml", source=source, replicas=[replica], state_dir=state
        )
        ts = Trigsync(procs, config).start()
        assert ts.proc is not None
        time.sleep(2)  # 20 pings: the queue is full
        (source / "later.txt").write_text("sent while nobody reads the notify socket\n")
        wait_trees_equal(source, replica.path, timeout=10)
        result = trigsync("status", "--state-dir", str(state), timeout=30)
        assert result.returncode == 0, result.stderr
        ts.proc.signal(signal.SIGTERM)
        try:
            assert ts.proc.wait(15) == 0
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM: no exit within 15 s")


def test_sighup_keeps_rsync_password_for_the_daemon_targets_that_use_it(
    procs: ProcGroup,
    tmp_path: Path,
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RSYNC_PASSWORD leaves trigsync's environment at start, but a reload parsed the
    config again from that environment: a daemon target whose worker is rebuilt (its
    options or the sync's excludes changed) or added lost its password, and its check
    failed ('has no password'): such a reload was always refused."""
    daemon = rsync_daemon_factory(use_chroot=True)
    monkeypatch.setenv("RSYNC_PASSWORD", daemon.password)
    remote = Replica("rsyncd", daemon.url, daemon.module_path)  # no password_file
    added = local_replica(tmp_path, "added")
    state = tmp_path / "state"
    path = tmp_path / "t.toml"
    write_config(path, source=source, replicas=[remote], state_dir=state)
    ts = Trigsync(procs, path).start()
    (source / "a.txt").write_text("a\n")
    wait_trees_equal(source, daemon.module_path)
    write_config(path, source=source, replicas=[remote, added], state_dir=state, excludes=["*.o"])
    sighup(ts)
    wait_for(lambda: "SIGHUP: config" in ts.log(), 10, what="the reload")
    assert "config not reloaded" not in ts.log(), ts.log()
    (source / "b.txt").write_text("b\n")
    wait_trees_equal(source, added.path)
    wait_trees_equal(source, daemon.module_path)
    assert ts.stop() == 0


def test_a_failing_webhook_never_logs_the_token_in_its_path(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """Slack/Discord/Teams webhook URLs are credentials: the token is the path. A failed
    post logged the URL with its path (only the user, password and query were hidden)."""
    replica = local_replica(tmp_path)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    port = dead.getsockname()[1]
    token = "T0AAAAAAA/B0BBBBBBB/s3cr3tT0k3nXXXXXXXXXXXX"
    url = f"http://127.0.0.1:{port}/services/{token}?x=1"
    config = write_config(
        tmp_path / "t.toml",
        source=source,
        replicas=[replica],
        state_dir=tmp_path / "state",
        initial_sync=False,
        extra={"webhook": url, "hook_timeout": 2},
    )
    try:
        ts = Trigsync(procs, config, "-v").start()
        (source / "a").write_text("a\n")
        wait_trees_equal(source, replica.path)  # a dead webhook never blocks replication
        wait_for(lambda: "webhook" in ts.log() and "failed" in ts.log(), 10, what="the failure")
        assert "s3cr3t" not in ts.log(), ts.log()
        assert ts.stop() == 0
    finally:
        dead.close()


class Throttle(Protocol):
    def __call__(self, limit: int, excludes: Sequence[str] = ()) -> None: ...


def throttled(tmp_path: Path, source: Path) -> tuple[Replica, Path, Throttle]:
    """A local replica, the state dir, and a writer of t.toml with a --bwlimit (KiB/s)."""
    replica = local_replica(tmp_path)
    state = tmp_path / "state"

    def configure(limit: int, excludes: Sequence[str] = ()) -> None:
        opts: dict[str, object] = {"rsync_args": [f"--bwlimit={limit}"]}
        write_config(
            tmp_path / "t.toml",
            source=source,
            replicas=[Replica("local", replica.url, replica.path, opts)],
            state_dir=state,
            excludes=excludes,
        )

    return replica, state, configure


def test_status_during_a_reload_that_waits_for_a_long_full_sync(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """A reload that rebuilds a target's worker waits for the run in flight (here the
    initial full sync, at 1 MB/s). Meanwhile status shows only the successor, held
    still for the handover: 0 pending, lag 0.0, no progress (and, before the handover
    hold existed, 'paused'), so `check` hides the growing lag for as long as the full
    sync lasts (hours on a big tree). Cause: reload.py _change puts the successor alone
    in job.dispatchers, and status (SyncJob.status) reads job.dispatchers only; the old
    worker's in-flight run and pending set are invisible until the handover."""
    (source / "big").write_bytes(os.urandom(6_000_000))
    replica, state, configure = throttled(tmp_path, source)
    configure(1000)
    ts = Trigsync(procs, tmp_path / "t.toml").start()
    time.sleep(1)
    (source / "during.txt").write_text("changed during the full sync\n")
    configure(2000)
    sighup(ts)
    time.sleep(1.5)
    data = json.loads(trigsync("status", "--json", "--state-dir", str(state)).stdout)
    (target,) = data["syncs"][0]["targets"]
    assert not target["paused"], target  # nobody asked for a pause
    assert target["progress"] is not None or target["in_flight"] > 0, target
    assert target["lag"] > 1.0, target  # during.txt has waited 1.5 s and more
    wait_trees_equal(source, replica.path, timeout=20)
    assert ts.stop() == 0


def test_a_pause_asked_for_during_a_reload_handover_is_kept(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """`trigsync pause` while a reload waits for the old worker's run in flight reaches
    the successor (held still already), and the handover then sets the successor's
    pause to the old worker's (not paused): the user's pause was silently dropped.
    Cause: reload.py _retire, successor.pause(paused[old]) with paused taken before."""
    (source / "big").write_bytes(os.urandom(4_000_000))
    replica, state, configure = throttled(tmp_path, source)
    configure(1000)
    ts = Trigsync(procs, tmp_path / "t.toml").start()
    time.sleep(1)
    configure(2000)
    sighup(ts)
    time.sleep(0.5)
    assert trigsync("pause", "--state-dir", str(state)).returncode == 0
    wait_for(lambda: "SIGHUP: config reloaded" in ts.log(), 20, what="the handover")
    (source / "after-pause.txt").write_text("must wait for resume\n")
    time.sleep(2)
    assert not (replica.path / "after-pause.txt").exists(), "the pause was dropped"
    assert trigsync("resume", "--state-dir", str(state)).returncode == 0
    wait_trees_equal(source, replica.path, timeout=20)
    assert ts.stop() == 0


def test_a_deeply_nested_request_gets_an_error_reply(
    procs: ProcGroup, tmp_path: Path, source: Path
) -> None:
    """'[' * 60000 is under MAX_REQUEST, and json.loads raised RecursionError, which
    _reply did not catch: no reply at all, a traceback in the log."""
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[local_replica(tmp_path)], state_dir=state
    )
    ts = Trigsync(procs, config).start()
    # The control socket opens just after "watching" is logged: wait until it answers.
    wait_for(lambda: answers(state), 10, what="the control socket")
    for body in (b"[" * 60000 + b"\n", b'{"command": "status", "x": ' + b"[" * 30000 + b"\n"):
        reply = raw_request(state / "control.sock", body)
        assert reply["ok"] is False, reply
    assert "Traceback" not in ts.log(), ts.log()
