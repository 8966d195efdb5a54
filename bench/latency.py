"""The latency workload: small writes, each timed from close to arrival at the receiver.

Three paces, each against a stock daemon (the rsyncd.conf tutorials write, Nagle on),
a tuned one (``socket options = TCP_NODELAY``), and an ssh host whose login shell takes
150 ms to start (trigsync only; see ``sshsite.py``):

- back to back: each write follows the previous file's arrival at once;
- every 0.5 s;
- 40 s apart (few samples, to keep the run short: each costs 40 s, so the report lists
  them all beside their median, which one noisy sample can move).

At each pace a first write, one pace before the counted ones, is not counted: it
follows the contender's start, not a quiet spell of one pace.

The contenders run side by side, each with its own daemon. Back to back, each takes a
round of writes in turn (the first write of a round follows a pause, so it is not
counted); at the slower paces they take turns write by write on one clock, so each
contender's writes are exactly one pace apart and a burst of load from elsewhere on
the machine hits all of them alike.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .context import Context, attempt, percentile, put, rotated, running
from .procs import BenchTimeout
from .replica import ReplicaWatcher
from .report import Cell, Goal, Row
from .runners import Replicator, Site, site, spawn_rsync
from .sshsite import SHELL_START, SshSite, TrigsyncSsh, ssh_site
from .trees import SEED

SAMPLE_TIMEOUT = 30.0
ROUND = 10  # back to back: writes per turn; the first of each turn is not counted
SLOW_PACE = 40.0
SSH_MARGIN = 2.0  # ms: the goal for ssh rows, over the stock daemon's
FEW = 20  # below this many samples, the report lists each one beside the median


@dataclass(slots=True)
class _Lane:
    """One contender: where it writes, who watches its receiver, what it measured."""

    name: str
    where: Site | SshSite
    watcher: ReplicaWatcher
    plain: bool  # plain rsync: spawn one rsync per file
    samples: list[float] = field(default_factory=list)
    failed: str | None = None
    count: int = 0

    def sample(self, payload: bytes) -> float:
        self.count += 1
        name = f"lat{self.count:05d}.dat"
        with open(self.where.src / name, "wb") as f:
            f.write(payload)
            # Before the close: an arrival within a millisecond must not precede t0 when
            # this process is descheduled right after the close (a missed arrival).
            t0 = time.monotonic()
        if not self.plain:
            return self.watcher.wait_arrival(name.encode(), SAMPLE_TIMEOUT, after=t0) - t0
        assert isinstance(self.where, Site)  # plain rsync pushes to daemons only
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


@dataclass(frozen=True, slots=True)
class _Pace:
    label: str
    run: Callable[[Context, list[Row], Sequence[_Lane], bytes], None]
    percentiles: tuple[tuple[int, Goal | None], ...]
    samples: Callable[[Context], int]


def _back_to_back(ctx: Context, rows: list[Row], lanes: Sequence[_Lane], payload: bytes) -> None:
    n = ctx.sizes.latency_samples
    for turn in range((n + ROUND - 2) // (ROUND - 1)):
        for lane in rotated(lanes, turn):
            for k in range(ROUND):
                if lane.failed is None:
                    _take(ctx, rows, lane, payload, counted=k > 0)


def _paced(pace: float, count: Callable[[Context], int]) -> Callable[..., None]:
    def run(ctx: Context, rows: list[Row], lanes: Sequence[_Lane], payload: bytes) -> None:
        # A first write, not counted: right after a start it is no change "one pace
        # after the last", and it found a standby still logging in (30-50 ms).
        for lane in lanes:
            _take(ctx, rows, lane, payload, counted=False)
        start = time.monotonic() + pace
        time.sleep(pace)
        for i in range(count(ctx)):
            for lane in rotated(lanes, i):
                if lane.failed is None:
                    _take(ctx, rows, lane, payload, counted=True)
            time.sleep(max(0.0, start + (i + 1) * pace - time.monotonic()))

    return run


def _paces(ctx: Context) -> list[_Pace]:
    def paced(c: Context) -> int:
        return c.sizes.latency_paced_samples

    def slow(c: Context) -> int:
        return c.sizes.latency_slow_samples

    return [
        _Pace(
            "back to back",
            _back_to_back,
            ((50, Goal(5, "ms")), (90, None), (99, Goal(25, "ms"))),
            lambda c: c.sizes.latency_samples,
        ),
        _Pace("every 0.5 s", _paced(0.5, paced), ((50, Goal(5, "ms")), (90, None)), paced),
        _Pace(f"{SLOW_PACE:g} s apart", _paced(SLOW_PACE, slow), ((50, Goal(10, "ms")),), slow),
    ]


def latency(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for receiver in ctx.receivers:
        for pace in _paces(ctx):
            rows += _measure(ctx, pace, receiver)
    _ssh_goals(rows)
    rows[0].notes.append(
        "close to arrival at the receiver (inotify on the module); plain rsync = one fresh "
        "`rsync -a --sockopts=TCP_NODELAY FILE rsync://...` per file, from spawn to arrival; "
        f"stock = rsyncd.conf without `socket options`, tuned = with TCP_NODELAY; "
        f"ssh = trigsync only, to the test suite's loopback sshd as a user whose login shell "
        f"takes {SHELL_START * 1000:.0f} ms to start (a ~/.bashrc that sleeps); goal there: "
        f"within {SSH_MARGIN:g} ms of trigsync's stock daemon rows of the same run; "
        f"the {SLOW_PACE:g} s pace takes {ctx.sizes.latency_slow_samples} samples per contender"
    )
    return rows


def _ssh_goals(rows: list[Row]) -> None:
    """An ssh row's goal: within SSH_MARGIN ms of trigsync's stock daemon row of this run,
    where that row has a goal of its own."""
    stock = {r.metric.partition(", ")[2]: r for r in rows if r.metric.startswith("stock daemon")}
    for row in rows:
        daemon = stock.get(row.metric.partition(", ")[2]) if row.metric.startswith("ssh,") else None
        if daemon is not None and daemon.goal is not None and isinstance(daemon.trigsync, float):
            row.goal = Goal(round(daemon.trigsync + SSH_MARGIN, 1), "ms")


def _measure(ctx: Context, pace: _Pace, receiver: str) -> list[Row]:
    n, size = pace.samples(ctx), ctx.sizes.latency_bytes
    ssh = receiver == "ssh"
    rows = [
        Row("latency", f"{receiver}, {pace.label}: p{pct} ({n} x {size // 1024} KiB)", "ms",
            goal=None if ssh else goal)
        for pct, goal in pace.percentiles
    ]  # fmt: skip
    payload = random.Random(SEED).randbytes(size)
    lanes: list[_Lane] = []
    results: dict[str, Cell] = {}
    ctx.say(f"latency: {receiver}, {pace.label}, {n} samples")
    with contextlib.ExitStack() as stack:
        contenders: list[Replicator | None] = [*ctx.tools, None]
        if ssh:
            got = attempt(ctx, rows, "trigsync", partial(_ssh_lane, ctx, stack))
            if isinstance(got, _Lane):
                lanes.append(got)
            else:
                results["trigsync"] = got
            contenders = []
        for tool in contenders:
            name = tool.name if tool else "rsync"
            got = attempt(ctx, rows, name, partial(_lane, ctx, stack, tool, receiver))
            if isinstance(got, _Lane):
                lanes.append(got)
            else:
                results[name] = got
        pace.run(ctx, rows, lanes, payload)
    for lane in lanes:
        if lane.failed is not None:
            results[lane.name] = lane.failed
            continue
        ctx.say(
            f"latency/{receiver}/{pace.label}/{lane.name}: "
            f"p50 {percentile(lane.samples, 50):.1f} ms over {len(lane.samples)}"
        )
        for row, (pct, _) in zip(rows, pace.percentiles, strict=True):
            put(row, lane.name, percentile(lane.samples, pct))
        if len(lane.samples) < FEW:
            # A median of a handful moves with one noisy sample: show them all.
            rows[0].notes.append(
                f"{lane.name}: each sample, sorted: "
                + ", ".join(f"{s:.1f}" for s in sorted(lane.samples))
                + " ms"
            )
    for who, cell in results.items():
        for row in rows:
            put(row, who, cell)
    return rows


def _lane(
    ctx: Context, stack: contextlib.ExitStack, tool: Replicator | None, receiver: str
) -> _Lane:
    name = tool.name if tool else "rsync"
    tuned = receiver == "tuned daemon"
    where = stack.enter_context(site(ctx.tmp, f"latency-{name}", tuned=tuned))
    if tool is not None:
        stack.enter_context(running(ctx, "latency", tool, where))
    watcher = stack.enter_context(ReplicaWatcher(Path(where.replica)))
    return _Lane(name, where, watcher, plain=tool is None)


def _take(ctx: Context, rows: list[Row], lane: _Lane, payload: bytes, *, counted: bool) -> None:
    got = attempt(ctx, rows, lane.name, lambda: lane.sample(payload))
    if isinstance(got, float):
        if counted:
            lane.samples.append(got * 1000)
    else:
        lane.failed = got


def _ssh_lane(ctx: Context, stack: contextlib.ExitStack) -> _Lane:
    where = stack.enter_context(ssh_site(ctx.tmp, "latency-ssh"))
    tool = TrigsyncSsh()
    stack.callback(_keep_log, ctx, where.workdir / "trigsync.log")  # after trigsync stopped
    proc = stack.enter_context(tool.start(where))
    state = tool.wait_ready(proc)
    ctx.say(f"latency/ssh: {state}")
    ctx.notes.append(f"latency/ssh: trigsync logged '{state}'")
    watcher = stack.enter_context(ReplicaWatcher(where.replica))
    return _Lane("trigsync", where, watcher, plain=False)


def _keep_log(ctx: Context, path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.copyfile(path, ctx.logs / "latency-ssh-trigsync.log")
