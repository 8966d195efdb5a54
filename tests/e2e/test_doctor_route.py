"""doctor's route fix for a stock daemon on another host: ``quickack 1`` on this host's route.

The receiver runs in a network namespace of its own, behind a veth pair, so its TCP stack
is not the sender's: what the route on this side changes is all this side can change.
Measured so (rsync 3.5.0, 2 KiB): a fresh run to a stock daemon takes ~52 ms; with the
sender's route at quickack 1, ~10 ms (the receiver's route alone: still 52).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import wait_for_greeting
from tests.support.proc import Proc
from trigsync.loopback import rsyncd_conf, write_secrets

pytestmark = pytest.mark.serial  # a 30 ms threshold: alone on the cores

NS = f"tsdoc{os.getpid() % 100000}"
HERE, THERE = "10.231.7.1", "10.231.7.2"
PORT = 873
FIX = re.compile(r"run '(ip route add [^']+)'")


def _ip(*args: str, ns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)  # noqa: S603


@pytest.fixture
def receiver_ns() -> Iterator[str]:
    """A network namespace reached over a veth pair; removed (and the pair with it) after."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip)")
    here = f"{NS}a"
    try:
        _ip("netns", "add", NS)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"no network namespaces here: {exc.stderr.decode().strip()}")
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", f"{NS}b")
        _ip("link", "set", f"{NS}b", "netns", NS)
        _ip("addr", "add", f"{HERE}/24", "dev", here)
        _ip("link", "set", here, "up")
        _ip("addr", "add", f"{THERE}/24", "dev", f"{NS}b", ns=NS)
        _ip("link", "set", f"{NS}b", "up", ns=NS)
        _ip("link", "set", "lo", "up", ns=NS)
        yield NS
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, check=False)  # noqa: S603
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)  # noqa: S603


def test_a_stock_daemon_on_another_host_gets_the_route_fix_and_it_works(
    receiver_ns: str, tmp_path: Path
) -> None:
    base = tmp_path / "rsyncd"
    (base / "module").mkdir(parents=True)
    conf = rsyncd_conf(
        module="www",
        module_path=base / "module",
        secrets=base / "secrets",
        log=base / "log",
        lock=base / "lock",
        user="tsync",
        use_chroot=True,
    )  # stock: no socket options
    (base / "rsyncd.conf").write_text(conf)
    password = tmp_path / "client.pass"
    write_secrets(base / "secrets", password, "tsync", "pw-for-doctor")
    argv = ["ip", "netns", "exec", receiver_ns, "rsync", "--daemon", "--no-detach"]
    argv += [f"--config={base / 'rsyncd.conf'}", f"--port={PORT}", f"--address={THERE}"]
    daemon = Proc(argv, log_dir=base, name="rsyncd").start()
    try:
        dead = wait_for_greeting(
            PORT, b"@RSYNCD:", alive=lambda: None if daemon.running else "exited",
            timeout=10, host=THERE,
        )  # fmt: skip
        assert dead is None, dead
        source = tmp_path / "src"
        source.mkdir()
        (source / "index.html").write_text("hello\n")
        doctor = [sys.executable, "-m", "trigsync", "doctor", str(source)]
        doctor += [f"rsync://tsync@{THERE}:{PORT}/www/", "--password-file", str(password)]
        doctor += ["--state-dir", str(tmp_path / "state")]

        def run_doctor() -> tuple[int, str]:
            done = subprocess.run(doctor, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
            return done.returncode, done.stdout + done.stderr

        code, out = run_doctor()
        assert code == 1, out
        found = FIX.search(out)
        assert found, out
        assert found[1] == f"ip route add {THERE}/32 dev {NS}a src {HERE} quickack 1", out
        subprocess.run(found[1].split(), check=True)  # noqa: S603 - the words doctor printed
        code, out = run_doctor()
        assert code == 0, out
        assert "a small file arrives in" in out, out
        assert list((base / "module").iterdir()) == []
    finally:
        daemon.stop()
