"""Self-tests for StallProxy: real rsync to the daemon fixture through it, no trigsync code."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemon
from tests.support.stallproxy import StallProxy
from tests.support.trees import assert_trees_equal
from tests.support.workload import make_tree

pytestmark = pytest.mark.timeout(60)

RSYNC_TIMEOUT = 2


def push(
    daemon: RsyncDaemon, proxy: StallProxy, src: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """One ``rsync -a`` of ``src`` to the daemon's module through the proxy, and its seconds."""
    url = f"rsync://{daemon.user}@{proxy.host}:{proxy.port}/{daemon.module}/"
    argv = [
        "rsync",
        "-a",
        f"--timeout={RSYNC_TIMEOUT}",
        f"--contimeout={RSYNC_TIMEOUT}",
        f"--password-file={daemon.password_file}",
        *extra,
        f"{src}/",
        url,
    ]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, timeout=30, check=False)  # noqa: S603
    return result, time.monotonic() - started


def test_healthy_proxy_forwards_a_whole_tree(rsync_daemon: RsyncDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, dirs=4, files_per_dir=5, size=(1000, 20_000), seed=1)
    with StallProxy(rsync_daemon.port) as proxy:
        result, _ = push(rsync_daemon, proxy, src)
        assert result.returncode == 0, result.stderr
        assert_trees_equal(src, rsync_daemon.module_path)
        assert proxy.accepted == 1
        # The file data went up through the proxy; greetings and checksums came down.
        payload = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        assert proxy.bytes_up > payload
        assert proxy.bytes_down > 0
        wait_for(lambda: proxy.open_connections == 0, timeout=5, what="the connection to close")


def test_stalled_proxy_makes_rsync_time_out_then_heals(
    rsync_daemon: RsyncDaemon, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, dirs=2, files_per_dir=3, seed=2)
    with StallProxy(rsync_daemon.port) as proxy:
        proxy.stall()
        result, seconds = push(rsync_daemon, proxy, src)
        assert result.returncode in (30, 12), result.stderr
        assert seconds < 5.0, f"rsync took {seconds:.1f}s to notice the stalled peer"
        assert proxy.accepted == 1, "a stalled proxy must still accept the connection"
        assert (proxy.bytes_up, proxy.bytes_down) == (0, 0)
        assert list(rsync_daemon.module_path.iterdir()) == []

        proxy.heal()
        result, _ = push(rsync_daemon, proxy, src)
        assert result.returncode == 0, result.stderr
        assert_trees_equal(src, rsync_daemon.module_path)


def test_stall_mid_transfer_stops_the_bytes(rsync_daemon: RsyncDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(200 << 20))
    url = f"rsync://{rsync_daemon.user}@127.0.0.1:{{port}}/{rsync_daemon.module}/"
    with StallProxy(rsync_daemon.port) as proxy:
        argv = [
            "rsync",
            "-a",
            "--bwlimit=20m",  # slow enough that the stall lands mid-file
            f"--timeout={RSYNC_TIMEOUT}",
            f"--password-file={rsync_daemon.password_file}",
            f"{src}/",
            url.format(port=proxy.port),
        ]
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE)  # noqa: S603
        try:
            wait_for(lambda: proxy.bytes_up > 1 << 20, timeout=10, what="the transfer to start")
            proxy.stall()
            stalled_at = time.monotonic()
            time.sleep(0.2)  # a pump may finish the chunk it was writing
            frozen = proxy.bytes_up
            code = proc.wait(timeout=10)
            seconds = time.monotonic() - stalled_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            assert proc.stderr is not None
            stderr = proc.stderr.read()
            proc.stderr.close()
        assert code in (30, 12), stderr
        assert seconds < 5.0, f"rsync took {seconds:.1f}s to notice the stall"
        assert proxy.bytes_up == frozen, "bytes kept flowing through a stalled proxy"
        landed = rsync_daemon.module_path / "big"
        assert not landed.exists() or landed.stat().st_size < (200 << 20)


def test_drop_all_closes_live_connections(rsync_daemon: RsyncDaemon) -> None:
    with StallProxy(rsync_daemon.port) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
            assert sock.recv(64).startswith(b"@RSYNCD:")
            wait_for(lambda: proxy.open_connections == 1, timeout=5, what="the connection")
            proxy.drop_all()
            sock.settimeout(5)
            try:
                rest = sock.recv(64)
            except ConnectionResetError:
                rest = b""
            assert rest == b"", "a dropped connection must read EOF"
        assert proxy.open_connections == 0


def test_close_refuses_new_connections(rsync_daemon: RsyncDaemon) -> None:
    proxy = StallProxy(rsync_daemon.port).start()
    port = proxy.port
    proxy.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
