"""Progress of a full sync (initial or reconciling), from rsync's ``--info=progress2``.

rsync rewrites one line with ``\\r``: bytes so far, percent, rate, time (the ETA while a
file is in transfer, the elapsed time when one completes), then ``(xfr#N, to-chk=R/T)``,
or ``ir-chk`` while the file list is still being built. On a terminal trigsync redraws a
bar from it; anywhere else it logs one line every ``LOG_EVERY`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TextIO

from . import rsync

log = logging.getLogger(__name__)

LOG_EVERY = 10.0
BAR = 24

_LINE = re.compile(
    r"\s*(?P<bytes>[\d,]+)\s+(?P<percent>\d+)%\s+(?P<rate>\S+/s)\s+(?P<time>\d+:\d\d:\d\d)"
    r"(?:\s+\(xfr#(?P<xfr>\d+), (?P<chk>ir|to)-chk=(?P<left>\d+)/(?P<total>\d+)\))?"
)


class Progress(NamedTuple):
    bytes: int
    percent: int
    rate: str  # as rsync prints it, e.g. 12.34MB/s
    time: str  # h:mm:ss: ETA while a file is in transfer
    files: int = 0  # files transferred so far
    left: int | None = None  # entries still to check
    total: int | None = None  # entries known so far (grows while ``listing``)
    listing: bool = False  # rsync is still building the file list (ir-chk)


def parse(line: str) -> Progress | None:
    """One ``--info=progress2`` line, or None for anything else rsync printed."""
    m = _LINE.fullmatch(line.strip())
    if m is None:
        return None
    return Progress(
        int(m["bytes"].replace(",", "")),
        int(m["percent"]),
        m["rate"],
        m["time"],
        int(m["xfr"] or 0),
        int(m["left"]) if m["left"] else None,
        int(m["total"]) if m["total"] else None,
        m["chk"] == "ir",
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def describe(p: Progress) -> str:
    """e.g. '45%, 1.2 GiB, 12.34MB/s, ETA 0:00:05, 120 files sent, 80/200 to check'."""
    parts = [f"{p.percent}%", _size(p.bytes), p.rate, f"ETA {p.time}", f"{p.files} files sent"]
    if p.total is not None:
        listing = "+ (still listing)" if p.listing else ""
        parts.append(f"{p.left}/{p.total}{listing} to check")
    return ", ".join(parts)


def bar(name: str, p: Progress) -> str:
    filled = BAR * min(p.percent, 100) // 100
    return f"\r{name} [{'#' * filled}{'.' * (BAR - filled)}] {describe(p)}\x1b[K"


class Reporter:
    """Shows one full sync's progress: a bar on a terminal, else a log line now and then."""

    def __init__(
        self,
        name: str,
        *,
        stream: TextIO | None = None,
        every: float = LOG_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.stream = stream
        self.every = every
        self.clock = clock
        self.last: Progress | None = None
        self._logged = clock()

    def update(self, p: Progress) -> None:
        self.last = p
        if self.stream is not None:
            self.stream.write(bar(self.name, p))
            self.stream.flush()
        elif self.clock() - self._logged >= self.every:
            self._logged = self.clock()
            log.info("%s: full sync %s", self.name, describe(p))

    def done(self) -> None:
        if self.stream is not None and self.last is not None:
            self.stream.write("\n")
            self.stream.flush()


class FullSync:
    """Runs a full sync's rsync with ``--info=progress2`` and reports its progress."""

    def __init__(
        self, name: str, *, every: float = LOG_EVERY, stall: float | None = rsync.STALL
    ) -> None:
        self.name = name
        self.every = every
        self.stall = stall  # the sync's timeout: no progress for this long ends the run
        self.current: Reporter | None = None  # while a full sync runs

    async def __call__(
        self, argv: Sequence[rsync.Arg], env: Mapping[str, str] | None, stdin: bytes | None
    ) -> rsync.Result:
        # The option goes before SRC and DEST: both stay the last two words.
        argv = [*argv[:-2], "--info=progress2", *argv[-2:]]
        tty = sys.stderr if sys.stderr.isatty() else None
        self.current = Reporter(self.name, stream=tty, every=self.every)
        try:
            return await run(argv, env, self.current.update, stall=self.stall, stdin=stdin)
        finally:
            self.current.done()
            self.current = None


async def run(
    argv: Sequence[rsync.Arg],
    env: Mapping[str, str] | None,
    report: Callable[[Progress], None],
    *,
    stall: float | None = rsync.STALL,
    stdin: bytes | None = None,
) -> rsync.Result:
    """Run rsync once, feeding each progress line to ``report`` as it comes; a run with no
    progress for ``stall`` seconds is ended, as in ``rsync.finish``. ``stdin`` goes to
    rsync's standard input (its --exclude-from=- rules)."""
    started = time.monotonic()
    proc = await rsync.spawn(argv, env=env, stdout=True, stdin=stdin is not None)
    assert proc.stdout is not None and proc.stderr is not None

    async def feed() -> None:
        if proc.stdin is None:
            return
        with contextlib.suppress(ConnectionError):  # rsync gone: its exit code says why
            proc.stdin.write(stdin or b"")
            await proc.stdin.drain()
        proc.stdin.close()

    async def read_progress(stream: asyncio.StreamReader) -> None:
        tail = b""
        while chunk := await stream.read(65536):
            *lines, tail = re.split(rb"[\r\n]", tail + chunk)
            for line in reversed(lines):  # only the newest of a burst matters
                p = parse(line.decode("ascii", "replace"))
                if p is not None:
                    report(p)
                    break

    talk = asyncio.ensure_future(
        asyncio.gather(read_progress(proc.stdout), proc.stderr.read(), proc.wait(), feed())
    )
    ended = await rsync.supervise(proc, talk, started, stall=stall)
    stderr = talk.result()[1] if talk.done() and not talk.cancelled() else b""
    stalled = None
    if ended == "stall" and stall is not None:
        stalled = stall
        stderr += b"trigsync: no progress for %d s; rsync stopped\n" % stall
    code = proc.returncode if proc.returncode is not None else -9
    return rsync.Result(code, stderr, time.monotonic() - started, b"", stalled)
