"""What every workload shares: sizes, scratch space, contenders, error capture."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .procs import BenchTimeout, Proc
from .report import Cell, Row
from .runners import Replicator, Site

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each workload is; ``scaled`` shrinks them all for quick runs."""

    latency_samples: int = 100  # back to back
    latency_paced_samples: int = 40  # one every 0.5 s
    latency_slow_samples: int = 5  # 40 s apart: few, to keep the run short
    latency_bytes: int = 2048
    storm_files: int = 20_000
    storm_dirs: int = 200
    churn_ops: int = 3_000
    bigfile_mib: int = 200
    startup_dirs: int = 100_000
    startup_files: int = 300_000
    idle_seconds: float = 30.0
    big_dirs: int = 100_000  # bigtree: directories, and as many files (the goal: 1M)
    lsyncd_limit: float = 300.0  # bigtree: seconds lsyncd gets to place its watches
    neighbour_writes: int = 50_000

    def scaled(self, factor: float) -> Sizes:
        def n(value: int, least: int) -> int:
            return max(least, round(value * factor))

        return dataclasses.replace(
            self,
            storm_files=n(self.storm_files, 10),
            storm_dirs=n(self.storm_dirs, 2),
            churn_ops=n(self.churn_ops, 10),
            bigfile_mib=n(self.bigfile_mib, 1),
            startup_dirs=n(self.startup_dirs, 10),
            startup_files=n(self.startup_files, 10),
            big_dirs=n(self.big_dirs, 10),
            neighbour_writes=n(self.neighbour_writes, 100),
        )

    def describe(self) -> str:
        return (
            f"latency {self.latency_samples} back to back, {self.latency_paced_samples} every "
            f"0.5 s, {self.latency_slow_samples} 40 s apart, x {self.latency_bytes} B; "
            f"storm {self.storm_files} files in {self.storm_dirs} dirs; "
            f"churn {self.churn_ops} ops on the storm tree; bigfile {self.bigfile_mib} MiB; "
            f"startup {self.startup_dirs} dirs + {self.startup_files} files; "
            f"idle {self.idle_seconds:g} s; bigtree {self.big_dirs} dirs + as many files "
            f"(lsyncd limit {self.lsyncd_limit:g} s); neighbour {self.neighbour_writes} writes"
        )


@dataclass(slots=True)
class Context:
    sizes: Sizes
    tmp: Path  # scratch for this run, removed at the end
    cache: Path  # kept between runs (the startup tree)
    logs: Path  # every contender's log, kept for diagnosis
    tools: Sequence[Replicator]
    notes: list[str] = field(default_factory=list)
    raise_watches: bool = False  # bigtree: raise max_user_watches for inotify contenders
    receivers: tuple[str, ...] = ("stock daemon", "tuned daemon", "ssh")  # latency rows

    def say(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def attempt(ctx: Context, rows: Sequence[Row], who: str, fn: Callable[[], T]) -> T | str:
    """Run one contender's measurement; a failure becomes a short cell text and a note."""
    label = f"{rows[0].workload}/{who}"
    try:
        return fn()
    except BenchTimeout as exc:
        ctx.say(f"{label}: timeout: {exc}")
        rows[0].notes.append(f"{who}: {exc}")
        return "timeout"
    except Exception as exc:
        ctx.say(f"{label}: failed:\n{traceback.format_exc()}")
        rows[0].notes.append(f"{who}: {type(exc).__name__}: {exc}")
        return "error"


def settle() -> None:
    """Flush what earlier measurements left dirty (a removed tree, a written file).

    Without it, writeback (and, on a disk mounted with ``discard``, the trims of freed
    blocks) from one contender's clean-up lands on whichever contender runs next: by
    hand, the same 200 MiB rsync took 0.35 s or 0.25 s depending only on its place in
    the order. Every timed write starts from a clean page cache.
    """
    os.sync()


def rotated(items: Sequence[T], turn: int) -> list[T]:
    """``items`` starting at position ``turn``: each round puts someone else first."""
    k = turn % len(items) if items else 0
    return [*items[k:], *items[:k]]


def put(row: Row, who: str, value: Cell) -> None:
    setattr(row, who, value)


@contextlib.contextmanager
def running(
    ctx: Context, workload: str, tool: Replicator, where: Site, *, initial_sync: bool = True
) -> Iterator[Proc]:
    """Start a contender, wait until it is ready, and always stop it (its children too)."""
    proc = tool.start(where, initial_sync=initial_sync)
    try:
        tool.wait_ready(proc, initial_sync=initial_sync)
        yield proc
    finally:
        code = proc.stop()
        log = ctx.logs / f"{workload}-{tool.name}.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(proc.log_path, log)
        # lsyncd answers SIGTERM by exiting 143 (128 + 15); trigsync drains and exits 0.
        if code not in (0, 143, None):
            ctx.say(f"{workload}/{tool.name} exited {code}; log: {log}")
        for line in proc.log_text().splitlines():
            if "Traceback" in line or " ERROR " in line or " WARNING " in line:
                ctx.notes.append(f"{workload}/{tool.name} logged: {line.strip()[:200]}")
                break


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]
