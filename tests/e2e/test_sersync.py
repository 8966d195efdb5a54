"""trigsync in place of sersync2: the same confxml.xml and command line, a real daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.proc import ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonFactory
from tests.support.trees import wait_trees_equal
from tests.support.workload import make_tree

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

CONFXML = """<?xml version="1.0" encoding="ISO-8859-1"?>
<head version="2.5">
    <host hostip="localhost" port="8008"></host>
    <debug start="false"/>
    <fileSystem xfs="false"/>
    <filter start="true">
    <exclude expression="(.*)\\.svn"></exclude>
    <exclude expression="^cache/*"></exclude>
    <exclude expression="(.*)\\.(swp|swx)"></exclude>
    </filter>
    <inotify>
    <delete start="true"/>
    <createFolder start="true"/>
    <createFile start="false"/>
    <closeWrite start="true"/>
    <moveFrom start="true"/>
    <moveTo start="true"/>
    <attrib start="false"/>
    <modify start="false"/>
    </inotify>
    <sersync>
    <localpath watch="{source}">
        <remote ip="{host}" name="{module}"/>
    </localpath>
    <rsync>
        <commonParams params="-artuz"/>
        <auth start="true" users="{user}" passwordfile="{password_file}"/>
        <userDefinedPort start="true" port="{port}"/>
        <timeout start="true" time="30"/>
        <ssh start="false"/>
    </rsync>
    <failLog path="/tmp/rsync_fail_log.sh" timeToExecute="60"/>
    <crontab start="false" schedule="600"/>
    <plugin start="false" name="command"/>
    </sersync>
    <plugin name="refreshCDN">
    <localpath watch="/data0/htdocs/site/">
        <cdninfo domainname="cdn.example.com" port="80" username="x" passwd="x"/>
    </localpath>
    </plugin>
</head>
"""


def _excluded(path: bytes) -> bool:
    name = path.rsplit(b"/", 1)[-1]
    return path.split(b"/")[0] == b"cache" or name.endswith((b".svn", b".swp"))


@pytest.fixture
def daemon(rsync_daemon_factory: RsyncDaemonFactory) -> RsyncDaemon:
    return rsync_daemon_factory(use_chroot=True)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A tree that exists before trigsync starts: only -r can push it."""
    src = tmp_path / "src"
    make_tree(src, dirs=4, files_per_dir=3)
    (src / "cache").mkdir()
    (src / "cache" / "page.html").write_text("cached\n")
    (src / "repo.svn").write_text("svn\n")
    (src / ".htaccess").write_text("deny from all\n")  # sersync skipped dot-files; we do not
    return src


@pytest.fixture
def confxml(tmp_path: Path, source: Path, daemon: RsyncDaemon) -> Path:
    path = tmp_path / "confxml.xml"
    path.write_text(
        CONFXML.format(
            source=source,
            host=daemon.host,
            module=daemon.module,
            user=daemon.user,
            password_file=daemon.password_file,
            port=daemon.port,
        )
    )
    return path


def _check_replication(source: Path, daemon: RsyncDaemon) -> None:
    replica = daemon.module_path
    wait_trees_equal(source, replica, timeout=20, exclude=_excluded)
    assert (replica / ".htaccess").read_text() == "deny from all\n"
    assert not (replica / "cache").exists()
    assert not (replica / "repo.svn").exists()
    (source / "new.txt").write_text("after start\n")
    (source / "edit.swp").write_text("editor swap\n")  # an alternation in the regex
    (source / "d000" / "more.svn").write_text("x\n")
    wait_trees_equal(source, replica, timeout=20, exclude=_excluded)
    assert not (replica / "edit.swp").exists()
    assert not (replica / "d000" / "more.svn").exists()


@pytest.mark.parametrize(
    "form",
    [["-r", "-o"], ["run", "-r", "-o"]],
    ids=["sersync2-command-line", "run-subcommand"],
)
def test_run_r_o_confxml_replicates_the_existing_tree_then_changes(  # noqa: PLR0917
    form: list[str],
    procs: ProcGroup,
    tmp_path: Path,
    source: Path,
    confxml: Path,
    daemon: RsyncDaemon,
) -> None:
    argv = [sys.executable, "-m", "trigsync", *form, str(confxml), "--state-dir"]
    proc = procs.start([*argv, str(tmp_path / "state")], name="trigsync", env=ENV)
    wait_for(lambda: b"watching " in proc.stderr() or not proc.running, timeout=20, what="start")
    assert proc.running, proc.describe()
    _check_replication(source, daemon)
    log = proc.stderr().decode()
    assert "WARNING" in log and "plugin refreshCDN" in log and "-m refreshCDN" in log
    assert "has no rsync equivalent" not in log  # (swp|swx): one rsync pattern each
    assert proc.stop() == 0


def test_d_detaches_writes_the_pid_file_and_stops_on_sigterm(
    tmp_path: Path, source: Path, confxml: Path, daemon: RsyncDaemon
) -> None:
    pid_file = tmp_path / "trigsync.pid"
    argv = ["-d", "-r", "-o", str(confxml), "--state-dir", str(tmp_path / "state")]
    result = subprocess.run(  # noqa: S603 - argv list, no shell
        [sys.executable, "-m", "trigsync", *argv, "--pid-file", str(pid_file)],
        capture_output=True,
        env=ENV,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr  # the rc.local line returns at once
    wait_for(pid_file.exists, timeout=10, what="the pid file")
    pid = int(pid_file.read_text())
    try:
        _check_replication(source, daemon)
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_file.exists(), timeout=20, what="the daemon to stop")


def test_import_sersync_output_runs_as_a_trigsync_toml(
    tmp_path: Path, source: Path, confxml: Path, daemon: RsyncDaemon
) -> None:
    run = [sys.executable, "-m", "trigsync"]
    out = subprocess.run(  # noqa: S603 - argv list, no shell
        [*run, "import-sersync", str(confxml)], capture_output=True, text=True, check=True
    ).stdout
    assert "NOT HONOURED: plugin refreshCDN" in out
    toml = tmp_path / "trigsync.toml"
    toml.write_text(out)
    state = str(tmp_path / "state")
    subprocess.run(  # noqa: S603 - argv list, no shell
        [*run, "run", "--config", str(toml), "--state-dir", state, "--initial-sync", "--once"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_trees_equal(source, daemon.module_path, timeout=5, exclude=_excluded)


def test_sersync_flags_without_an_equivalent_say_so(confxml: Path) -> None:
    run = [sys.executable, "-m", "trigsync"]
    result = subprocess.run(  # noqa: S603 - argv list, no shell
        [*run, "-m", "refreshCDN", "-o", str(confxml)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "trigsync has no such plugin: drop -m to replicate" in result.stderr


def test_d_reports_a_setup_error_on_the_terminal_before_detaching(
    tmp_path: Path, confxml: Path, daemon: RsyncDaemon
) -> None:
    daemon.password_file.unlink()
    pid_file = tmp_path / "trigsync.pid"
    argv = ["-d", "-r", "-o", str(confxml), "--state-dir", str(tmp_path / "state")]
    result = subprocess.run(  # noqa: S603 - argv list, no shell
        [sys.executable, "-m", "trigsync", *argv, "--pid-file", str(pid_file)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=20,
        check=False,
    )
    assert result.returncode == 3
    assert f"password file {daemon.password_file} does not exist" in result.stderr
    assert not pid_file.exists()
