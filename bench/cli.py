"""``python -m bench [--workloads latency,storm,...] [--quick]``: run, print, save the table."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .context import Context, Sizes
from .report import Row, render, write_latest
from .runners import Lsyncd, Replicator, Trigsync, tool_versions
from .workloads import WORKLOADS

CACHE = Path(tempfile.gettempdir()) / "trigsync-bench-cache"
SCRATCH = Path(tempfile.gettempdir()) / "trigsync-bench"
TMPFS = Path("/dev/shm")
PARALLEL = 2  # trigsync's default max_parallel, given to lsyncd as maxProcesses
TMPFS_NEEDED = 2 << 30  # bytes free: two storm trees and two copies of the big file, with room


def default_root() -> Path:
    """Where the trees go: tmpfs when there is room, so a run measures the replicators.

    On this project's build machines ext4 took anywhere from 0.5 to 17 s of kernel CPU
    to create the 20,000-file storm tree, depending on how much a previous clean-up had
    just freed (the disk is mounted with ``discard``); tmpfs takes 0.47 s every time.
    ``--root`` puts the trees on a disk instead.
    """
    try:
        st = os.statvfs(TMPFS)
    except OSError:
        return SCRATCH
    if st.f_bavail * st.f_frsize < TMPFS_NEEDED:
        return SCRATCH
    return TMPFS / "trigsync-bench"


RECEIVERS = {"stock": "stock daemon", "tuned": "tuned daemon", "ssh": "ssh"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="trigsync vs lsyncd vs plain rsync, against one loopback rsync daemon",
    )
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of: {', '.join(WORKLOADS)} (default: all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a fast sanity run: sizes x0.1, 30 latency samples, 5 s idle",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply the storm, churn, bigfile and startup sizes (default 1, --quick 0.1)",
    )
    p.add_argument("--idle-seconds", type=float, default=None, help="idle window (default 30)")
    p.add_argument(
        "--latency-samples", type=int, default=None, help="writes back to back (default 100)"
    )
    p.add_argument("--slow-samples", type=int, default=None, help="writes 40 s apart (default 5)")
    p.add_argument("--no-lsyncd", action="store_true", help="leave lsyncd out")
    p.add_argument(
        "--receivers",
        default=None,
        help="latency: comma-separated subset of stock,tuned,ssh (default: all three)",
    )
    p.add_argument(
        "--big-dirs",
        type=int,
        default=None,
        help="bigtree: directories (and files); default 100000",
    )
    p.add_argument(
        "--lsyncd-limit", type=float, default=None, help="bigtree: seconds for lsyncd (300)"
    )
    p.add_argument(
        "--neighbour-writes", type=int, default=None, help="neighbour: writes (default 50000)"
    )
    p.add_argument(
        "--raise-watches",
        action="store_true",
        help="bigtree, as root: raise fs.inotify.max_user_watches for the inotify contenders "
        "while they run (restored after)",
    )
    p.add_argument("--cache-dir", type=Path, default=CACHE, help=f"kept trees (default {CACHE})")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help=f"where sources and replicas go (default {TMPFS}/trigsync-bench if tmpfs has "
        f"room, else {SCRATCH})",
    )
    return p


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` lives on, from /proc/self/mounts."""
    best, kind = "", "unknown filesystem"
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        resolved = str(path.resolve())
        for line in mounts:
            fields = line.split()
            point = fields[1].replace("\\040", " ")
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fields[2]
    return kind


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = Sizes()
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    if scale != 1.0:
        sizes = sizes.scaled(scale)
    if args.quick:
        sizes = dataclasses.replace(
            sizes,
            latency_samples=30,
            latency_paced_samples=10,
            latency_slow_samples=2,
            idle_seconds=5.0,
        )
    if args.idle_seconds is not None:
        sizes = dataclasses.replace(sizes, idle_seconds=args.idle_seconds)
    if args.latency_samples is not None:
        sizes = dataclasses.replace(sizes, latency_samples=args.latency_samples)
    if args.slow_samples is not None:
        sizes = dataclasses.replace(sizes, latency_slow_samples=args.slow_samples)
    for key in ("big_dirs", "lsyncd_limit", "neighbour_writes"):
        if getattr(args, key) is not None:
            sizes = dataclasses.replace(sizes, **{key: getattr(args, key)})
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    sizes = _sizes(args)
    bad = [r for r in (args.receivers or "").split(",") if r.strip() and r.strip() not in RECEIVERS]
    if bad:
        parser.error(f"unknown receiver(s) {', '.join(bad)}; choose from stock, tuned, ssh")

    notes: list[str] = []
    tools: list[Replicator] = [Trigsync()]
    lsyncd = shutil.which("lsyncd")
    if args.no_lsyncd:
        notes.append("lsyncd left out (--no-lsyncd)")
    elif lsyncd is None:
        msg = "lsyncd is not installed, so its column is empty (apt-get install -y lsyncd)"
        print(f"[bench] {msg}", file=sys.stderr)
        notes.append(msg)
    else:
        tools += [Lsyncd(lsyncd), Lsyncd(lsyncd, processes=PARALLEL, name="lsyncd_par")]
        notes.append(
            "lsyncd: default.rsync, delay = 0, rsync archive = true + _extra --sockopts=TCP_NODELAY"
            f"; maxProcesses = 1 (its default), and {PARALLEL} in the 'lsyncd, parallel' column "
            "(trigsync's default max_parallel)"
        )
    notes.append("trigsync: `python -m trigsync run SRC rsync://... --initial-sync` (defaults)")

    root = args.root or default_root()
    root.mkdir(parents=True, exist_ok=True)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    notes.append(f"trees under {root} ({filesystem_of(root)})")
    logs = SCRATCH / f"logs-{time.strftime('%Y%m%d-%H%M%S')}"
    logs.mkdir(exist_ok=True)
    ctx = Context(sizes, tmp, args.cache_dir, logs, tools, notes, args.raise_watches)
    if args.receivers:
        ctx.receivers = tuple(RECEIVERS[r.strip()] for r in args.receivers.split(","))
    ctx.say(f"sizes: {sizes.describe()}; trees under {root}; contender logs in {logs}")

    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    rows: list[Row] = []
    code = 0
    try:
        for name in chosen:
            ctx.say(f"--- {name}")
            rows += WORKLOADS[name](ctx)
    except KeyboardInterrupt:
        ctx.say("interrupted; writing what was measured so far")
        notes.append("run interrupted: partial results")
        code = 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(
        rows,
        command=shlex.join(
            ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])]
        ),
        started=started,
        seconds=time.monotonic() - t0,
        versions=tool_versions(),
        sizes=sizes.describe(),
        notes=ctx.notes,
    )
    print(text)
    path = write_latest(text)
    ctx.say(f"written to {path}")
    return code
