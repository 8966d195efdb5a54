"""Shared fixtures backed by real components: rsync daemon, sshd, background processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proc import ProcGroup
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonFactory, rsync_binary
from tests.support.sshd import SshServer, sshd_unavailable_reason

# hypothesis imports this module only to report a failing example, and that import warns
# (DeprecationWarning from mypy_extensions); with filterwarnings = error the warning would
# turn the report into an INTERNALERROR that hides the example. Import it quietly now.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401


def _xdist_basetemp() -> Path | None:
    """A pytest-xdist worker's base for tmp_path: /tmp/ts-RUN-gwN (None outside a worker).

    xdist's own, /tmp/pytest-of-root/pytest-N/popen-gwN/, is 20 bytes longer, which pushes
    the ssh target's ControlPath (a Unix socket, at most 108 bytes, in the test's state
    directory) past the limit: every ssh run then fails with exit 255.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not worker or not run:
        return None
    return Path(tempfile.gettempdir()) / f"ts-{run[:8]}-{worker}"


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path plugin reads the option
def pytest_configure(config: pytest.Config) -> None:
    base = _xdist_basetemp()
    if base is not None:
        config.option.basetemp = str(base)


@pytest.hookimpl(trylast=True)  # after every fixture's teardown
def pytest_sessionfinish(exitstatus: int) -> None:
    base = _xdist_basetemp()
    if base is not None and exitstatus == 0:  # a failed run's files stay for a post-mortem
        shutil.rmtree(base, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked long go first: with pytest-xdist (make test), a worker that picked one up
    near the end would keep the whole run waiting for it alone."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcGroup]:
    """Start background processes with `procs.start(argv, ...)`; all are stopped at teardown."""
    group = ProcGroup(tmp_path / "procs")
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def rsync_daemon_factory(tmp_path: Path) -> Iterator[RsyncDaemonFactory]:
    """`factory(max_connections=None, timeout=None, use_chroot=False, tuned=False)`: a started
    RsyncDaemon, with the stock config (no `socket options`) unless `tuned`.

    Every daemon it started is killed at teardown (SIGKILL: a graceful stop costs 0.4 s).
    """
    if rsync_binary() is None:
        pytest.skip("rsync not installed (apt-get install -y rsync)")
    daemons: list[RsyncDaemon] = []

    def factory(
        *,
        max_connections: int | None = None,
        timeout: int | None = None,
        use_chroot: bool = False,
        tuned: bool = False,
    ) -> RsyncDaemon:
        daemon = RsyncDaemon(
            tmp_path / f"rsyncd-{len(daemons)}",
            max_connections=max_connections,
            timeout=timeout,
            use_chroot=use_chroot,
            tuned=tuned,
        )
        daemons.append(daemon)
        return daemon.start()

    try:
        yield factory
    finally:
        for daemon in daemons:
            daemon.kill()


@pytest.fixture
def rsync_daemon(rsync_daemon_factory: RsyncDaemonFactory) -> RsyncDaemon:
    """A running rsync daemon with a writable module `[www]` (see RsyncDaemon)."""
    return rsync_daemon_factory()


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[SshServer]:
    """One sshd for the session; tests should use `ssh_target`, which empties the replica."""
    reason = sshd_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = SshServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def ssh_target(ssh_server: SshServer) -> SshServer:
    """The session sshd with an empty replica directory (owned by the test user)."""
    if not ssh_server.running:  # a test stopped it; bring it back on a new port
        ssh_server.start()
    ssh_server.clear_replica()
    return ssh_server
