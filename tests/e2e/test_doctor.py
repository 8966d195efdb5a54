"""`trigsync doctor` against a real daemon set up wrong in each of the tutorials' ways.

Each case must name the problem (and its fix), then pass once the setup is fixed.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.rsyncd import RsyncDaemon, rsync_binary

# doctor warns when a small file takes over 30 ms to arrive: tests running beside it on the
# same cores push a tuned daemon past that, so these run alone (see the Makefile).
pytestmark = pytest.mark.serial


@dataclass
class Setup:
    daemon: RsyncDaemon
    source: Path
    state: Path
    password_file: Path
    url: str

    def doctor(self) -> tuple[int, str]:
        argv = [sys.executable, "-m", "trigsync", "doctor", str(self.source), self.url]
        argv += ["--password-file", str(self.password_file), "--state-dir", str(self.state)]
        result = subprocess.run(  # noqa: S603 - argv list, no shell
            argv, capture_output=True, text=True, timeout=120, check=False
        )
        return result.returncode, result.stdout + result.stderr


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    if rsync_binary() is None:
        pytest.skip("rsync not installed")
    daemon = RsyncDaemon(tmp_path / "rsyncd", use_chroot=True, tuned=True).start()
    source = tmp_path / "src"
    source.mkdir()
    (source / "index.html").write_text("hello\n")
    password_file = tmp_path / "client.pass"
    password_file.write_text(f"{daemon.password}\n")
    password_file.chmod(0o600)
    try:
        yield Setup(daemon, source, tmp_path / "state", password_file, daemon.url)
    finally:
        daemon.kill()


def _wrong_password(s: Setup) -> Callable[[], object]:
    s.password_file.write_text("not-the-password\n")
    return lambda: s.password_file.write_text(f"{s.daemon.password}\n")


def _module_is_user(s: Setup) -> Callable[[], object]:
    good = s.url
    s.url = f"rsync://{s.daemon.user}@{s.daemon.host}:{s.daemon.port}/{s.daemon.user}/"
    return lambda: setattr(s, "url", good)


def _open_mode(s: Setup) -> Callable[[], object]:
    s.password_file.chmod(0o644)
    return lambda: s.password_file.chmod(0o600)


def _user_colon_password(s: Setup) -> Callable[[], object]:
    s.password_file.write_text(f"{s.daemon.user}:{s.daemon.password}\n")
    return lambda: s.password_file.write_text(f"{s.daemon.password}\n")


def _read_only(s: Setup) -> Callable[[], object]:
    s.daemon.reconfigure(read_only=True)
    return lambda: s.daemon.reconfigure(read_only=False)


def _wrong_uid(s: Setup) -> Callable[[], object]:
    s.daemon.module_path.chmod(0o755)  # owned by root; the daemon writes as nobody
    s.daemon.reconfigure(uid="nobody")
    nobody = pwd.getpwnam("nobody")
    return lambda: os.chown(s.daemon.module_path, nobody.pw_uid, nobody.pw_gid)


def _connections(limit: int) -> Callable[[Setup], Callable[[], object]]:
    def break_it(s: Setup) -> Callable[[], object]:
        s.daemon.reconfigure(max_connections=limit)
        return lambda: s.daemon.reconfigure(max_connections=None)

    return break_it


def _stock_socket_options(s: Setup) -> Callable[[], object]:
    s.daemon.reconfigure(tuned=False)
    return lambda: s.daemon.reconfigure(tuned=True)


def _no_chroot_with_absolute_links(s: Setup) -> Callable[[], object]:
    (s.source / "logo.png").symlink_to("/srv/shared/logo.png")
    (s.source / "up").symlink_to("../elsewhere")
    s.daemon.reconfigure(use_chroot=False)
    return lambda: s.daemon.reconfigure(use_chroot=True)


def _daemon_down(s: Setup) -> Callable[[], object]:
    s.daemon.stop()
    return s.daemon.restart


CASES: dict[str, tuple[Callable[[Setup], Callable[[], object]], int, list[str]]] = {
    "unreachable": (_daemon_down, 2, ["nothing listens on 127.0.0.1:", "start the daemon"]),
    "module-is-user": (
        _module_is_user,
        2,
        ["unknown module 'tsync' (that is the user name", "the daemon offers: www"],
    ),
    "auth-failed": (
        _wrong_password,
        2,
        ["auth failed for user 'tsync' on module 'www'", "secrets file"],
    ),
    "password-mode": (_open_mode, 2, ["mode 644 lets others read it", "chmod 600"]),
    "password-format": (_user_colon_password, 2, ["holds user:password", "only the password"]),
    "read-only": (_read_only, 2, ["module www is read only: set 'read only = no'"]),
    "not-writable": (_wrong_uid, 2, ["the daemon cannot write in module www's path"]),
    "max-connections-1": (_connections(1), 1, ["max connections = 1 in [www]"]),
    "max-connections-2": (_connections(2), 1, ["max connections = 2 in [www]"]),
    "no-tcp-nodelay": (_stock_socket_options, 1, ["socket options = TCP_NODELAY"]),
    "chroot-munges-links": (
        _no_chroot_with_absolute_links,
        1,
        ["2 symlinks would arrive with a different target", "use chroot = yes"],
    ),
}


def test_a_right_setup_is_all_ok_and_leaves_nothing_behind(setup: Setup) -> None:
    code, out = setup.doctor()
    assert code == 0, out
    assert all(line.startswith("ok") for line in out.splitlines()), out
    assert "module www is writable" in out
    assert list(setup.daemon.module_path.iterdir()) == []


@pytest.mark.parametrize("case", list(CASES))
def test_each_wrong_setup_is_named_then_passes_once_fixed(setup: Setup, case: str) -> None:
    break_it, expected_code, expected = CASES[case]
    fix = break_it(setup)
    code, out = setup.doctor()
    assert code == expected_code, out
    for text in expected:
        assert text in out, out
    assert "could not remove" not in out, out
    fix()
    code, out = setup.doctor()
    assert code == 0, out
    assert list(setup.daemon.module_path.iterdir()) == []
