"""A throwaway rsync daemon on loopback, with auth, for the demo, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .errors import SetupError

USER = "tsync"
PASSWORD = "s3cret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rsyncd_conf(
    *,
    module: str,
    module_path: Path,
    secrets: Path,
    log: Path,
    lock: Path,
    user: str,
    use_chroot: bool = False,
    max_connections: int | None = None,
    timeout: int | None = None,
    read_only: bool = False,
    tuned: bool = False,
    uid: str | None = None,
) -> str:
    """An rsyncd.conf with one writable module behind a user and password.

    By default it is the stock config the tutorials write, with Nagle's algorithm on;
    ``tuned`` adds ``socket options = TCP_NODELAY``, which many receivers do not have.
    ``read_only`` and a ``uid`` that cannot write the module path make the tutorials'
    other mistakes, for ``doctor``'s tests.
    """
    lines = [
        "reverse lookup = no",
        f"log file = {log}",
        f"lock file = {lock}",
    ]
    if tuned:  # without it every small transfer waits ~40 ms on Nagle and delayed ACKs
        lines.append("socket options = TCP_NODELAY")
    lines += [
        f"[{module}]",
        f"path = {module_path}",
        f"read only = {'yes' if read_only else 'no'}",
        *_identity(uid),
        f"use chroot = {'yes' if use_chroot else 'no'}",
        # Without this, use chroot = no rewrites every symlink target (/rsyncd-munged/).
        "munge symlinks = no",
        f"auth users = {user}",
        f"secrets file = {secrets}",
    ]
    if max_connections:
        lines.append(f"max connections = {max_connections}")
    if timeout:
        lines.append(f"timeout = {timeout}")
    return "\n".join(lines) + "\n"


def _identity(uid: str | None) -> list[str]:
    """The module's uid and gid lines: as root, the given user (or root) and its group;
    a daemon that is not root cannot switch users (rsync: "setgroups failed"), so none."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam(uid or "root")
    return [f"uid = {user.pw_name}", f"gid = {grp.getgrgid(user.pw_gid).gr_name}"]


def write_secrets(secrets: Path, password_file: Path, user: str, password: str) -> None:
    """The daemon's secrets file and the client's password file, both mode 600."""
    for path, text in ((secrets, f"{user}:{password}\n"), (password_file, f"{password}\n")):
        path.write_text(text)
        path.chmod(0o600)


class LoopbackDaemon:
    """``rsync --daemon`` on 127.0.0.1 serving one module ``www`` with a user and password."""

    def __init__(
        self,
        workdir: Path,
        *,
        module: str = "www",
        max_connections: int | None = None,
        timeout: int | None = None,
        port: int | None = None,
        tuned: bool = False,
    ) -> None:
        self.workdir = workdir
        self.tuned = tuned
        self.module = module
        self.module_path = workdir / module
        self.password_file = workdir / "client.pass"
        self.log_path = workdir / "rsyncd.log"
        self.port = port or free_port()
        self.max_connections = max_connections
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rsync://{USER}@127.0.0.1:{self.port}/{self.module}/"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.module_path.mkdir(exist_ok=True)
        secrets = self.workdir / "rsyncd.secrets"
        write_secrets(secrets, self.password_file, USER, PASSWORD)
        conf = self.workdir / "rsyncd.conf"
        conf.write_text(
            rsyncd_conf(
                module=self.module,
                module_path=self.module_path,
                secrets=secrets,
                log=self.log_path,
                lock=self.workdir / "rsyncd.lock",
                user=USER,
                max_connections=self.max_connections,
                timeout=self.timeout,
                tuned=self.tuned,
            )
        )
        return conf

    def start(self) -> None:
        conf = self._write_config()
        argv = [
            "rsync", "--daemon", "--no-detach", f"--config={conf}",
            "--address=127.0.0.1", f"--port={self.port}",
        ]  # fmt: skip
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except FileNotFoundError:
            raise SetupError("rsync is not installed; run: apt-get install -y rsync") from None
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise SetupError(f"rsync daemon on port {self.port} exited: {err.strip()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.01)
        raise SetupError(f"rsync daemon on port {self.port} did not start within {timeout} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> LoopbackDaemon:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
