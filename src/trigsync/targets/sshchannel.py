"""A path from rsync to the remote rsync that starts no remote shell per run.

sshd runs every remote command through the user's login shell, and a shell whose start-up
reads a heavy rc file (root's ``pyenv init``: 150 ms and more) makes every rsync run, and
every standby that replaces a used one, pay for it. So each ssh target starts ONE
spawner on the receiver, through that shell, once: ``SPAWNER``, fixed text run by the
remote ``python3``. It listens on a random port on the receiver's loopback and, for each
connection that opens with its secret, runs the command that follows with ``/bin/sh -c``
in its place, as the same user, in the same directory and environment the login shell
gave the spawner: the same command line sshd would have handed to the login shell.

Each run then reaches the spawner through the multiplexed connection with ``ssh -W``
(a direct-tcpip channel: no session, no shell). rsync's ``-e`` is ``WRAPPER``, fixed
sh text run locally: it reads the port and secret from this target's channel file
(mode 0600 in the state directory's 0700 ``ssh/``), sends the secret and the command
that rsync asked ssh to run, then relays rsync's stream. Without the file (the channel
is down, or could not be set up) it runs plain ssh, as before.

The secret (256 random bits, on the spawner's stdin and in the channel file, never on a
command line) is what keeps other users of the receiver out: the loopback port is open
to all of them (OpenSSH 9.2's ``-W`` cannot reach a Unix socket). The spawner reads every
header itself and forks only for the right secret, so a connection without it costs a
socket for a few seconds and never keeps a run out (``spawner.py``). The spawner exits when
its stdin closes, which is when the session, the master connection or trigsync ends.

Not covered: the spawner cannot prove itself to the wrapper. Another user who binds the
port in the moment between the spawner's death and trigsync's removal of the channel
file would receive the next run's header and stream (the secret of a spawner that is
gone, the command, the files). Closing that takes an answer from the spawner that the
wrapper checks before it relays rsync's stream: a relay process in the wrapper.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from .. import rsync, spawnfds
from .spawner import HEADER_ROOM, HEADER_TIMEOUT, SPAWNER
from .sshroute import Route, close_route, open_route

log = logging.getLogger(__name__)

SETUP_RETRY = (1.0, 60.0)  # after a set-up that may heal (the receiver was down): doubling
READY_TIMEOUT = 15.0  # a login, the rc file, python3's start: a forced command never answers

# Run by /bin/sh as rsync's -e: $1 the channel file, then ssh's argv up to "--", then
# what rsync appends: the host and the remote command's words, which ssh would join with
# spaces. No single quote in it: rsync's own splitting of -e keeps it one word.
# The channel file's third field, when set, is --no-msgs2stderr, added to the server's
# options: rsync 3.2.4 and later write their errors straight to stderr, which the
# spawner's command has no way back to, so they must come through rsync's own stream
# (older servers do that anyway; the field is empty for them).
# The background cat in the left group is not waited for: rsync waits for its -e child
# to exit while its end of the pipe stays open, so the child must end with ssh.
WRAPPER = r"""f=$1; shift
if ! { read -r port key opt; } 2>/dev/null <"$f"; then exec "$@"; fi
ssh=$1; shift
n=$#; state=0; host=; cmd=
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n - 1))
  case $state in
    0) if [ "$a" = -- ]; then state=1; else set -- "$@" "$a"; fi ;;
    1) host=$a; state=2 ;;
    2) cmd=$a; state=3 ;;
    *) cmd="$cmd $a" ;;
  esac
  if [ "$state" = 3 ] && [ "$a" = --server ] && [ -n "$opt" ]; then cmd="$cmd $opt"; opt=; fi
done
exec 3<&0
{ printf "%s\000%s\000" "$key" "$cmd"; cat <&3 & } |
  "$ssh" -o ControlMaster=no -W "127.0.0.1:$port" "$@" -- "$host"
