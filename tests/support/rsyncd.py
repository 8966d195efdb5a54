"""A real `rsync --daemon` on a free loopback port, with one writable module `[www]`."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeAlias

from tests.support.ports import LOOPBACK, free_port, wait_for_greeting
from tests.support.proc import Proc
from trigsync.loopback import rsyncd_conf, write_secrets

USER = "tsync"
PASSWORD = "s3cret"  # throwaway test secret
MODULE = "www"
BIND_ATTEMPTS = 5
READY_TIMEOUT = 5.0
PROBE_TIMEOUT = 0.25  # a live server greets within milliseconds; a squatter never does


class DaemonError(RuntimeError):
    """The daemon did not start or answer in time."""


def rsync_binary() -> str | None:
    return shutil.which("rsync")


class RsyncDaemon:
    """`rsync --daemon --no-detach` in `base_dir`, serving `<base_dir>/module` as `[www]`.

    Clients authenticate as `tsync` with `password_file` (mode 600) or `RSYNC_PASSWORD`
    (see `env()`). The `::` form in `dcolon_url` cannot carry a port: pass `--port=<port>`.
    With `use_chroot=False` (the default, like most real setups) the daemon sanitizes symlink
    targets: absolute ones lose their leading '/', and '..' that climbs out of the module or
    through a component ('a/../b') is dropped. Pass `use_chroot=True` for exact link targets.
    The config is the stock one that tutorials write (Nagle on); `tuned=True` adds
    `socket options = TCP_NODELAY`.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        max_connections: int | None = None,
        timeout: int | None = None,
        use_chroot: bool = False,
        read_only: bool = False,
        tuned: bool = False,
        uid: str | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.read_only = read_only
        self.tuned = tuned
        self.uid = uid
        self.use_chroot = use_chroot
        self.max_connections = max_connections
        self.timeout = timeout
        self.host = LOOPBACK
        self.user = USER
        self.password = PASSWORD
        self.module = MODULE
        self.module_path = base_dir / "module"
        self.config_path = base_dir / "rsyncd.conf"
        self.secrets_path = base_dir / "rsyncd.secrets"
        self.password_file = base_dir / "client.password"
        self.log_path = base_dir / "rsyncd.log"
        self.lock_path = base_dir / "rsyncd.lock"
        self.port = 0
        self._proc: Proc | None = None
        self._starts = 0
        self._log_offset = 0
        base_dir.mkdir(parents=True, exist_ok=True)
        self.module_path.mkdir(exist_ok=True)
        self._write_files()

    @property
    def url(self) -> str:
        return f"rsync://{self.user}@{self.host}:{self.port}/{self.module}/"

    @property
    def dcolon_url(self) -> str:
        return f"{self.user}@{self.host}::{self.module}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def env(self) -> dict[str, str]:
        """The current environment plus RSYNC_PASSWORD, for clients not using --password-file."""
        return {**os.environ, "RSYNC_PASSWORD": self.password}

    def _write_files(self) -> None:
        self.config_path.write_text(
            rsyncd_conf(
                module=self.module,
                module_path=self.module_path,
                secrets=self.secrets_path,
                log=self.log_path,
                lock=self.lock_path,
                user=self.user,
                use_chroot=self.use_chroot,
                max_connections=self.max_connections,
                timeout=self.timeout,
                read_only=self.read_only,
                tuned=self.tuned,
                uid=self.uid,
            )
        )
        write_secrets(self.secrets_path, self.password_file, self.user, self.password)

    def _spawn(self, port: int) -> Proc:
        self._starts += 1
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [
            rsync_binary() or "rsync",
            "--daemon",
            "--no-detach",
            f"--config={self.config_path}",
            f"--port={port}",
            f"--address={self.host}",
        ]
        return Proc(argv, log_dir=self.base_dir, name=f"rsyncd-{self._starts}").start()

    def reconfigure(self, **settings: object) -> None:
        """Change settings (use_chroot, read_only, tuned, uid, max_connections...), restart."""
        for key, value in settings.items():
            if not hasattr(self, key):
                raise AttributeError(f"RsyncDaemon has no setting {key}")
            setattr(self, key, value)
        self._write_files()
        if self.running:
            self.restart()

    def start(self, *, ports: Sequence[int] | None = None) -> Self:
        """Start on the first of `ports` that binds (default: a few fresh free ports)."""
        if self.running:
            raise DaemonError("rsync daemon already running")
        errors: list[str] = []
        candidates = ports if ports is not None else [free_port() for _ in range(BIND_ATTEMPTS)]
        for port in candidates:
            if self._try_start(port, errors):
                return self
        raise DaemonError("rsync daemon did not start:\n" + "\n".join(errors))

    def restart(self, bind_timeout: float = 3.0) -> Self:
        """Stop and start again on the same port (retrying the bind briefly)."""
        port = self.port
        self.stop()
        errors: list[str] = []
        deadline = time.monotonic() + bind_timeout
        while True:
            if self._try_start(port, errors):
                return self
            if time.monotonic() >= deadline:
                raise DaemonError(f"rsync daemon did not restart on {port}:\n" + "\n".join(errors))
            time.sleep(0.05)

    def _try_start(self, port: int, errors: list[str]) -> bool:
        proc = self._spawn(port)
        self._proc = proc
        self.port = port
        try:
            self.wait_ready()
        except DaemonError as exc:
            proc.kill()
            self._proc = None
            errors.append(f"port {port}: {exc}")
            return False
        return True

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll-connect until the daemon sends its `@RSYNCD:` greeting (bounded)."""

        def alive() -> str | None:
            if self._proc is None or not self._proc.running:
                code = None if self._proc is None else self._proc.returncode
                return f"daemon exited (rc={code}): {self.log_tail()}"
            if "unable to bind" in self._log_since_spawn():
                # rsync lingers 0.4 s in its exit path; the log already says why.
                return f"bind failed: {self.log_tail()}"
            return None

        try:
            dead = wait_for_greeting(
                self.port, b"@RSYNCD:", alive=alive, timeout=timeout, probe_timeout=PROBE_TIMEOUT
            )
        except TimeoutError as exc:
            raise DaemonError(f"{exc}: {self.log_tail()}") from None
        if dead is not None:
            raise DaemonError(dead)

    def stop(self) -> None:
        """Terminate, wait, then kill the daemon and its connection children."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the daemon at once: rsync's graceful exit path alone costs 0.4 s."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    def _log_since_spawn(self) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 10) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# `rsync_daemon_factory`: factory(max_connections=, timeout=, use_chroot=, tuned=) -> daemon.
RsyncDaemonFactory: TypeAlias = Callable[..., RsyncDaemon]
