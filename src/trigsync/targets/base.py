"""The Target family: one base, one module per kind, each built from a URL."""

from __future__ import annotations

import abc
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .. import ancestry, rsync
from ..changes import Move
from ..excludes import rebase
from ..rsync import Options, Transport

# One rsync run on a connection of its own (argv, the list on stdin), which keeps to a
# daemon's max connections: the runner's, so that a refusal frees its standbys' slots
# and the run is asked again once a slot is free (runner.Runner.fresh).
Runs = Callable[[Sequence[rsync.Arg], bytes], Awaitable[rsync.Result]]


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A target as configured: plain data, turned into a Target by ``targets.build``."""

    url: str
    password_file: str | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()
    remote_rsync: str | None = None
    ssh_fast_path: bool = False  # a spawner on the receiver, so no run starts its shell
    max_parallel: int = 2
    extra_rsync_args: tuple[str, ...] = field(default=())
    on_success: tuple[str, ...] = ()  # hook argv for this target; else the sync's
    on_failure: tuple[str, ...] = ()
    # RSYNC_PASSWORD from trigsync's environment, kept for the daemon targets that log in
    # without a password_file; it reaches their rsync runs only (see config.py).
    password: str | None = field(default=None, repr=False, compare=False)


class Target(abc.ABC):
    """Where one replica lives, and how rsync reaches it."""

    kind: ClassVar[str]

    def __init__(self, spec: TargetSpec, *, state_dir: Path, contimeout: int = 10) -> None:
        self.spec = spec
        self.state_dir = state_dir
        self.contimeout = contimeout
        # Set by ``run --once``: no later run, so nothing is set up for one (an ssh
        # channel's set-up that asyncio.run cancelled at the end was seen to hang there,
        # in asyncio's start of its subprocess, and --once never exited).
        self.one_shot = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def name(self) -> str:
        """How the target is shown in logs and status: its URL, which never holds a secret."""
        return self.spec.url

    @abc.abstractmethod
    def transport(self) -> Transport:
        """Destination, options and environment for every rsync run to this target."""

    async def apply_moves(
        self, moves: Sequence[Move], source: bytes, options: Options, run: Runs
    ) -> int:
        """Move the target's copies for these renames, best effort; returns how many moved.

        The batch that follows lists both ends of every rename, so a move that fails here
        only costs bytes: rsync then sends the new path whole. A renamed directory carries
        whatever the target held below it, including what the source lost in the
        meantime, so each one is then made equal to the source, recursively: after a
        rename that run finds nothing to send, only leftovers to delete.
        """
        moves = [m for m in moves if _same_excludes_below(source, m, options.excludes)]
        moved = [m for m in await self.rename(moves) if m.old != m.new]
        # Only real directories (isdir would follow a symlink), and below real ones only.
        dirs = [m.new for m in moved if _real_dir(source + b"/" + m.new)]
        dirs = [d for d in ancestry.confine_below(source, dirs) if _real_dir(source + b"/" + d)]
        if dirs:
            transport = self.transport()
            argv = rsync.batch_argv(source, options, transport, recursive=True)
            result = await run(argv, rsync.path_list(dirs))
            if not result.refused:  # a refused path (23, 11) is the main batch's to report
                rsync.raise_for(result, f"target {self.name}")
        return len(moved)

    async def rename(self, moves: Sequence[Move]) -> Sequence[Move]:
        """Rename the target's copies where this kind of target can; returns those renamed."""
        return ()

    async def rerouted(self, used: Transport, result: rsync.Result) -> bool:
        """After a run with ``used`` failed: whether the next run goes another way and
        should be tried at once (an ssh target's private daemon failed, say)."""
        return False

    async def reset(self) -> None:  # noqa: B027 - most targets share no connection
        """Drop a connection shared between runs, after a run froze on it."""

    def connect(self) -> None:  # noqa: B027 - most targets set nothing up ahead
        """After each run: start, in the background, what makes later runs faster."""

    def check(self) -> None:  # noqa: B027 - most targets need no pre-flight check
        """Raise SetupError or ConfigError if the target cannot work as configured."""

    def close(self) -> None:  # noqa: B027 - most targets hold nothing open
        """Release anything held open for this target (connections, sockets)."""


def _real_dir(path: bytes) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _same_excludes_below(source: bytes, move: Move, excludes: Sequence[str]) -> bool:
    """Whether the excludes leave out the same paths below both ends of a rename.

    The replica's copy of the old directory holds what was sent for the old name: moved
    in place under a name where more is excluded (``site_new`` to ``site`` with
    ``/site/.env``), it would carry those files there. rsync never deletes an excluded
    file on the receiver, so they would stay. Such a rename is sent as bytes instead.
    """
    if not excludes:
        return True
    try:
        if not stat.S_ISDIR(os.lstat(source + b"/" + move.new).st_mode):
            return True  # a file or symlink has nothing below it
    except OSError:
        pass  # gone since: assume a directory
    old = rebase(excludes, move.old)
    return old is not None and old == rebase(excludes, move.new)


WILDCARDS = "*?["


def require_literal(path: str, url: str) -> str:
    """A remote target's path must hold no wildcard: the receiving rsync glob-expands the
    path it is given (over ssh, with -s, and as a daemon alike), so ``/srv/site[1]`` would
    replicate into, and delete from, ``/srv/site1`` when that exists."""
    from ..errors import ConfigError

    if any(c in path for c in WILDCARDS):
        raise ConfigError(
            f"target {url!r}: path {path!r} holds a wildcard ({WILDCARDS}), which the remote "
            "rsync would expand to other directories; rename the directory"
        )
    return path


def require_absolute(path: str, url: str) -> str:
    from ..errors import ConfigError

    if not path.startswith("/"):
        raise ConfigError(f"target {url!r}: path {path!r} must be absolute, e.g. /var/www")
    return os.path.normpath(path) + "/"
