"""Attack 6b: the spawner's sweep of dead spawners' directories (commit 0460a5c).

The sweep runs before the spawner answers, on whatever the temporary directory holds:
an entry there must never hang or crash it, and only a dead spawner's directory goes.
"""

from __future__ import annotations

import os
import secrets
import select
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.unit.test_spawner import spawner
from trigsync.targets.spawner import HEADER_ROOM, HEADER_TIMEOUT, SPAWNER


def a_dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@contextmanager
def started(tmp: Path, prefix: tuple[str, ...] = ()) -> Iterator[list[bytes]]:
    """A spawner with TMPDIR=tmp; yields its answer's words, or fails if it gives none
    within 5 s (hung) or exits without one (crashed)."""
    argv = [*prefix, "python3", "-c", SPAWNER, str(HEADER_TIMEOUT), str(HEADER_ROOM), "rsync"]
    env = {**os.environ, "TMPDIR": str(tmp)}
    pipe = subprocess.PIPE
    with subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=pipe, cwd="/", env=env) as proc:  # noqa: S603
        assert proc.stdin and proc.stdout and proc.stderr
        try:
            proc.stdin.write(secrets.token_hex(32).encode() + b"\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 5)
            assert ready, "the spawner did not answer within 5 s (hung in its sweep)"
            line = proc.stdout.readline()
            assert line, "the spawner exited: " + proc.stderr.read().decode()[-300:]
            yield line.split()
            proc.stdin.close()
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def planted(tmp: Path, name: str = "trigsync-rsyncd-planted") -> Path:
    home = tmp / name
    home.mkdir(mode=0o700)
    return home


def test_a_fifo_named_pid_does_not_hang_the_spawner(tmp_path: Path) -> None:
    home = planted(tmp_path)
    os.mkfifo(home / "pid")
    with started(tmp_path) as words:
        assert words[1] != b"0"
    assert home.exists()


def test_a_pid_file_linked_to_an_endless_file_does_not_hang_the_spawner(tmp_path: Path) -> None:
    home = planted(tmp_path)
    (home / "pid").symlink_to("/dev/zero")
    with started(tmp_path) as words:
        assert words[1] != b"0"
    assert home.exists()


@pytest.mark.parametrize("text", ["99999999999999999999", "-" + "9" * 30, "1e9", "\0", "x" * 70000])
def test_a_garbage_pid_file_neither_crashes_the_spawner_nor_goes(tmp_path: Path, text: str) -> None:
    home = planted(tmp_path)
    (home / "pid").write_text(text)
    with started(tmp_path) as words:
        assert words[1] != b"0"
    assert home.exists(), "a directory whose pid file names no spawner was removed"


def test_a_negative_pid_is_no_spawners_and_its_directory_stays(tmp_path: Path) -> None:
    """os.kill(-N, 0) asks about the process group N: none, so the sweep took it for a
    dead spawner."""
    home = planted(tmp_path)
    (home / "pid").write_text(str(-a_dead_pid()))
    with started(tmp_path):
        pass
    assert home.exists()


def test_a_pid_file_that_is_a_symlink_is_not_a_spawners(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(str(a_dead_pid()))
    home = planted(tmp_path)
    (home / "pid").symlink_to(elsewhere)
    with started(tmp_path):
        pass
    assert home.exists() and elsewhere.exists()


def test_a_planted_symlink_to_a_dead_looking_directory_removes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "pid").write_text(str(a_dead_pid()))
    (target / "data").write_text("keep")
    (tmp_path / "trigsync-rsyncd-link").symlink_to(target)
    with started(tmp_path):
        pass
    assert (target / "data").read_text() == "keep"
    assert (tmp_path / "trigsync-rsyncd-link").is_symlink()


def test_a_dead_spawners_directory_still_goes(tmp_path: Path) -> None:
    home = planted(tmp_path)
    (home / "pid").write_text(str(a_dead_pid()))
    (home / "secrets").write_text("trigsync:x\n")
    with started(tmp_path):
        pass
    assert not home.exists()


def test_a_live_spawner_in_another_pid_namespace_keeps_its_directory(tmp_path: Path) -> None:
    """Same user, same /tmp, another pid namespace (a container sharing /tmp, as
    toolbox and distrobox do): the live spawner's pid names no process in the sweeper's
    namespace, yet its daemon re-reads that config and secret on every connection."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with spawner(env=env) as live:
        assert live.daemon_port
        (home,) = tmp_path.glob("trigsync-rsyncd-*")
        with started(tmp_path, ("unshare", "--pid", "--fork")) as words:
            assert words[1] != b"0"
        assert (home / "secrets").exists(), "a live spawner's secret was removed"


def test_another_users_dead_looking_directory_stays(tmp_path: Path) -> None:
    home = planted(tmp_path)
    (home / "pid").write_text(str(a_dead_pid()))
    for path in (home, home / "pid"):
        os.chown(path, 65534, 65534)
    with started(tmp_path):
        pass
    assert (home / "pid").exists()
