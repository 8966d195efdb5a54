"""``python -m bench [--workloads latency,storm,...] [--quick]``: run, print, save the table."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
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
    p.add_argument("--latency-samples", type=int, default=None, help="writes timed (default 100)")
    p.add_argument("--no-lsyncd", action="store_true", help="leave lsyncd out")
    p.add_argument("--cache-dir", type=Path, default=CACHE, help=f"kept trees (default {CACHE})")
    return p


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = Sizes()
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    if scale != 1.0:
        sizes = sizes.scaled(scale)
    if args.quick:
        sizes = dataclasses.replace(sizes, latency_samples=30, idle_seconds=5.0)
    if args.idle_seconds is not None:
        sizes = dataclasses.replace(sizes, idle_seconds=args.idle_seconds)
    if args.latency_samples is not None:
        sizes = dataclasses.replace(sizes, latency_samples=args.latency_samples)
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
        tools.append(Lsyncd(lsyncd))
        notes.append(
            "lsyncd: default.rsync, delay = 0, rsync archive = true + _extra --sockopts=TCP_NODELAY"
        )
    notes.append("trigsync: `python -m trigsync run SRC rsync://... --initial-sync` (defaults)")

    SCRATCH.mkdir(parents=True, exist_ok=True)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=SCRATCH))
    logs = SCRATCH / f"logs-{time.strftime('%Y%m%d-%H%M%S')}"
    logs.mkdir(exist_ok=True)
    ctx = Context(sizes, tmp, args.cache_dir, logs, tools, notes)
    ctx.say(f"sizes: {sizes.describe()}; contender logs in {logs}")

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
