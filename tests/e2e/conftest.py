"""The conformance fixtures: one parametrized ``replica`` per real target kind, and the
watch backend (inotify unless a test asks for both with ``BOTH_BACKENDS``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from tests.e2e.harness import Replica, Trigsync, write_config
from tests.support.proc import ProcGroup
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.sshd import SshServer, sshd_unavailable_reason
from trigsync import fanotify

# "ssh-daemon": ssh with the fast path, whose runs take the receiver's private daemon.
TARGET_KINDS = ["rsyncd", "ssh", "ssh-daemon", "local"]
ROUTE_UP = "runs reach a private rsync daemon on the receiver"
# The watch backend is independent of the target kind: with a parametrized ``replica``,
# fanotify runs against the local target only, which keeps the suite's time in check.
BOTH_BACKENDS = pytest.mark.parametrize("watch_backend", ["inotify", "fanotify"], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(item, "callspec", None)
        params = {} if params is None else params.params
        redundant = params.get("watch_backend") == "fanotify" and params.get("replica") not in (
            None,
            "local",
        )
        (dropped if redundant else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture
def watch_backend(request: pytest.FixtureRequest, source: Path) -> str:
    backend = str(getattr(request, "param", "inotify"))
    if backend == "fanotify" and (why := fanotify.probe(os.fsencode(source))) is not None:
        pytest.skip(f"fanotify backend not usable here: {why}")
    return backend


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


def refusing_replica(factory: RsyncDaemonFactory, max_connections: int) -> Replica:
    """A daemon at ``max connections`` that refuses ``*.secret`` (a daemon-side exclude:
    rsync exit 23 for those paths, the rest delivered)."""
    replica = daemon_replica(factory, max_connections=max_connections)
    assert replica.daemon is not None
    config = replica.daemon.config_path
    config.write_text(config.read_text() + "exclude = *.secret\n")
    replica.daemon.restart()
    return replica


def ssh_replica(server: SshServer, *, fast: bool = False) -> Replica:
    options: dict[str, object] = {"ssh_options": server.ssh_options()}
    if fast:
        options["ssh_fast_path"] = True
    ready = ROUTE_UP if fast else None
    return Replica("ssh", server.url, server.replica, options, owners=False, ready=ready)


@pytest.fixture(params=TARGET_KINDS)
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Replica:
    kind = request.param
    if kind == "rsyncd":
        return daemon_replica(request.getfixturevalue("rsync_daemon_factory"))
    if kind in ("ssh", "ssh-daemon"):
        return ssh_replica(request.getfixturevalue("ssh_target"), fast=kind == "ssh-daemon")
    return local_replica(tmp_path)


def local_replica(tmp_path: Path, name: str = "replica") -> Replica:
    path = tmp_path / name
    path.mkdir()
    return Replica("local", str(path), path)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the source, on the same filesystem."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def bash_sshd() -> Iterator[SshServer]:
    """An sshd of the module's own whose user logs in with bash (rc files are read)."""
    reason = sshd_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with SshServer(user=f"trigsync-b{os.getpid()}", login_shell="/bin/bash") as server:
        yield server


Start = Callable[..., Trigsync]


@pytest.fixture
def start_trigsync(procs: ProcGroup, tmp_path: Path, source: Path, watch_backend: str) -> Start:
    """Start trigsync on ``source`` for the given replicas; it is stopped at teardown."""

    def start(*replicas: Replica, args: tuple[str, ...] = (), **kw: object) -> Trigsync:
        extra = cast("dict[str, object] | None", kw.pop("extra", None))
        kw["extra"] = extra = {"watch_backend": watch_backend, **(extra or {})}
        config = write_config(
            tmp_path / "trigsync.toml",
            source=source,
            replicas=replicas,
            state_dir=tmp_path / "state",
            **kw,  # type: ignore[arg-type]
        )
        trig = Trigsync(procs, config, "-v", *args).start()
        if extra["watch_backend"] != "auto":
            assert f"with {extra['watch_backend']}: " in trig.log(), trig.log()[-2000:]
        for ready in {r.ready for r in replicas if r.ready and kw.get("initial_sync", True)}:
            trig.wait_log(ready, timeout=20)
        return trig

    return start
