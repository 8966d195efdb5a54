"""Hosts reached over ssh: ``ssh://user@host[:port]/path`` or ``user@host:/path``.

Every run goes through one multiplexed ssh connection (ControlMaster), whose socket
lives in the state directory, so a batch costs no new login; and, once the target's
spawner is up on the receiver (``sshchannel.py``), no remote shell start-up either.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import rsync
from ..changes import Move
from ..errors import ConfigError, SetupError
from ..rsync import Transport
from . import beneath, sshroute
from .base import Target, TargetSpec, require_absolute, require_literal
from .sshchannel import Channel

log = logging.getLogger(__name__)

_URL = re.compile(
    r"ssh://(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]]+\]|[^:/]+)(?::(?P<port>\d+))?(?P<path>/.*)"
)
_SCP = re.compile(r"(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/]+):(?P<path>[^:].*)")


@dataclass(frozen=True, slots=True)
class SshAddress:
    user: str | None
    host: str
    port: int | None
    path: str

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse(url: str) -> SshAddress:
    # Not the scp form's: "ssh://host" would be host "ssh", path "//host".
    m = _URL.fullmatch(url) if url.startswith("ssh://") else _SCP.fullmatch(url)
    if m is None:
        raise ConfigError(
            f"target {url!r} is not an ssh URL; write ssh://user@host[:port]/path or user@host:/path"
        )
    port = m.groupdict().get("port")
    return SshAddress(
        m["user"],
        m["host"],
        int(port) if port else None,
        require_literal(require_absolute(m["path"], url), url),
    )


def _rsync_quote(arg: str) -> str:
    """Quote one word for rsync's own splitting of ``-e`` (rsync, not a shell, splits it)."""
    if arg and not any(c in arg for c in " \t\n'\"\\"):
        return arg
    if "'" in arg:
        raise ConfigError(
            f"ssh option {arg!r} holds a single quote and whitespace; rsync cannot pass it"
        )
    return f"'{arg}'"


# rsync's exits when a run by the private daemon never got in: it, or its forward, is gone.
ROUTE_FAILURES = frozenset({5, 10, 35})

# The remote command: fixed text, quoted once for the remote shell.
REMOTE_RENAME = ("python3", "-c", shlex.quote(beneath.REMOTE_SCRIPT))


