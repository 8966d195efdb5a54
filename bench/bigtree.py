"""The large-tree workloads (issue 16), trigsync with each watch backend beside lsyncd.

- ``bigtree``: start -> watching on a tree of ``--big-dirs`` directories (as many files),
  against a warm ``find``; RSS; then a storm of new files spread across the whole tree,
  last write -> every new file on the replica. lsyncd gets ``--lsyncd-limit`` seconds to
  place its watches (read from its inotify fd's fdinfo, since it logs nothing then).
- ``neighbour``: trigsync's CPU per write made by another process elsewhere on the same
  filesystem (fanotify sees the whole filesystem; inotify sees only the tree).

No contender runs an initial sync, and the replica starts empty: what is timed is
watching and the storm only (rsync creates a new file's missing parents on the receiver,
as ``--files-from`` implies ``--relative``; a copy of the tree would not fit in tmpfs's
inodes at 1M directories).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from trigsync import inotify as ino

from .context import Context, attempt, put, settle
from .procs import BenchTimeout, Proc, count_lines_of, cpu_seconds, rss_mib
from .report import Goal, Row
from .runners import Lsyncd, Site, Trigsync, site
from .trees import startup_tree

BACKENDS = ("fanotify", "inotify")
STORM_SHARE = 0.2  # storm files per directory of the big tree (200,000 at 1M)
QUEUE = 1 << 20  # max_queued_events for the storm with --raise-watches


def _trigsync(backend: str) -> Trigsync:
    return Trigsync(extra=("--watch-backend", backend))


@contextlib.contextmanager
def sysctl(name: str, value: int) -> Iterator[None]:
    """/proc/sys/fs/``name`` at least ``value`` for the block (as root), restored after."""
    path = Path("/proc/sys/fs") / name
    old = path.read_text()
    if int(old) < value:
        path.write_text(f"{value}\n")
    try:
        yield
    finally:
        path.write_text(old)


@contextlib.contextmanager
def big_queues(ctx: Context) -> Iterator[None]:
    """With --raise-watches, room in both kernels' queues for the storm: at their default
    16,384 the storm overflows, and the reconciling sync that follows would copy the
    whole big tree into the empty replica (more inodes than tmpfs has)."""
    if not ctx.raise_watches:
        yield
        return
    with sysctl("inotify/max_queued_events", QUEUE), sysctl("fanotify/max_queued_events", QUEUE):
        ctx.say(f"fs.inotify and fs.fanotify max_queued_events at least {QUEUE} for the storm")
        yield


@contextlib.contextmanager
def inotify_room(ctx: Context, needed: int) -> Iterator[str | None]:
    """Enough inotify watches for ``needed`` more, raised for the block as root if
    ``ctx.raise_watches``; yields why not if there is not."""
    path = Path("/proc/sys/fs/inotify/max_user_watches")
    limit = ino.limit("max_user_watches") or 0
    used = _watches_in_use()
    if limit - used >= needed + 1000:
        yield None
        return
    # 8x: the watches of a contender that stopped are freed by the kernel lazily, a
    # million of them long after its exit, and count against the limit meanwhile:
    # lsyncd ran out with 3x right after trigsync's inotify run, and placed all of them
    # a minute later. A limit costs no memory by itself.
    wanted = used + 8 * needed
    if not ctx.raise_watches:
        yield (
            f"needs {needed} inotify watches, {limit - used} of {limit} free; run: "
            f"sysctl -w fs.inotify.max_user_watches={wanted} (or pass --raise-watches)"
        )
        return
    old = path.read_text()
    path.write_text(f"{wanted}\n")
    ctx.say(f"raised fs.inotify.max_user_watches from {limit} to {wanted} for this workload")
    try:
        yield None
    finally:
        path.write_text(old)


def _watches_in_use(pid: int | None = None) -> int:
    """inotify watches held by ``pid`` (or by every process we can see)."""
    pids = [str(pid)] if pid is not None else [p for p in os.listdir("/proc") if p.isdigit()]
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{p}/fdinfo"):
                with open(f"/proc/{p}/fdinfo/{fd}", "rb") as f:
                    total += f.read().count(b"inotify wd:")
    return total


# -- bigtree ------------------------------------------------------------------------------


def bigtree(ctx: Context) -> list[Row]:
    dirs = ctx.sizes.big_dirs
    storm_files = max(10, round(dirs * STORM_SHARE))
    start: dict[str, Row] = {}
    rss: dict[str, Row] = {}
    storm: dict[str, Row] = {}
    for b in BACKENDS:
        goal = Goal(1.0, "s") if b == "fanotify" else Goal(2, ratio=True)
        start[b] = Row(
            "bigtree",
            f"[{b}] start -> watching ({dirs} dirs, {dirs} files)",
            "s",
            goal=goal,
            ref="find | wc -l",
        )
        rss[b] = Row("bigtree", f"[{b}] RSS when watching", "MiB", goal=Goal(300, "MiB"))
        storm[b] = Row(
            "bigtree",
            f"[{b}] storm: last write -> all on replica ({storm_files} files across the tree)",
            "s",
            goal=Goal(2.0, "s"),
        )
    rows = [r for b in BACKENDS for r in (start[b], rss[b], storm[b])]
    ctx.say(f"bigtree: building the tree ({dirs} dirs, {dirs} files) under {ctx.tmp}")
    t0 = time.monotonic()
    tree = startup_tree(ctx.tmp / "bigtree-cache", dirs=dirs, files=dirs)
    ctx.say(f"bigtree: tree built in {time.monotonic() - t0:.1f} s")
    count_lines_of(["find", str(tree)], timeout=1800)  # warm the dentry cache
    got = attempt(ctx, rows, "rsync", lambda: count_lines_of(["find", str(tree)], timeout=1800))
    for b in BACKENDS:
        put(start[b], "rsync", got[0] if isinstance(got, tuple) else got)
    with site(ctx.tmp, "bigtree", src=tree) as where:
        paths = _storm_paths(tree, storm_files)
        for b in BACKENDS:
            with inotify_room(ctx, dirs + 1 if b == "inotify" else 0) as why_not:
                if why_not is not None:
                    ctx.say(f"bigtree/{b}: skipped: {why_not}")
                    start[b].notes.append(why_not)
                    put(start[b], "trigsync", "skipped")
                    continue
                with big_queues(ctx):
                    res = attempt(ctx, rows, f"trigsync-{b}", partial(_run, ctx, where, b, paths))
                for row, i in ((start[b], 0), (rss[b], 1), (storm[b], 2)):
                    put(row, "trigsync", res[i] if isinstance(res, tuple) else res)
        if any(t.name == "lsyncd" for t in ctx.tools):
            with inotify_room(ctx, dirs + 1) as why_not:
                cell: float | str = "skipped" if why_not else _lsyncd(ctx, where, dirs)
                put(start["inotify"], "lsyncd", cell)
                if why_not:
                    start["inotify"].notes.append(f"lsyncd: {why_not}")
    for b in BACKENDS:
        start[b].notes.append(f"rsync column: a warm `find` of the tree; {b} backend")
    start["inotify"].notes.append(
        f"lsyncd: start -> all {dirs + 1} watches placed (its inotify fdinfo), "
        f"given {ctx.sizes.lsyncd_limit:g} s"
    )
    storm["fanotify"].notes.append(
        "new files of 1 KiB, one per directory in turn over the whole tree; the replica "
        "starts empty, no initial sync; 'all on replica' polls the replica for each new file; "
        f"with --raise-watches both kernels' max_queued_events are {QUEUE} during it"
    )
    return rows


def _storm_paths(tree: Path, files: int) -> list[Path]:
    dirs = [Path(e) for e, _, _ in os.walk(tree)]
    step = max(1, len(dirs) // files)
    return [dirs[(i * step) % len(dirs)] / f"storm{i:07d}" for i in range(files)]


def _run(
    ctx: Context, where: Site, backend: str, paths: list[Path]
) -> tuple[float, float, float | str]:
    tool = _trigsync(backend)
    t0 = time.monotonic()
    proc = tool.start(where, initial_sync=False)
    try:
        seen = proc.wait_log(" watching ", 1800)
        mib = rss_mib(proc.pid)
        ctx.say(f"bigtree/{backend}: watching after {seen - t0:.3f} s, RSS {mib:.1f} MiB")
        settle()
        lag = _storm(ctx, where, paths)
        ctx.say(f"bigtree/{backend}: storm of {len(paths)} files on the replica {lag} s after")
    finally:
        proc.stop()
        with contextlib.suppress(OSError):
            (ctx.logs / f"bigtree-trigsync-{backend}.log").write_bytes(proc.log_path.read_bytes())
        # The next contender starts from the same tree, with no state: a trigsync finding
        # the state of the last one would see the tree changed while stopped and run a
        # full sync of it.
        shutil.rmtree(where.workdir / "state", ignore_errors=True)
        for p in paths:
            with contextlib.suppress(OSError):
                p.unlink()
            with contextlib.suppress(OSError):
                (where.replica / p.relative_to(where.src)).unlink()
    return seen - t0, mib, lag


def _storm(ctx: Context, where: Site, paths: list[Path]) -> float | str:
    data = b"s" * 1024
    for p in paths:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
    last = time.monotonic()
    missing = [where.replica / p.relative_to(where.src) for p in paths]
    deadline = last + 300
    while missing:
        missing = [p for p in missing if not _arrived(p, len(data))]
        if not missing:
            break
        if time.monotonic() > deadline:
            return f"{len(missing)} missing after 300 s"
        time.sleep(0.05)
    return time.monotonic() - last


def _arrived(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _lsyncd(ctx: Context, where: Site, dirs: int) -> float | str:
    tool = next(t for t in ctx.tools if isinstance(t, Lsyncd))
    limit = ctx.sizes.lsyncd_limit
    t0 = time.monotonic()
    proc = tool.start(where, initial_sync=False)
    try:
        while True:
            if proc.popen.poll() is not None:
                ctx.say(f"bigtree/lsyncd: exited {proc.popen.returncode}: {proc.log_tail(3)}")
                ctx.notes.append(f"bigtree/lsyncd exited: {proc.log_tail(3)[:300]}")
                return f"exited {proc.popen.returncode}"
            placed = _watches_in_use(proc.pid)
            if placed >= dirs + 1:
                seconds = time.monotonic() - t0
                ctx.say(f"bigtree/lsyncd: {placed} watches after {seconds:.1f} s")
                return seconds
            if time.monotonic() - t0 > limit:
                ctx.say(f"bigtree/lsyncd: {placed} of {dirs + 1} watches after {limit:g} s")
                return f"> {limit:g} s ({placed} of {dirs + 1} watches)"
            time.sleep(0.25)
    finally:
        proc.stop()
        with contextlib.suppress(OSError):
            shutil.copyfile(proc.log_path, ctx.logs / "bigtree-lsyncd.log")


# -- neighbour ------------------------------------------------------------------------------

_WRITER = """
import os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
data = b"n" * 100
t0 = time.monotonic()
for i in range(n):
    fd = os.open(f"{root}/n{i % 1000}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
print(n / (time.monotonic() - t0))
"""


def neighbour(ctx: Context) -> list[Row]:
    writes = ctx.sizes.neighbour_writes
    per = Row(
        "neighbour",
        f"trigsync CPU per write elsewhere on the filesystem ({writes} writes)",
        "us",
    )
    core = Row(
        "neighbour",
        "cores used at 50,000 neighbour writes/s (extrapolated)",
        "cores",
        goal=Goal(0.25, "cores"),
    )
    rows = []
    for b in BACKENDS:
        row_per = Row(per.workload, f"[{b}] {per.metric}", per.unit)
        row_core = Row(core.workload, f"[{b}] {core.metric}", core.unit, goal=core.goal)
        got = attempt(ctx, [row_per], f"trigsync-{b}", partial(_neighbour, ctx, b, writes))
        put(row_per, "trigsync", got[0] if isinstance(got, tuple) else got)
        put(row_core, "trigsync", got[1] if isinstance(got, tuple) else None)
        row_per.notes.append(
            "a neighbour process opens, writes 100 B and closes one of 1,000 files in a "
            "sibling of the source on the same filesystem; trigsync's utime+stime over it"
        )
        rows += [row_per, row_core]
    return rows


def _neighbour(ctx: Context, backend: str, writes: int) -> tuple[float, float]:
    with site(ctx.tmp, f"neighbour-{backend}") as where:
        for d in range(10):
            (where.src / f"d{d}").mkdir()
        noise = where.workdir / "neighbour"
        noise.mkdir()
        proc = _trigsync(backend).start(where, initial_sync=False)
        try:
            proc.wait_log(" watching ", 120)
            time.sleep(0.5)
            before = cpu_seconds(proc.pid)
            out = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [sys.executable, "-c", _WRITER, str(noise), str(writes)],
                capture_output=True,
                check=True,
                timeout=600,
            )
            time.sleep(0.5)  # let it drain what the writer queued
            used = cpu_seconds(proc.pid) - before
        finally:
            _stop(proc)
    rate = float(out.stdout)
    per_write = used / writes
    ctx.say(
        f"neighbour/{backend}: {used:.2f} CPU-s for {writes} writes at {rate:.0f}/s: "
        f"{per_write * 1e6:.1f} us each"
    )
    return per_write * 1e6, per_write * 50_000


def _stop(proc: Proc) -> None:
    with contextlib.suppress(BenchTimeout):
        proc.stop()
