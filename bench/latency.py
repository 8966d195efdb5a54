"""The latency workload: small writes, each timed from close to arrival at the receiver.

The contenders run side by side, each with its own daemon, and take turns sample by
sample (in a rotating order), so a burst of load from elsewhere on the machine hits
all of them alike instead of whichever happened to run at that moment.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .context import Context, attempt, percentile, put, running
from .procs import BenchTimeout
from .replica import ReplicaWatcher
from .report import Cell, Goal, Row
from .runners import Replicator, Site, site, spawn_rsync
from .trees import SEED

SAMPLE_TIMEOUT = 30.0
GAP = 0.05  # pause after each arrival, so every write meets an idle replicator


@dataclass(slots=True)
class _Lane:
    """One contender: where it writes, who watches its receiver, what it measured."""

    name: str
    where: Site
    watcher: ReplicaWatcher
    plain: bool  # plain rsync: spawn one rsync per file
    samples: list[float] = field(default_factory=list)
    failed: str | None = None

    def sample(self, i: int, payload: bytes) -> float:
        name = f"lat{i:04d}.dat"
        with open(self.where.src / name, "wb") as f:
            f.write(payload)
        t0 = time.monotonic()
        if not self.plain:
            return self.watcher.wait_arrival(name.encode(), SAMPLE_TIMEOUT, after=t0) - t0
        proc = spawn_rsync(self.where, str(self.where.src / name))
        try:
            arrived = self.watcher.wait_arrival(name.encode(), SAMPLE_TIMEOUT, after=t0)
            if proc.wait(SAMPLE_TIMEOUT) != 0:
                raise RuntimeError(f"rsync exited {proc.returncode}")
        except subprocess.TimeoutExpired as exc:
            raise BenchTimeout(f"rsync ran longer than {SAMPLE_TIMEOUT:.0f} s") from exc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return arrived - t0


def latency(ctx: Context) -> list[Row]:
    n, size = ctx.sizes.latency_samples, ctx.sizes.latency_bytes
    rows = [
        Row(
            "latency", f"p50 ({n} x {size // 1024} KiB, close to arrival)", "ms", goal=Goal(5, "ms")
        ),
        Row("latency", "p90", "ms"),
        Row("latency", "p99", "ms", goal=Goal(25, "ms")),
    ]
    payload = random.Random(SEED).randbytes(size)
    lanes: list[_Lane] = []
    results: dict[str, Cell] = {}
    with contextlib.ExitStack() as stack:
        contenders: list[Replicator | None] = [*ctx.tools, None]
        for tool in contenders:
            name = tool.name if tool else "rsync"
            got = attempt(ctx, rows, name, partial(_lane, ctx, stack, tool))
            if isinstance(got, _Lane):
                lanes.append(got)
            else:
                results[name] = got
        for i in range(n):
            for k in range(len(lanes)):
                lane = lanes[(i + k) % len(lanes)]
                if lane.failed is None:
                    _take(ctx, rows, lane, i, payload)
                    time.sleep(GAP)
    for lane in lanes:
        if lane.failed is not None:
            results[lane.name] = lane.failed
            continue
        ctx.say(f"latency/{lane.name}: p50 {percentile(lane.samples, 50):.1f} ms")
        for row, pct in zip(rows, (50, 90, 99), strict=True):
            put(row, lane.name, percentile(lane.samples, pct))
    for who, cell in results.items():
        for row in rows:
            put(row, who, cell)
    rows[0].notes.append(
        "contenders take turns sample by sample; plain rsync = one fresh "
        "`rsync -a --sockopts=TCP_NODELAY FILE rsync://...` per file, from spawn to arrival"
    )
    return rows


def _lane(ctx: Context, stack: contextlib.ExitStack, tool: Replicator | None) -> _Lane:
    name = tool.name if tool else "rsync"
    where = stack.enter_context(site(ctx.tmp, f"latency-{name}"))
    if tool is not None:
        stack.enter_context(running(ctx, "latency", tool, where))
    watcher = stack.enter_context(ReplicaWatcher(Path(where.replica)))
    return _Lane(name, where, watcher, plain=tool is None)


def _take(ctx: Context, rows: list[Row], lane: _Lane, i: int, payload: bytes) -> None:
    got = attempt(ctx, rows, lane.name, lambda: lane.sample(i, payload))
    if isinstance(got, float):
        lane.samples.append(got * 1000)
    else:
        lane.failed = got