class SshTarget(Target):
    kind = "ssh"

    def __init__(self, spec: TargetSpec, *, state_dir: Path, contimeout: int = 10) -> None:
        super().__init__(spec, state_dir=state_dir, contimeout=contimeout)
        self.address = parse(spec.url)
        # Unix socket paths are short (108 bytes): name the socket by a hash of the URL.
        digest = hashlib.sha1(spec.url.encode()).hexdigest()[:16]
        self.control_path = control_path(state_dir, spec.url)
        self._digest = digest
        self._remote_python = True
        # One channel file per target object: two syncs may push to the same URL.
        Channel.count += 1
        fast = state_dir / "ssh" / f"{digest}.{os.getpid()}.{Channel.count}.fast"
        remote = spec.remote_rsync or "rsync"
        self.channel = Channel(
            self.name,
            fast,
            rsync_path=remote,
            timeout=contimeout + 5,
            contimeout=contimeout,
            unfit=sshroute.unfit(spec.extra_rsync_args),
        )

    def ssh_argv(self) -> list[str]:
        """The ssh command rsync runs, multiplexed through a control socket."""
        argv = [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={self.contimeout}",
            "-o", "ServerAliveInterval=15",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self.control_path}",
            "-o", "ControlPersist=300",
        ]  # fmt: skip
        if self.address.port:
            argv += ["-p", str(self.address.port)]
        if self.spec.identity_file:
            argv += ["-i", self.spec.identity_file]
        argv += self.spec.ssh_options
        return argv

    async def rename(self, moves: Sequence[Move]) -> Sequence[Move]:
        """Rename over the multiplexed connection with the remote python3, which opens each
        parent without following a symlink (beneath.REMOTE_SCRIPT: fixed text); the paths
        travel NUL-separated on stdin, so no name ever reaches a shell. Without python3 on
        the remote nothing is renamed: rsync then sends the bytes."""
        todo = [m for m in moves if m.old != m.new]
        if not todo or not self._remote_python:
            return ()
        argv = [*self.channel.rsh([*self.ssh_argv(), "--"]), self.address.login, *REMOTE_RENAME]
        stdin = os.fsencode(self.address.path) + b"\0"
        stdin += b"".join(m.old + b"\0" + m.new + b"\0" for m in todo)
        result = await rsync.run(argv, stdin=stdin, watchdog=self.contimeout + 60, stdout=True)
        if result.code == 127:  # the remote shell found no python3
            log.warning("%s: no python3 on the remote; renames are sent as copies", self.name)
            self._remote_python = False
        if result.code != 0 or len(result.stdout) != len(todo):
            log.debug("%s: remote rename exit %d: %r", self.name, result.code, result.stderr[-300:])
            return ()
        return [m for m, ok in zip(todo, result.stdout, strict=True) if ok == ord("1")]

    def check(self) -> None:
        (self.state_dir / "ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
        self.control_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _require_private(self.control_path.parent)
        _remove_stale(self.state_dir / "ssh", self._digest)

    def connect(self) -> None:
        """Start the remote spawner in the background once (see sshchannel.py), if the
        config says ``ssh_fast_path = true`` (README: why it is off by default)."""
        if self.spec.ssh_fast_path:
            self.channel.start(self.ssh_argv(), self.address.login)

    def transport(self) -> Transport:
        route = self.channel.route
        if route is not None:  # the receiver's private daemon, through the connection
            options = [*route.options(self.contimeout), *self.spec.extra_rsync_args]
            return Transport(route.destination(self.address.path), tuple(options))
        # rsync appends "-l USER HOST" to -e when the destination holds a user, which a
        # "--" could not precede; so the user goes in -e and rsync only appends the host.
        login = ["-l", self.address.user] if self.address.user else []
        ssh = self.channel.rsh([*self.ssh_argv(), *login, "--"])
        options = ["-e", " ".join(_rsync_quote(a) for a in ssh)]
        if self.spec.remote_rsync:
            options.append(f"--rsync-path={self.spec.remote_rsync}")
        options += self.spec.extra_rsync_args
        return Transport(f"{self.address.host}:{self.address.path}", tuple(options))

    async def rerouted(self, used: Transport, result: rsync.Result) -> bool:
        """A run by the private daemon that could not log in (5), connect (10) or wait for
        the daemon (35): the daemon, or the forward to it, is gone, though the spawner may
        not have noticed yet. The channel is set up afresh after the next run, which goes
        by plain ssh meanwhile; one whose route changed since it began goes again too."""
        route = self.channel.route
        if (
            route is not None
            and used.destination == route.destination(self.address.path)
            and result.code in ROUTE_FAILURES
        ):
            log.info(
                "%s: the receiver's private daemon failed (exit %d: %s); set up again",
                self.name,
                result.code,
                rsync.reason(result.stderr),
            )
            await self.channel.reroute()
        return self.transport() != used

    async def reset(self) -> None:
        """End the multiplexing master: every run through it would freeze as the last did."""
        self.channel.drop()
        if self.control_path.exists():
            argv = [*self.ssh_argv(), "-O", "exit", self.address.login]
            result = await rsync.run(argv, watchdog=10, stall=None)
            log.info("%s: closed the shared ssh connection (exit %d)", self.name, result.code)

    def close(self) -> None:
        self.channel.drop()
        if self.control_path.exists():
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                [*self.ssh_argv(), "-O", "exit", "--", self.address.login],
                capture_output=True,
                timeout=10,
                check=False,
            )


# ssh binds "ControlPath.<16 random letters>" first, then renames it: with the NUL, a
# socket name of 108 bytes leaves 90 for the path.
CONTROL_PATH_MAX = 90


def control_path(state_dir: Path, url: str) -> Path:
    """The ssh control socket: in the state directory's ``ssh/``, or, where that path is
    too long for a socket, in a private directory of the runtime directory, named by the
    state directory too (two trigsyncs must not share one master)."""
    digest = hashlib.sha1(url.encode()).hexdigest()[:16]
    ours = state_dir / "ssh" / digest
    if len(os.fsencode(ours)) <= CONTROL_PATH_MAX:
        return ours
    uid = os.geteuid()
    base = "/run" if uid == 0 else os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    key = hashlib.sha1(os.fsencode(state_dir.absolute()) + b"\0" + url.encode()).hexdigest()
    return Path(base) / f"trigsync-ssh-{uid}" / key[:16]


def _require_private(directory: Path) -> None:
    """The control socket's directory must be ours alone (it may lie in /tmp)."""
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise SetupError(
            f"{directory} must be a directory of this user with mode 700 (it holds the ssh "
            "control socket); remove it, or set a shorter state_dir"
        )


def _remove_stale(directory: Path, digest: str) -> None:
    """Remove channel files that a trigsync killed before its clean-up left behind."""
    for path in directory.glob(f"{digest}.*.fast*"):
        pid = path.name.split(".")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)
