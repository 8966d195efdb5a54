"""Attack on issue 15 with real processes: trigsync in place of sersync2, and doctor,
against a real rsync daemon on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proc import Proc, ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonFactory, rsync_binary
from tests.support.trees import wait_trees_equal

TRIGSYNC = str(Path(sys.executable).parent / "trigsync")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

# The filter of sersync's stock confxml.xml and of most tutorials.
CONFXML = """<?xml version="1.0" encoding="ISO-8859-1"?>\r
<head version="2.5">\r
    <filter start="true">\r
    <exclude expression="(.*)\\.svn"></exclude>\r
    <exclude expression="(.*)\\.gz"></exclude>\r
    <exclude expression="^info/*"></exclude>\r
    <exclude expression="^static/*"></exclude>\r
    <exclude expression="(.*)\\.(swp|swx)"></exclude>\r
    </filter>\r
    <sersync>\r
    <localpath watch="{source}/">\r
        <remote ip="{host}" name="{module}/"/>\r
    </localpath>\r
    <rsync>\r
        <commonParams params="-artuz"/>\r
        <auth start="True" users="{user}" passwordfile="{password_file}"/>\r
        <userDefinedPort start="True" port="{port}"/>\r
    </rsync>\r
    </sersync>\r
</head>\r
"""


def _excluded(path: bytes) -> bool:
    top = path.split(b"/")[0]
    return top in (b"info", b"static") or path.endswith((b".svn", b".gz", b".swp", b".swx"))


@pytest.fixture
def daemon(rsync_daemon_factory: RsyncDaemonFactory) -> RsyncDaemon:
    return rsync_daemon_factory(use_chroot=True)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "index.html").write_text("hello\n")
    (src / "d" / "page.html").write_text("page\n")
    (src / "info").mkdir()
    (src / "info" / "secret.txt").write_text("excluded dir\n")
    (src / "old.swp").write_text("an editor's swap file, there before -r\n")
    (src / "d" / "old.swx").write_text("another\n")
    (src / "dump.gz").write_text("gz\n")
    return src


@pytest.fixture
def confxml(tmp_path: Path, source: Path, daemon: RsyncDaemon) -> Path:
    path = tmp_path / "confxml.xml"
    text = CONFXML.format(
        source=source,
        host=daemon.host,
        module=daemon.module,
        user=daemon.user,
        password_file=daemon.password_file,
        port=daemon.port,
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # a BOM, as Windows editors save it
    return path


def _leaked(replica: Path) -> list[str]:
    return sorted(
        str(p.relative_to(replica))
        for p in replica.rglob("*")
        if _excluded(bytes(p.relative_to(replica)))
    )


def _start(procs: ProcGroup, tmp_path: Path, confxml: Path, *flags: str) -> Proc:
    argv = [TRIGSYNC, *flags, "-o", str(confxml), "--state-dir", str(tmp_path / "state")]
    proc = procs.start(argv, name="trigsync", env=ENV)
    wait_for(lambda: b"watching " in proc.stderr() or not proc.running, timeout=30, what="start")
    assert proc.running, proc.describe()
    return proc


def test_bare_sersync_line_never_sends_what_the_stock_filter_excludes(
    procs: ProcGroup, tmp_path: Path, source: Path, confxml: Path, daemon: RsyncDaemon
) -> None:
    """`trigsync -r -o confxml.xml`: the initial sync must honour every <exclude>."""
    proc = _start(procs, tmp_path, confxml, "-r")
    replica = daemon.module_path
    wait_trees_equal(source, replica, timeout=20, exclude=_excluded)
    (source / "new.swp").write_text("swap written after start\n")
    (source / "d" / "new.txt").write_text("x\n")
    wait_trees_equal(source, replica, timeout=20, exclude=_excluded)
    assert _leaked(replica) == []
    assert proc.stop() == 0


def test_renames_and_catch_up_never_send_what_a_regex_excludes(
    procs: ProcGroup, tmp_path: Path, source: Path, confxml: Path, daemon: RsyncDaemon
) -> None:
    """Moves into and out of excluded directories, then changes made while stopped."""
    for name in ("old.swp", "d/old.swx"):
        (source / name).unlink()  # only translatable regexes here
    proc = _start(procs, tmp_path, confxml, "-r")
    replica = daemon.module_path
    wait_trees_equal(source, replica, timeout=20, exclude=_excluded)
    (source / "d").rename(source / "static")  # a synced dir moves into an excluded name
    (source / "info").rename(source / "pub")  # an excluded dir moves out: now to be sent
    (source / "pub" / "more.gz").write_text("still excluded by (.*)\\.gz\n")
    wait_trees_equal(source, replica, timeout=20, exclude=_excluded)
    assert _leaked(replica) == []
    assert proc.stop() == 0
    (source / "pub").rename(source / "info")
    (source / "static").rename(source / "d")
    (source / "d" / "late.gz").write_text("made while stopped\n")
    proc = _start(procs, tmp_path, confxml)
    wait_trees_equal(source, replica, timeout=20, exclude=_excluded)
    assert _leaked(replica) == []
    assert proc.stop() == 0


# -- doctor ------------------------------------------------------------------------------


@pytest.fixture
def stock(tmp_path: Path) -> Iterator[tuple[RsyncDaemon, Path, Path]]:
    if rsync_binary() is None:
        pytest.skip("rsync not installed")
    daemon = RsyncDaemon(tmp_path / "rsyncd", use_chroot=True, tuned=True).start()
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.html").write_text("hello\n")
    password_file = tmp_path / "client.pass"
    password_file.write_text(f"{daemon.password}\n")
    password_file.chmod(0o600)
    try:
        yield daemon, src, password_file
    finally:
        daemon.kill()


def _doctor(tmp_path: Path, src: Path, url: str, password_file: Path) -> tuple[int, str]:
    argv = [TRIGSYNC, "doctor", str(src), url, "--password-file", str(password_file)]
    result = subprocess.run(  # noqa: S603 - argv list, no shell
        [*argv, "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def _run_once(tmp_path: Path, src: Path, url: str, password_file: Path) -> None:
    argv = [TRIGSYNC, "run", "--once", "--initial-sync", str(src), url]
    subprocess.run(  # noqa: S603 - argv list, no shell
        [*argv, "--password-file", str(password_file), "--state-dir", str(tmp_path / "run")],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _edit_conf(daemon: RsyncDaemon, old: str, new: str) -> None:
    text = daemon.config_path.read_text()
    assert old in text
    daemon.config_path.write_text(text.replace(old, new))
    daemon.restart()


def test_doctor_names_every_link_a_stock_no_chroot_module_munges(
    tmp_path: Path, stock: tuple[RsyncDaemon, Path, Path]
) -> None:
    """The tutorials' rsyncd.conf: use chroot = no, and rsync's default munge symlinks."""
    daemon, src, password_file = stock
    (src / "logo.png").symlink_to("/srv/shared/logo.png")
    (src / "home.html").symlink_to("index.html")  # relative, inside the tree
    daemon.reconfigure(use_chroot=False)
    _edit_conf(daemon, "munge symlinks = no\n", "")  # back to rsync's default
    _run_once(tmp_path, src, daemon.url, password_file)
    arrived = os.readlink(daemon.module_path / "home.html")
    code, out = _doctor(tmp_path, src, daemon.url, password_file)
    assert arrived != "index.html"  # what the daemon really did to a plain relative link
    assert code == 1, out
    assert "2 symlinks would arrive with a different target" in out, out
    assert "munge symlinks" in out, out


def test_doctor_accepts_a_target_subdirectory_that_run_creates(
    tmp_path: Path, stock: tuple[RsyncDaemon, Path, Path]
) -> None:
    daemon, src, password_file = stock
    url = daemon.url + "site/"
    code, out = _doctor(tmp_path, src, url, password_file)
    assert code == 0, out
    assert list(daemon.module_path.iterdir()) == []


def test_doctor_accepts_a_write_only_module_that_run_writes_to(
    tmp_path: Path, stock: tuple[RsyncDaemon, Path, Path]
) -> None:
    """write only = yes keeps a backup receiver from being read back: trigsync works."""
    daemon, src, password_file = stock
    _edit_conf(daemon, "read only = no\n", "read only = no\nwrite only = yes\n")
    _run_once(tmp_path, src, daemon.url, password_file)
    assert (daemon.module_path / "index.html").read_text() == "hello\n"
    (daemon.module_path / "index.html").unlink()
    code, out = _doctor(tmp_path, src, daemon.url, password_file)
    assert code in (0, 1), out
    assert list(daemon.module_path.iterdir()) == []
