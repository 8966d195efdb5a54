"""A real OpenSSH `sshd -D -e` on a free loopback port, logging in a light-shell test user."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.ports import LOOPBACK, free_port, wait_for_greeting
from tests.support.proc import Proc

# One user per test session, removed when its server closes: sessions run side by side,
# so a shared user could be deleted under another session's feet.
TEST_USER = f"trigsync-t{os.getpid()}"
TEST_SHELL = "/bin/sh"
BIND_ATTEMPTS = 5
READY_TIMEOUT = 5.0
PROBE_TIMEOUT = 0.25  # a live server greets within milliseconds; a squatter never does
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


class SshdError(RuntimeError):
    """sshd did not start or answer in time."""


def sshd_binary() -> str | None:
    """Absolute path of sshd (it refuses to re-exec from a relative one)."""
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("sshd")


def sshd_unavailable_reason() -> str | None:
    """Why an SshServer cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "sshd fixture needs root (it runs sshd and creates the trigsync-test user)"
    for tool in ("ssh", "ssh-keygen", "useradd"):
        if shutil.which(tool) is None and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            return f"{tool} not installed (apt-get install -y openssh-server openssh-client)"
    if sshd_binary() is None:
        return "sshd not installed (apt-get install -y openssh-server)"
    return None


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)  # noqa: S603


def _shadow_password(user: str) -> str | None:
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user and len(fields) > 1:
                return fields[1]
    except OSError:
        return None
    return None


def ensure_test_user(
    user: str = TEST_USER, shell: str = TEST_SHELL
) -> tuple[pwd.struct_passwd, bool]:
    """Create `user` with `shell` (a plain /bin/sh by default) and an unlocked,
    password-less account if needed; returns its entry and whether it was created here.

    Without PAM, sshd refuses even key logins to a locked account ('!' in /etc/shadow), and
    root's shell here runs pyenv init on every command, hence a dedicated light user.
    """
    created = False
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        created = True
        done = _run(
            ["useradd", "--create-home", "--shell", shell, "--password", "*",
             "--comment", "trigsync test user", user]
        )  # fmt: skip
        if done.returncode not in (0, 9):  # 9: created meanwhile by a parallel session
            raise SshdError(f"useradd {user} failed: {done.stderr.strip()}") from None
        entry = pwd.getpwnam(user)
    password = _shadow_password(user)
    if entry.pw_shell != shell or (password is not None and password.startswith("!")):
        done = _run(["usermod", "--shell", shell, "--password", "*", user])
        if done.returncode != 0:
            raise SshdError(f"usermod {user} failed: {done.stderr.strip()}")
        entry = pwd.getpwnam(user)
    return entry, created


def remove_test_user(user: str) -> None:
    """Delete the user and its home (its sshd is stopped first, so nothing runs as it)."""
    done = _run(["userdel", "--force", "--remove", user])
    if done.returncode not in (0, 6):  # 6: no such user
        raise SshdError(f"userdel {user} failed: {done.stderr.strip()}")


def _keygen(path: Path, comment: str) -> None:
    done = _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    if done.returncode != 0:
        raise SshdError(f"ssh-keygen failed: {done.stderr.strip()}")
    path.chmod(0o600)


