"""Self-tests: the fixtures drive real rsync, rsyncd and sshd, with no trigsync code."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.proc import ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonFactory
from tests.support.sshd import SshServer
from tests.support.trees import assert_trees_equal, diff, snapshot, wait_trees_equal
from tests.support.workload import WEIRD_NAMES, list_tree, make_tree, make_weird_tree, nul_list

pytestmark = pytest.mark.timeout(60)

RSYNC_LIST = [
    "rsync",
    "-a",
    "--files-from=-",
    "--from0",
    "--delete-missing-args",
    "--force",
    "--sockopts=TCP_NODELAY",
]


def push(
    daemon: RsyncDaemon, src: Path, names: list[bytes], *extra: str
) -> subprocess.CompletedProcess[bytes]:
    argv = [*RSYNC_LIST, *extra, f"--password-file={daemon.password_file}", f"{src}/", daemon.url]
    return subprocess.run(  # noqa: S603
        argv, input=nul_list(names), capture_output=True, timeout=30, check=False
    )


def build_source(src: Path) -> None:
    """Weird names, a random tree, symlinks (one dangling) and a mode 0600 file."""
    make_weird_tree(src)
    make_tree(src / "bulk", dirs=3, files_per_dir=3, size=(0, 2048), seed=7)
    os.symlink(b"weird dir/caf\xe9", os.path.join(os.fsencode(src), b"link"))
    os.symlink("../link", src / "bulk" / "up")  # '..' that stays inside the module
    os.symlink("nowhere", src / "dangling")
    secret = src / "secret"
    secret.write_bytes(b"private\n")
    secret.chmod(0o600)


def test_daemon_push_weird_tree_then_detect_edit(rsync_daemon: RsyncDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_source(src)

    done = push(rsync_daemon, src, list_tree(src))

    assert done.returncode == 0, done.stderr
    assert_trees_equal(src, rsync_daemon.module_path, owners=True)
    module = os.fsencode(rsync_daemon.module_path)
    assert os.readlink(os.path.join(module, b"link")) == b"weird dir/caf\xe9"  # not munged
    for name in WEIRD_NAMES:
        assert os.path.isfile(os.path.join(module, b"weird dir", name)), name
    assert (rsync_daemon.module_path / "secret").stat().st_mode & 0o777 == 0o600

    (src / "secret").write_bytes(b"changed\n")
    (src / "with space").chmod(0o640)
    (src / "new file").write_bytes(b"new\n")
    os.unlink(os.path.join(os.fsencode(src), b"new\nline"))

    lines = diff(snapshot(src), snapshot(rsync_daemon.module_path))
    assert lines[:2] == ["only in replica: b'new\\nline' (f)", "only in source: b'new file' (f)"]
    assert lines[2].startswith("content differs at b'secret': sha256 source ")
    assert lines[3:] == ["mode differs at b'with space': source 0o640, replica 0o644"]
    with pytest.raises(AssertionError, match="only in source: b'new file'"):
        assert_trees_equal(src, rsync_daemon.module_path)
    with pytest.raises(AssertionError, match=r"after 0\.1s"):
        wait_trees_equal(src, rsync_daemon.module_path, timeout=0.1)

    # -I: "secret" kept its size and may keep its mtime second, which rsync's quick check skips.
    again = push(rsync_daemon, src, [b"secret", b"with space", b"new file", b"new\nline"], "-I")

    assert again.returncode == 0, again.stderr
    assert wait_trees_equal(src, rsync_daemon.module_path, timeout=2.0) < 2.0


def test_files_from_comment_pitfall(rsync_daemon: RsyncDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_weird_tree(src)
    raw = [*RSYNC_LIST, f"--password-file={rsync_daemon.password_file}", f"{src}/"]

    bare = subprocess.run(  # noqa: S603
        [*raw, rsync_daemon.url],
        input=nul_list([b"#hash", b";semicolon"], dot_slash=False),
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert bare.returncode == 0, bare.stderr  # silently skipped as comments
    assert sorted(os.listdir(rsync_daemon.module_path)) == []
    assert push(rsync_daemon, src, [b"#hash", b";semicolon"]).returncode == 0
    assert sorted(os.listdir(rsync_daemon.module_path)) == ["#hash", ";semicolon"]


def test_quick_check_pitfall_same_size_same_second(
    rsync_daemon: RsyncDaemon, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path = src / "f"
    second = int(time.time()) * 1_000_000_000
    path.write_bytes(b"before\n")
    os.utime(path, ns=(second, second + 100))
    assert push(rsync_daemon, src, [b"f"]).returncode == 0
    path.write_bytes(b"after!\n")  # same size, same mtime second, other nanoseconds
    os.utime(path, ns=(second, second + 900_000_000))

    assert push(rsync_daemon, src, [b"f"]).returncode == 0
    assert (rsync_daemon.module_path / "f").read_bytes() == b"before\n"  # skipped
    assert push(rsync_daemon, src, [b"f"], "-I").returncode == 0
    assert (rsync_daemon.module_path / "f").read_bytes() == b"after!\n"


@pytest.mark.parametrize("use_chroot", [False, True])
def test_daemon_symlink_targets(
    rsync_daemon_factory: RsyncDaemonFactory, tmp_path: Path, use_chroot: bool
) -> None:
    daemon = rsync_daemon_factory(use_chroot=use_chroot)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    links = {"abs": "/etc/passwd", "escape": "../nowhere", "mid": "sub/../x", "sub/up": "../x"}
    for name, target in links.items():
        os.symlink(target, src / name)

    done = push(daemon, src, [b"sub", *(name.encode() for name in links)])

    assert done.returncode == 0, done.stderr
    got = {name: os.readlink(daemon.module_path / name) for name in links}
    if use_chroot:
        assert got == links
    else:  # sanitized: no leading '/', no '..' escaping the module or inside a target
        assert got == {"abs": "etc/passwd", "escape": "nowhere", "mid": "x", "sub/up": "../x"}


def test_daemon_password_via_environment(rsync_daemon: RsyncDaemon, tmp_path: Path) -> None:
    assert rsync_daemon.password_file.stat().st_mode & 0o777 == 0o600
    assert rsync_daemon.url == f"rsync://tsync@127.0.0.1:{rsync_daemon.port}/www/"
    assert rsync_daemon.dcolon_url == "tsync@127.0.0.1::www"
    (rsync_daemon.module_path / "present").write_text("x")

    listing = subprocess.run(  # noqa: S603
        ["rsync", f"--port={rsync_daemon.port}", "--list-only", f"{rsync_daemon.dcolon_url}/"],
        env=rsync_daemon.env(),
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert listing.returncode == 0, listing.stderr
    assert b"present" in listing.stdout
    assert "rsync on www/" in rsync_daemon.log_text()


def test_ssh_push_compares_equal_ignoring_owners(ssh_target: SshServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_source(src)
    assert list(ssh_target.replica.iterdir()) == []

    done = subprocess.run(  # noqa: S603
        ["rsync", "-a", "-e", ssh_target.ssh_command(), f"{src}/", ssh_target.rsync_dest],
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr + ssh_target.stderr().encode()
    assert_trees_equal(src, ssh_target.replica)
    test_uid = pwd.getpwnam(ssh_target.user).pw_uid
    assert (ssh_target.replica / "secret").stat().st_uid == test_uid
    owned = diff(snapshot(src, owners=True), snapshot(ssh_target.replica, owners=True))
    assert owned and all("owner differs" in line or "more difference" in line for line in owned)
    assert (
        ssh_target.url == f"ssh://{ssh_target.user}@127.0.0.1:{ssh_target.port}{ssh_target.replica}"
    )


def test_ssh_runs_commands_as_light_test_user(ssh_target: SshServer) -> None:
    (ssh_target.replica / "leftover").write_text("x")
    ssh_target.clear_replica()
    assert list(ssh_target.replica.iterdir()) == []

    done = subprocess.run(  # noqa: S603
        ssh_target.ssh_argv("id -un; echo $0"),
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [ssh_target.user.encode(), b"sh"]
    known = ssh_target.known_hosts_file.read_text()
    assert known.startswith(f"[127.0.0.1]:{ssh_target.port} ssh-ed25519 ")
    assert ssh_target.identity_file.stat().st_mode & 0o777 == 0o600


def test_daemon_restart_keeps_port_and_module(rsync_daemon: RsyncDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "before").write_text("1")
    (src / "after").write_text("2")
    assert push(rsync_daemon, src, [b"before"]).returncode == 0
    port = rsync_daemon.port

    rsync_daemon.restart()

    assert rsync_daemon.port == port
    done = push(rsync_daemon, src, [b"after"])
    assert done.returncode == 0, done.stderr
    assert_trees_equal(src, rsync_daemon.module_path)


def test_max_connections_rejects_second_client(
    rsync_daemon_factory: RsyncDaemonFactory, procs: ProcGroup, tmp_path: Path
) -> None:
    daemon = rsync_daemon_factory(max_connections=1, timeout=30)
    src = tmp_path / "src"
    src.mkdir()
    (src / "held").write_text("x")
    argv = [*RSYNC_LIST, f"--password-file={daemon.password_file}", f"{src}/", daemon.url]
    # A standby client connects and authenticates before reading its list: it holds the slot.
    standby = procs.start(argv, name="standby", stdin_pipe=True)
    wait_for(lambda: "rsync to www/ from" in daemon.log_text(), what="standby to hold the slot")

    second = subprocess.run(  # noqa: S603
        ["rsync", f"--password-file={daemon.password_file}", "--list-only", daemon.url],
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert second.returncode == 5, second.stderr
    assert b"max connections (1) reached" in second.stderr
    standby.stdin.write(nul_list([b"held"]))
    assert standby.wait(10) == 0, standby.describe()
    assert (daemon.module_path / "held").read_text() == "x"
    # The slot frees a few tens of ms after the client exits.
    deadline = time.monotonic() + 3.0
    while push(daemon, src, [b"held"]).returncode == 5:
        assert time.monotonic() < deadline, "slot never freed"
        time.sleep(0.02)


def test_daemon_start_skips_taken_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        daemon = RsyncDaemon(tmp_path / "d")

        with daemon.start(ports=[taken, free_port()]):
            assert daemon.port != taken
            assert daemon.running
            assert "bind() failed" in daemon.log_text()
    assert not daemon.running


def test_procs_stop_terminates_then_kills(procs: ProcGroup) -> None:
    polite = procs.start(["sleep", "60"])
    stubborn = procs.start(["sh", "-c", "trap '' TERM; sleep 60 & wait"], name="stubborn")
    time.sleep(0.1)  # let the shell install its trap

    assert polite.stop() == -15
    started = time.monotonic()
    assert stubborn.stop(timeout=0.3) == -9
    assert time.monotonic() - started < 2.0
    assert not polite.running
    assert not stubborn.running


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535
