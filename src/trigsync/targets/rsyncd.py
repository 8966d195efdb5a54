"""rsync daemon modules: ``rsync://user@host[:port]/module[/dir]`` or ``user@host::module[/dir]``."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import rsync
from ..changes import Move
from ..errors import ConfigError, SetupError
from ..rsync import Options, Transport
from .base import Runs, Target, TargetSpec, require_literal

_URL = re.compile(
    r"rsync://(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]]+\]|[^:/]+)(?::(?P<port>\d+))?/(?P<path>.*)"
)
_DCOLON = re.compile(r"(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/]+)::(?P<path>.*)")


@dataclass(frozen=True, slots=True)
class DaemonAddress:
    user: str | None
    host: str
    port: int
    module: str
    subdir: str

    @property
    def destination(self) -> str:
        user = f"{self.user}@" if self.user else ""
        sub = f"{self.subdir}/" if self.subdir else ""
        return f"rsync://{user}{self.host}:{self.port}/{self.module}/{sub}"


def parse(url: str) -> DaemonAddress:
    """Parse either daemon syntax. After ``::`` comes the module, never a user."""
    m = _URL.fullmatch(url) or _DCOLON.fullmatch(url)
    if m is None:
        raise ConfigError(
            f"target {url!r} is not an rsync daemon URL; write rsync://user@host[:port]/module "
            "or user@host::module"
        )
    module, _, subdir = require_literal(m["path"], url).strip("/").partition("/")
    if not module:
        raise ConfigError(
            f"target {url!r} names no module; the module follows the host, "
            "as in rsync://user@host/www or user@host::www"
        )
    port = int(m.groupdict().get("port") or 873)
    if not 0 < port < 65536:
        raise ConfigError(f"target {url!r}: port {port} is out of range 1-65535")
    return DaemonAddress(m["user"], m["host"], port, module, subdir.strip("/"))


def check_password_file(path: str, url: str) -> None:
    """The checks rsync makes, done before the first run so the error says what to fix."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SetupError(
            f"target {url}: password file {path} does not exist; create it with the module's "
            f"password and run: chmod 600 {path}"
        ) from None
    except OSError as exc:
        raise SetupError(f"target {url}: cannot read password file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise SetupError(f"target {url}: password file {path} is not a regular file")
    if st.st_mode & 0o006:
        raise SetupError(
            f"target {url}: password file {path} is readable by others and rsync refuses it; "
            f"run: chmod 600 {path}"
        )
    if os.geteuid() == 0 and st.st_uid != 0:
        raise SetupError(
            f"target {url}: password file {path} must be owned by root when running as root; "
            f"run: chown root {path}"
        )
    if not os.access(path, os.R_OK):
        raise SetupError(f"target {url}: password file {path} is not readable by this user")


log = logging.getLogger(__name__)

# A renamed directory pays for a --link-dest run of its own from this many bytes or files.
# A run costs one connection, 10-20 ms; resending a small file costs the receiver 0.3-0.5
# ms on a disk (temp file, write, rename), so about 32 files break even before a single
# byte crosses a real network. (At 100, churn on ext4 took 1.4-2.5 s; at 32, 0.7-1.3 s.)
WORTH_LINKING_BYTES = 1 << 20
WORTH_LINKING_FILES = 32
LINK_DEST_RUNS = 4  # at once


def _worth_linking(directory: bytes) -> bool:
    """Whether a directory holds enough to rebuild rather than resend (stops counting early)."""
    total = files = 0
    stack = [directory]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        files += 1
                        total += entry.stat(follow_symlinks=False).st_size
                        if total >= WORTH_LINKING_BYTES or files >= WORTH_LINKING_FILES:
                            return True
        except OSError:
            continue
    return False


class DaemonTarget(Target):
    kind = "rsyncd"

    def __init__(self, spec: TargetSpec, *, state_dir: Path, contimeout: int = 10) -> None:
        super().__init__(spec, state_dir=state_dir, contimeout=contimeout)
        self.address = parse(spec.url)

    def check(self) -> None:
        if self.spec.password_file:
            check_password_file(self.spec.password_file, self.spec.url)
        elif self.address.user and not self.spec.password:
            raise ConfigError(
                f"target {self.spec.url} logs in as {self.address.user!r} but has no password; "
                "give --password-file FILE (mode 600) or password_file in the config, "
                "or set RSYNC_PASSWORD"
            )

    async def apply_moves(
        self, moves: Sequence[Move], source: bytes, options: Options, run: Runs
    ) -> int:
        """A daemon cannot rename: build each renamed directory from the old one instead.

        Every run goes through ``run``: at a daemon's ``max connections`` the rebuild's
        two or three connections meet the standby's, and a refused one must wait for a
        slot rather than give the rename up (which sends the whole directory again)."""
        transport = self.transport()
        slots = asyncio.Semaphore(LINK_DEST_RUNS)

        async def link(move: Move) -> bool:
            argv = rsync.link_dest_argv(source, move.old, move.new, options, transport)
            if argv is None:  # excludes it cannot honour: the batch sends the bytes
                return False
            async with slots:
                result = await run(argv, b"")
            if result.outcome is not rsync.Outcome.OK:
                log.debug("%s: link-dest for %r failed: exit %d", self.name, move.new, result.code)
            return result.outcome is rsync.Outcome.OK

        async def safe(move: Move) -> bool:
            async with slots:
                return await self._safe_to_link_from(move, source, options, run)

        # A renamed file, or a small directory, is cheaper to send again than to rebuild
        # with an rsync connection of its own.
        worth = [m for m in moves if m.old != m.new and _worth_linking(source + b"/" + m.new)]
        if not worth:
            return 0
        # The listings may run beside the run that makes the parents real: an old copy
        # seen through a symlinked parent is gone once that parent is a directory.
        made, *checked = await asyncio.gather(
            self._make_real_dirs(worth, source, options, run), *(safe(m) for m in worth)
        )
        if not made:
            return 0
        return sum(
            await asyncio.gather(*(link(m) for m, ok in zip(worth, checked, strict=True) if ok))
        )

    async def _make_real_dirs(
        self, moves: Sequence[Move], source: bytes, options: Options, run: Runs
    ) -> bool:
        """Make each new directory, every directory above it and above the old one, real
        directories on the receiver, as the source has them.

        A --link-dest run names its destination ``module/new/`` and looks files up below
        ``module/old/``, and rsync's receiver enters both paths as given: a symlink the
        replica holds there (the source had one until the rename) would take the rebuild
        and its --delete, or the lookups, wherever it points. A listed run replaces such a
        symlink, and any in the implied parents, with a directory, or deletes what the
        source no longer has. Nothing else writes to the target while moves are applied.
        """
        paths = {m.new for m in moves}
        paths.update(parent for m in moves if (parent := m.old.rpartition(b"/")[0]))
        transport = self.transport()
        argv = rsync.batch_argv(source, options, transport)
        result = await run(argv, rsync.path_list(sorted(paths)))
        if result.outcome is not rsync.Outcome.OK:
            log.debug("%s: directories for link-dest: exit %d", self.name, result.code)
        return result.outcome is rsync.Outcome.OK

    async def _safe_to_link_from(
        self, move: Move, source: bytes, options: Options, run: Runs
    ) -> bool:
        """Whether the receiver's old directory is a directory, and holds no symlink where
        the new one has a directory (a lookup below it would follow that symlink)."""
        argv = rsync.list_argv(move.old, options, self.transport())
        result = await run(argv, b"")
        if result.outcome is not rsync.Outcome.OK:
            return False
        unsafe = symlinked_dirs(result.stdout, move.old, source + b"/" + move.new)
        if unsafe:
            log.info(
                "%s: %r holds symlinks where %r has directories; sending it",
                self.name,
                move.old,
                move.new,
            )
        return not unsafe

    def transport(self) -> Transport:
        options = [f"--contimeout={self.contimeout}", "--sockopts=TCP_NODELAY"]
        if self.spec.password_file:
            options.append(f"--password-file={self.spec.password_file}")
        options += self.spec.extra_rsync_args
        secret = self.spec.password if not self.spec.password_file else None
        env = {"RSYNC_PASSWORD": secret} if secret else None
        return Transport(self.address.destination, tuple(options), env)


def symlinked_dirs(listing: bytes, old: bytes, new: bytes) -> bool:
    """From ``--list-only -r`` of ``old`` on the receiver: True unless ``old`` is a
    directory whose symlinks all sit where ``new`` (a source path) has no directory.
    A name that cannot be read back exactly (rsync escaped it) counts as unsafe."""
    lines = listing.splitlines()
    base = old.rpartition(b"/")[2]
    if not lines or lines[0][:1] != b"d" or lines[0].split(None, 4)[-1] != base:
        return True
    for line in lines[1:]:
        if line[:1] != b"l":
            continue
        fields = line.split(None, 4)
        if len(fields) < 5 or b"\\#" in fields[4] or not fields[4].startswith(base + b"/"):
            return True
        rest = fields[4][len(base) + 1 :]
        # "name -> target", or a name holding " -> ": try every cut
        cuts = [rest] + [rest[:i] for i in range(len(rest)) if rest.startswith(b" -> ", i)]
        if any(_is_dir(new + b"/" + name) for name in cuts):
            return True
    return False


def _is_dir(path: bytes) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