class SshServer:
    """sshd on 127.0.0.1:<free port> accepting only `identity_file` for user `trigsync-test`.

    Its files live in a fresh 0755 directory under /tmp (sshd reads authorized_keys as the
    user, and pytest's own tmp dirs are 0700 root). `replica` is owned by the test user; files
    rsync'ed there cannot keep root ownership, so compare trees with owners=False.
    """

    def __init__(self, *, user: str = TEST_USER, login_shell: str = TEST_SHELL) -> None:
        self.host = LOOPBACK
        self.user = user
        self.shell = login_shell
        self.port = 0
        self.base_dir = Path(tempfile.mkdtemp(prefix="trigsync-sshd-", dir="/tmp"))
        self.base_dir.chmod(0o755)
        self.config_path = self.base_dir / "sshd_config"
        self.host_key = self.base_dir / "ssh_host_ed25519_key"
        self.identity_file = self.base_dir / "id_ed25519"
        self.authorized_keys = self.base_dir / "authorized_keys"
        self.known_hosts_file = self.base_dir / "known_hosts"
        self.replica = self.base_dir / "replica"
        self._proc: Proc | None = None
        self._starts = 0
        self._prepared = False
        self._created_user = False

    @property
    def url(self) -> str:
        """`ssh://user@127.0.0.1:PORT/abs/path/to/replica` (the path part is absolute)."""
        return f"ssh://{self.user}@{self.host}:{self.port}{self.replica}"

    @property
    def rsync_dest(self) -> str:
        """`user@127.0.0.1:/abs/replica/` for plain `rsync -e` (port goes in ssh_command)."""
        return f"{self.user}@{self.host}:{self.replica}/"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def ssh_options(self) -> list[str]:
        """ssh options that reach this server with no prompts and no user config."""
        return [
            "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={self.known_hosts_file}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR",
            "-i", str(self.identity_file),
            "-p", str(self.port),
        ]  # fmt: skip

    def ssh_command(self) -> str:
        """One string for `rsync -e` (rsync splits it itself; quoting survives)."""
        return shlex.join(["ssh", *self.ssh_options()])

    def ssh_argv(self, *remote: str) -> list[str]:
        """argv running `remote` on the server as the test user."""
        return ["ssh", *self.ssh_options(), f"{self.user}@{self.host}", *remote]

    def _prepare(self) -> None:
        if self._prepared:
            return
        reason = sshd_unavailable_reason()
        if reason is not None:
            raise SshdError(reason)
        entry, self._created_user = ensure_test_user(self.user, self.shell)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        _keygen(self.host_key, "trigsync-test-host")
        _keygen(self.identity_file, "trigsync-test-client")
        pub = (self.identity_file.parent / (self.identity_file.name + ".pub")).read_text()
        self.authorized_keys.write_text(pub)
        self.authorized_keys.chmod(0o644)
        self.replica.mkdir()
        os.chown(self.replica, entry.pw_uid, entry.pw_gid)
        self._prepared = True

    def _write_config(self) -> None:
        lines = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            "PidFile none",
            "UsePAM no",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "PermitRootLogin no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxStartups 100",
            "MaxSessions 100",
            "LogLevel ERROR",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        host_pub = (self.host_key.parent / (self.host_key.name + ".pub")).read_text().split()
        self.known_hosts_file.write_text(f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def start(self) -> Self:
        """Start on a free port, retrying with another one if the bind loses a race."""
        if self.running:
            raise SshdError("sshd already running")
        self._prepare()
        errors: list[str] = []
        for _ in range(BIND_ATTEMPTS):
            self.port = free_port()
            self._write_config()
            self._starts += 1
            argv = [sshd_binary() or "sshd", "-D", "-e", "-f", str(self.config_path)]
            proc = Proc(argv, log_dir=self.base_dir, name=f"sshd-{self._starts}").start()
            self._proc = proc
            try:
                self.wait_ready()
            except SshdError as exc:
                proc.stop()
                self._proc = None
                errors.append(f"port {self.port}: {exc}")
                continue
            return self
        raise SshdError("sshd did not start:\n" + "\n".join(errors))

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll-connect until sshd sends its `SSH-2.0-` banner (bounded)."""

        def alive() -> str | None:
            proc = self._proc
            if proc is None or not proc.running:
                code = None if proc is None else proc.returncode
                err = b"" if proc is None else proc.stderr()
                return f"sshd exited (rc={code}): {err.decode(errors='replace')}"
            return None

        try:
            dead = wait_for_greeting(
                self.port, b"SSH-", alive=alive, timeout=timeout, probe_timeout=PROBE_TIMEOUT
            )
        except TimeoutError as exc:
            raise SshdError(str(exc)) from None
        if dead is not None:
            raise SshdError(dead)

    def write_home_file(self, name: str, text: str, mode: int = 0o644) -> Path:
        """Write ``~user/name`` (an rc file such as ``.bashrc``), owned by the test user."""
        entry = pwd.getpwnam(self.user)
        path = Path(entry.pw_dir) / name
        path.write_text(text)
        path.chmod(mode)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    def clear_replica(self) -> None:
        """Empty the replica directory, keeping it (and its ownership) in place."""
        with os.scandir(self.replica) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)

    def stderr(self) -> str:
        return "" if self._proc is None else self._proc.stderr().decode(errors="replace")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def close(self) -> None:
        """Stop sshd and remove its directory (keys, config, replica) and the test user."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self._created_user:
            remove_test_user(self.user)
            self._created_user = False

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
        self.close()
