"""An ssh receiver for the latency workload: the test suite's loopback sshd, whose user
logs in with bash and a ``~/.bashrc`` that sleeps, like root's ``pyenv init`` on these
machines (150 ms and more for every command sshd runs), and trigsync pushing to it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.sshd import SshServer, sshd_unavailable_reason

from .procs import Proc
from .runners import READY_TIMEOUT, Trigsync

SHELL_START = 0.15  # seconds the remote shell takes to start (the .bashrc sleeps)
ROUTE_UP = "runs reach a private rsync daemon on the receiver"
NO_ROUTE = "no private daemon on the receiver"
FAST_OFF = "fast path off"


@dataclass(frozen=True, slots=True)
class SshSite:
    """A source directory and the sshd replica it is pushed to."""

    workdir: Path
    src: Path
    server: SshServer

    @property
    def replica(self) -> Path:
        return self.server.replica


@contextlib.contextmanager
def ssh_site(base: Path, name: str) -> Iterator[SshSite]:
    """A fresh source, and an sshd whose user's shell takes SHELL_START s to start."""
    reason = sshd_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"no ssh receiver: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    (workdir / "src").mkdir()
    server = SshServer(user=f"trigsync-bench{os.getpid()}", login_shell="/bin/bash")
    try:
        server.start()
        server.write_home_file(".bashrc", f"sleep {SHELL_START}\n")
        yield SshSite(workdir, workdir / "src", server)
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)


class TrigsyncSsh:
    """trigsync with default settings, pushing to an ssh target (a config file: the ssh
    options, such as the test server's host key, have no command-line flag)."""

    name = "trigsync"

    def config(self, where: SshSite) -> Path:
        lines = [
            f"state_dir = {json.dumps(str(where.workdir / 'state'))}",
            "[[sync]]",
            f"source = {json.dumps(str(where.src))}",
            "initial_sync = true",
            "[[sync.target]]",
            f"url = {json.dumps(where.server.url)}",
            f"ssh_options = {json.dumps(where.server.ssh_options())}",
            "ssh_fast_path = true",  # the mechanism for a slow login shell (off by default)
        ]
        path = where.workdir / "trigsync.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, where: SshSite) -> Proc:
        argv = [sys.executable, "-m", "trigsync", "run", "--config", str(self.config(where))]
        return Proc(argv, log_path=where.workdir / "trigsync.log", env=Trigsync.env())

    def wait_ready(self, proc: Proc) -> str:
        """Wait for the initial sync, then for the fast path's daemon route (or a refusal);
        says which."""
        proc.wait_log("full sync done", READY_TIMEOUT)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            for said in (ROUTE_UP, NO_ROUTE, FAST_OFF):
                if said in proc.log_text():
                    return said
            time.sleep(0.01)
        return "no word on the fast path"
