"""The end-to-end canary: a probe file written into a source, read back from each target.

The probe is confirmed by reading the target itself (the file on a local directory, opened
without following a symlink; on a daemon or an ssh host, the file pulled back with rsync
into a temporary directory), and compared byte for byte. A run that rsync reported as
successful proves nothing here: only the bytes on the receiver count.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import secrets
import socket
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from . import rsync
from .dispatch import Dispatcher
from .errors import SyncError
from .status import EngineStatus, TargetStatus
from .syncjob import SyncJob
from .targets import LocalTarget, Target

log = logging.getLogger(__name__)

PREFIX = ".trigsync-canary-"
FIRST_POLL = 0.05  # the round trip is measured to about this, doubling up to MAX_POLL
MAX_POLL = 1.0


class Outcome(NamedTuple):
    """How one target answered one canary."""

    key: str  # the dispatcher's key: "SOURCE -> TARGET"
    state: str  # ok | failed | skipped (a paused target)
    seconds: float | None = None  # write to confirmed read-back, when ok
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return self._asdict()


def probe_name(configured: str = "") -> str:
    return configured or PREFIX + socket.gethostname()


class Canary:
    """Runs canaries one at a time and keeps each target's last outcome."""

    def __init__(self, *, name: str = "", timeout: float = 30.0) -> None:
        self.name = probe_name(name)
        self.timeout = timeout
        self.last: dict[str, Outcome] = {}
        self._lock = asyncio.Lock()  # two canaries would write the same probe file

    async def run(self, jobs: Sequence[SyncJob], timeout: float | None = None) -> list[Outcome]:
        """One canary through every sync at once; returns every target's outcome."""
        async with self._lock:
            rounds = await asyncio.gather(
                *(self._one(job, timeout or self.timeout) for job in jobs)
            )
        outcomes = [o for r in rounds for o in r]
        self.last.update((o.key, o) for o in outcomes)
        for o in outcomes:
            if o.state == "failed":
                log.error("canary %s: %s", o.key, o.error)
            else:
                log.info("canary %s: %s%s", o.key, o.state, _took(o.seconds))
        return outcomes

    async def _one(self, job: SyncJob, timeout: float) -> list[Outcome]:
        name = os.fsencode(self.name)
        dispatchers = job.dispatchers
        if job.excludes.excludes(name, is_dir=False):
            why = f"the canary file {self.name} is excluded in this sync; set canary_name"
            return [Outcome(d.key, "failed", error=why) for d in dispatchers]
        content = (
            f"trigsync canary {socket.gethostname()} pid {os.getpid()} "
            f"{time.time():.6f} {secrets.token_hex(8)}\n"
        ).encode()
        path = job.source + b"/" + name
        deadline = time.monotonic() + timeout
        try:
            await _claim(path, content, deadline)
        except OSError as exc:
            why = f"cannot write the canary file {os.fsdecode(path)}: {exc.strerror}"
            return [Outcome(d.key, "failed", error=why) for d in dispatchers]
        started = time.monotonic()  # the round trip starts once the probe is ours
        try:
            return list(
                await asyncio.gather(
                    *(
                        self._wait(d, content, (started, deadline, timeout), job.config.rsync_path)
                        for d in dispatchers
                    )
                )
            )
        finally:
            with contextlib.suppress(OSError):
                if _read_local(path) == content:  # still ours
                    os.unlink(path)  # its deletion replicates like any other change

    async def _wait(
        self,
        dispatcher: Dispatcher,
        content: bytes,
        clock: tuple[float, float, float],  # started, deadline, the timeout asked for
        rsync_path: str,
    ) -> Outcome:
        started, deadline, asked = clock
        timeout = max(deadline - started, FIRST_POLL)  # less if another canary held the name
        if dispatcher.paused:
            return Outcome(dispatcher.key, "skipped", error="paused: it arrives after resume")
        pause = FIRST_POLL
        seen: str = "it never arrived"
        while True:
            try:
                held = await read_back(
                    dispatcher.target, self.name, rsync_path=rsync_path, timeout=timeout
                )
            except (SyncError, OSError) as exc:
                seen = f"cannot read it back: {exc}"
            else:
                if held == content:
                    return Outcome(dispatcher.key, "ok", time.monotonic() - started)
                seen = "it never arrived" if held is None else "the target holds other bytes"
            left = deadline - time.monotonic()
            if left <= 0:
                error = dispatcher.status().last_error
                why = f"not on the target within {asked:g} s: {seen}"
                return Outcome(
                    dispatcher.key, "failed", error=why + (f"; {error}" if error else "")
                )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, MAX_POLL)


async def _claim(path: bytes, content: bytes, deadline: float) -> None:
    """Create the probe, never over a file that is not a canary: another daemon's live
    probe (two daemons on one source) is waited out, a dead one's is replaced."""
    while True:
        try:
            _write(path, content)
            return
        except FileExistsError:
            pass
        try:
            held = _read_local(path) if stat.S_ISREG(os.lstat(path).st_mode) else None
        except FileNotFoundError:
            continue  # removed meanwhile: try again
        owner = _PROBE.match(held or b"")
        if owner is None:
            raise OSError(
                errno.EEXIST,
                "a file that is not a canary probe has its name; set canary_name to a "
                "name no file in the source has",
            )
        host, pid = owner[1].decode(errors="replace"), int(owner[2])
        if host == socket.gethostname() and (pid == os.getpid() or not _alive(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a canary that died (ours run one at a time)
            continue
        if time.monotonic() >= deadline:
            raise OSError(errno.EBUSY, f"another canary (pid {pid} on {host}) still holds it")
        await asyncio.sleep(FIRST_POLL)


_PROBE = re.compile(rb"trigsync canary (\S+) pid (\d+) ")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(path: bytes, content: bytes) -> None:
    # O_EXCL: never over a file of the source. O_NOFOLLOW: a symlink planted under the
    # canary's name must not redirect the write.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)


def _took(seconds: float | None) -> str:
    return "" if seconds is None else f" in {seconds:.3f} s"


async def read_back(target: Target, name: str, *, rsync_path: str, timeout: float) -> bytes | None:
    """The probe's bytes as the target holds them now, or None if it holds no such file."""
    if isinstance(target, LocalTarget):
        return _read_local(os.path.join(target.path, name))
    transport = target.transport()
    with tempfile.TemporaryDirectory(prefix="trigsync-canary-") as tmp:
        argv: list[rsync.Arg] = [
            rsync_path,
            f"--timeout={max(1, round(timeout))}",
            *transport.options,
            transport.destination + name,
            tmp + "/",
        ]
        result = await rsync.run(argv, env=transport.env, watchdog=timeout + 10)
        if result.code == rsync.PARTIAL and b"No such file" in result.stderr:
            return None
        rsync.raise_for(result, f"target {target.name}")
        return _read_local(os.path.join(tmp, name))


def _read_local(path: str | bytes) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # a symlink under the probe's name is not the probe
        raise
    with os.fdopen(fd, "rb") as fh:
        return fh.read(1 << 20)


def annotate(status: EngineStatus, last: Mapping[str, Outcome]) -> EngineStatus:
    """The snapshot with each target's last canary round trip or error filled in."""
    if not last:
        return status

    def one(source: str, t: TargetStatus) -> TargetStatus:
        outcome = last.get(f"{source} -> {t.target}")
        if outcome is None or outcome.state == "skipped":
            return t
        return t._replace(canary_rtt=outcome.seconds, canary_error=outcome.error)

    syncs = tuple(
        s._replace(targets=tuple(one(s.source, t) for t in s.targets)) for s in status.syncs
    )
    return status._replace(syncs=syncs)
