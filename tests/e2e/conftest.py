"""The conformance fixtures: one parametrized ``replica`` per real target kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import Replica, Trigsync, write_config
from tests.support.proc import ProcGroup
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.sshd import SshServer

TARGET_KINDS = ["rsyncd", "ssh", "local"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source"
    path.mkdir()
    return path


def daemon_replica(factory: RsyncDaemonFactory, **kw: object) -> Replica:
    # use chroot = yes keeps symlink targets exact (see RsyncDaemon).
    daemon = factory(use_chroot=True, **kw)
    return Replica(
        "rsyncd",
        daemon.url,
        daemon.module_path,
        {"password_file": str(daemon.password_file)},
        log=daemon.log_path,
        daemon=daemon,
    )


def ssh_replica(server: SshServer) -> Replica:
    options: dict[str, object] = {"ssh_options": server.ssh_options()}
    return Replica("ssh", server.url, server.replica, options, owners=False)


@pytest.fixture(params=TARGET_KINDS)
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Replica:
    kind = request.param
    if kind == "rsyncd":
        return daemon_replica(request.getfixturevalue("rsync_daemon_factory"))
    if kind == "ssh":
        return ssh_replica(request.getfixturevalue("ssh_target"))
    path = tmp_path / "replica"
    path.mkdir()
    return Replica("local", str(path), path)


Start = Callable[..., Trigsync]


@pytest.fixture
def start_trigsync(procs: ProcGroup, tmp_path: Path, source: Path) -> Start:
    """Start trigsync on ``source`` for the given replicas; it is stopped at teardown."""

    def start(*replicas: Replica, args: tuple[str, ...] = (), **kw: object) -> Trigsync:
        config = write_config(
            tmp_path / "trigsync.toml",
            source=source,
            replicas=replicas,
            state_dir=tmp_path / "state",
            **kw,  # type: ignore[arg-type]
        )
        return Trigsync(procs, config, "-v", *args).start()

    return start