"""


class Channel:
    """One target's spawner on the receiver: set up in the background, torn down with it."""

    count: ClassVar[int] = 0  # channels made in this process, to name their files

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        rsync_path: str = "rsync",
        timeout: float = READY_TIMEOUT,
        contimeout: int = 10,
        unfit: str | None = None,
    ) -> None:
        self.name = name
        self.unfit = unfit  # why the daemon route would not serve this target (sshroute.py)
        self.contimeout = contimeout
        self.rsync_path = rsync_path  # the remote rsync, as --rsync-path names it
        self.path = path  # the channel file WRAPPER reads: "PORT SECRET"
        self.timeout = timeout
        self.disabled: str | None = None  # why the fast path is off for good
        self.route: Route | None = None  # to the receiver's private daemon, once up
        self._ssh: tuple[list[str], str] | None = None  # ssh argv and login, for the route
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry = SETUP_RETRY[0]
        self._later: asyncio.TimerHandle | None = None

    @property
    def up(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self.path.exists()

    def rsh(self, ssh: Sequence[str], path: Path | None = None) -> list[str]:
        """argv that runs ``ssh`` (ending in ``--``; the host and command follow) through
        the spawner when the channel is up, else as it is."""
        return ["/bin/sh", "-c", WRAPPER, "trigsync-ssh", str(path or self.path), *ssh]

    def start(self, ssh: Sequence[str], login: str) -> None:
        """Set the channel up in the background if it is down; never waits for it."""
        if self.disabled or self.up or (self._task and not self._task.done()) or self._later:
            return
        self._task = asyncio.ensure_future(self._setup(list(ssh), login))

    def _again(self, ssh: list[str], login: str) -> None:
        self._later = None
        self.start(ssh, login)

    async def _setup(self, ssh: list[str], login: str) -> None:
        key = secrets.token_hex(32)
        spawner = (
            "python3",
            "-c",
            shlex.quote(SPAWNER),
            str(HEADER_TIMEOUT),
            str(HEADER_ROOM),
            shlex.quote(self.rsync_path),
        )
        argv = [*ssh, "--", login, *spawner]
        log.debug("%s: starting the remote spawner", self.name)
        with spawnfds.reclaimed():
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=rsync.child_environment(None),
                start_new_session=True,  # a ^C to our group must not cut it before we do
            )
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(key.encode() + b"\n")
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.timeout)
        except TimeoutError:
            line = b""
        port, _, daemon = line.decode("utf-8", "backslashreplace").strip().partition(" ")
        if not port.isdigit():
            await _end(proc)
            err = (await proc.stderr.read()).decode("utf-8", "backslashreplace").strip()
            if not self._failed(proc.returncode, err.splitlines()[-1] if err else ""):
                loop = asyncio.get_running_loop()
                self._later = loop.call_later(self._retry, self._again, ssh, login)
                self._retry = min(self._retry * 2, SETUP_RETRY[1])
            return
        pending = self.path.with_name(self.path.name + ".new")
        _write_private(pending, f"{port} {key}\n")
        opt, why = await self._probe([*self.rsh([*ssh, "--"], pending), login])
        if opt is None:
            pending.unlink(missing_ok=True)
            await _end(proc)
            self.disabled = why
            log.info(
                "%s: fast path off: %s; each run starts the remote shell", self.name, self.disabled
            )
            return
        _write_private(pending, f"{port} {key} {opt}\n")
        os.replace(pending, self.path)
        self._proc = proc
        self._retry = SETUP_RETRY[0]
        log.info("%s: runs reach the remote rsync without a remote shell each", self.name)
        watch = asyncio.ensure_future(self._watch(proc))
        self._task = watch
        await self._open_route(ssh, login, key, daemon)

    async def _open_route(self, ssh: list[str], login: str, key: str, daemon: str) -> None:
        """Take the daemon route (sshroute.py) if the spawner started its daemon."""
        remote, _, why = daemon.partition(" ")
        if self.unfit:
            remote, why = "0", self.unfit
        if not remote.isdigit() or remote == "0":
            log.info("%s: no private daemon on the receiver: %s", self.name, why or daemon)
            return
        secret = self.path.with_name(self.path.name + ".pw")
        _write_private(secret, key + "\n")
        route, why = await open_route(ssh, login, int(remote), secret, self.contimeout)
        if route is None:
            secret.unlink(missing_ok=True)
            log.info("%s: no private daemon on the receiver: %s", self.name, why)
        elif self._proc is None or not self.up:  # the spawner ended meanwhile
            await close_route(ssh, login, route)
            secret.unlink(missing_ok=True)
        else:
            self.route, self._ssh = route, (ssh, login)
            log.info("%s: runs reach a private rsync daemon on the receiver", self.name)

    async def _probe(self, argv: list[str]) -> tuple[str | None, str]:
        """Ask the remote rsync, through the new channel, whether it takes --no-msgs2stderr.

        Returns that option, or "" for an older rsync (which sends its errors in its stream
        anyway); or None and why the channel cannot serve.
        """
        argv += [self.rsync_path, "--no-msgs2stderr", "--version", "2>&1"]
        probe = await rsync.run(argv, stdout=True, watchdog=30)
        out = probe.stdout.decode("utf-8", "backslashreplace").strip()
        if "version" in out:
            return "--no-msgs2stderr", ""
        if "no-msgs2stderr" in out:
            return "", ""
        if out:
            return None, f"the remote rsync does not start: {out.splitlines()[-1]}"
        if probe.stderr.strip():
            return None, f"ssh -W to the receiver's loopback failed ({rsync.reason(probe.stderr)})"
        return None, "the spawner did not answer"

    def _failed(self, code: int | None, err: str) -> bool:
        """Whether the fast path is off for good, from the failed spawner's exit."""
        if code == 255:  # ssh itself failed: the receiver may be down; try again later
            log.debug("%s: no spawner (exit %s): %s", self.name, code, err)
            return False
        if code == 127:  # the login shell found no python3
            self.disabled = "no python3 on the receiver"
        elif code is None or code < 0:
            self.disabled = (
                f"the spawner did not answer in {self.timeout:.0f} s (a forced command?)"
            )
        else:
            self.disabled = f"the spawner exited {code}: {err or 'no message'}"
        log.info(
            "%s: fast path off: %s; each run starts the remote shell", self.name, self.disabled
        )
        return True

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Drop the channel when the spawner's session ends; meanwhile log, at DEBUG, what
        its commands write to stderr outside rsync's stream. That is mostly a standby
        stopped unused ("connection unexpectedly closed"), which plain ssh hid too; the
        remote rsync was seen to start when the channel was set up."""
        assert proc.stderr
        try:
            async for line in proc.stderr:
                text = line.decode("utf-8", "backslashreplace").rstrip()
                log.debug("%s: remote: %s", self.name, text)
            await proc.wait()
        finally:
            route = self._ended(proc)
        if route is not None and self._ssh is not None:  # not when cancelled: at close
            await close_route(*self._ssh, route)

    def _ended(self, proc: asyncio.subprocess.Process) -> Route | None:
        if self._proc is not proc:
            return None
        self.path.unlink(missing_ok=True)
        self._proc = None
        log.info(
            "%s: the remote spawner ended (exit %s); set up again at the next run",
            self.name,
            proc.returncode,
        )
        return self._drop_route()

    def _drop_route(self) -> Route | None:
        """Runs stop taking the daemon route; returns it, for its forward to be cancelled."""
        route, self.route = self.route, None
        if route is not None:
            route.password_file.unlink(missing_ok=True)
        return route

    async def reroute(self) -> None:
        """The daemon route failed: drop the channel (its spawner, the daemon with it, and
        the forward) for a fresh one; the runs meanwhile go by plain ssh."""
        ssh, route = self._ssh, self.route
        self.drop()
        if route is not None and ssh is not None:
            await close_route(*ssh, route)

    def drop(self) -> None:
        """Stop using the channel now (its connection froze, or the target closes: the
        master's exit, which follows, ends the route's forward too)."""
        self.path.unlink(missing_ok=True)
        self._drop_route()
        if self._later is not None:
            self._later.cancel()
            self._later = None
        proc, self._proc = self._proc, None
        if proc is not None:  # the session ends: the spawner's stdin closes, it exits
            rsync.signal_child(proc, signal.SIGTERM)


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin:
        proc.stdin.close()
    await rsync.stop(proc, grace=2.0)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
