"""The daemon route: runs over ssh that cost the receiver a fork, not a shell and an exec.

The spawner (``spawner.py``) starts a private ``rsync --daemon`` on the receiver's
loopback. The multiplexing master forwards a port of this host's loopback to it
(``ssh -O forward -L``, a channel per connection: no session, no shell, no ssh process
per run), and every run then speaks rsync's daemon protocol to that port, logging in as
``trigsync`` with the spawner's secret from a 0600 file (``--password-file``). Per
change that saves, on a 2-core machine with both ends, about two thirds of the CPU of
the spawner's route (sh, cat and ssh here; a shell and an rsync exec there), which is
what bounds changes that follow each other closely.

The forwarded port is open to this host's other users, as the receiver's is to its
users: both lead to a daemon that asks for the secret.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import rsync

log = logging.getLogger(__name__)

USER = "trigsync"  # the daemon's only user (spawner.py's config)
MODULE = "root"  # its only module, at /
FORWARD_TRIES = 5  # a local port picked free can be taken before ssh binds it
# Options a run by rsync:// cannot honour as rsync --server over ssh does: -e would make
# it a daemon over a remote shell to 127.0.0.1, --rsync-path is dropped, and a daemon
# without "charset" refuses --iconv (exit 4, every run).
NOT_FOR_DAEMON = ("-e", "--rsh", "--rsync-path", "--iconv")


def unfit(rsync_args: Sequence[str]) -> str | None:
    """Why the daemon route would not do what the spawner's does for this target, if so:
    ``--rsync-path`` (``"rsync --fake-super"``, ``"sudo rsync"``), ``-e`` and ``--iconv``
    are the receiver's side of an ssh run."""
    for arg in rsync_args:
        name = arg.split("=", 1)[0]
        if name in NOT_FOR_DAEMON or (arg.startswith("-e") and not arg.startswith("--")):
            return f"rsync_args has {name}, which a run by the daemon cannot honour"
    return None


@dataclass(frozen=True, slots=True)
class Route:
    """A forwarded port to the receiver's private daemon, and the secret's file."""

    port: int
    remote_port: int
    password_file: Path

    def destination(self, path: str) -> str:
        """The daemon URL of an absolute receiver path."""
        return f"rsync://{USER}@127.0.0.1:{self.port}/{MODULE}{path}"

    def options(self, contimeout: int) -> list[str]:
        return [
            f"--contimeout={contimeout}",
            "--sockopts=TCP_NODELAY",
            f"--password-file={self.password_file}",
        ]

    def forward(self) -> str:
        return f"127.0.0.1:{self.port}:127.0.0.1:{self.remote_port}"


async def open_route(
    ssh: Sequence[str], login: str, remote_port: int, password_file: Path, contimeout: int
) -> tuple[Route | None, str]:
    """Forward a local port to the daemon and log in once; returns the route, or None and
    why it cannot serve (the runs then take the spawner's route)."""
    failed = "no answer"
    for _ in range(FORWARD_TRIES):
        route = Route(_free_port(), remote_port, password_file)
        argv = [*ssh, "-O", "forward", "-L", route.forward(), "--", login]
        result = await rsync.run(argv, watchdog=contimeout + 5, stall=None)
        if result.code == 0:
            break
        failed = rsync.reason(result.stderr) or f"exit {result.code}"
    else:
        return None, f"ssh -O forward failed ({failed})"
    probe = ["rsync", *route.options(contimeout), "--list-only", route.destination("/")]
    result = await rsync.run(probe, watchdog=contimeout + 5, stdout=True)
    if result.code != 0:
        await close_route(ssh, login, route)
        return None, f"the daemon did not let us in ({rsync.reason(result.stderr)})"
    return route, ""


async def close_route(ssh: Sequence[str], login: str, route: Route) -> None:
    """Stop forwarding to a daemon that is gone, while the master stays (ControlPersist)."""
    argv = [*ssh, "-O", "cancel", "-L", route.forward(), "--", login]
    result = await rsync.run(argv, watchdog=10, stall=None)
    if result.code != 0:
        log.debug("ssh -O cancel -L %s: exit %d", route.forward(), result.code)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
