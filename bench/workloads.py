"""The six workloads. Each returns its table rows; every number is lower-is-better.

Latencies are arrivals at the receiver (inotify on the daemon's module directory),
lags are "last write until the replica equals the source", where equal means the same
names, types, sizes, permissions, symlink targets and bytes.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from trigsync import inotify as ino

from .bigtree import bigtree, neighbour
from .context import Context, attempt, put, rotated, running, settle
from .latency import latency
from .procs import count_lines_of, cpu_seconds, rss_mib
from .replica import NotEqualError, ReplicaWatcher, content_differences, snapshot, wait_equal
from .report import Goal, Row
from .runners import Replicator, Site, plain_rsync, site, spawn_rsync
from .trees import churn, startup_tree, write_big, write_storm

EQUAL_TIMEOUT = 300.0
BIGFILE_ROUNDS = 5


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


# -- storm --------------------------------------------------------------------------------


def storm(ctx: Context) -> list[Row]:
    files, dirs = ctx.sizes.storm_files, ctx.sizes.storm_dirs
    lag = Row(
        "storm",
        f"last write -> replica equal ({files} files, {dirs} dirs)",
        "s",
        goal=Goal(0.5, "s"),
    )
    total = Row("storm", "first write -> replica equal", "s")
    for tool in ctx.tools:
        got = attempt(ctx, [lag], tool.name, partial(_storm_tool, ctx, tool))
        put(lag, tool.name, got[0] if isinstance(got, tuple) else got)
        put(total, tool.name, got[1] if isinstance(got, tuple) else got)
    plain = attempt(ctx, [lag], "rsync", lambda: _storm_rsync(ctx))
    put(lag, "rsync", plain[0] if isinstance(plain, tuple) else plain)
    put(total, "rsync", plain[1] if isinstance(plain, tuple) else plain)
    lag.notes.append("plain rsync = one `rsync -a` of the finished tree into an empty module")
    total.notes.append(
        "plain rsync = the same burst, then one `rsync -a` of the finished tree: the ratio "
        "says what replicating during the burst costs or saves against syncing once after it"
    )
    total.notes.append(
        "a replicator that works during the burst slows the writer on a small machine; "
        "this row counts the burst too"
    )
    return [lag, total]


def _storm_tool(ctx: Context, tool: Replicator) -> tuple[float, float]:
    with (
        site(ctx.tmp, f"storm-{tool.name}") as where,
        running(ctx, "storm", tool, where),
        ReplicaWatcher(where.replica) as watcher,
    ):
        settle()
        t0 = time.monotonic()
        write_storm(where.src, files=ctx.sizes.storm_files, dirs=ctx.sizes.storm_dirs)
        last = time.monotonic()
        done = wait_equal(where.src, watcher, timeout=EQUAL_TIMEOUT)
        lag = max(0.0, done - last)
        ctx.say(
            f"storm/{tool.name}: burst took {last - t0:.2f} s, equal {lag:.3f} s after it "
            f"({watcher.overflows} replica-watch overflows)"
        )
        return lag, done - t0


def _storm_rsync(ctx: Context) -> tuple[float, float]:
    """One plain rsync of the finished storm tree: its seconds, and burst plus rsync."""
    with site(ctx.tmp, "storm-rsync") as where:
        settle()
        t0 = time.monotonic()
        write_storm(where.src, files=ctx.sizes.storm_files, dirs=ctx.sizes.storm_dirs)
        burst = time.monotonic() - t0
        settle()  # not counted: the rsync starts from a clean page cache, as before
        seconds = plain_rsync(where)
        ctx.say(f"storm/rsync: burst took {burst:.2f} s, rsync {seconds:.3f} s")
        return seconds, burst + seconds


# -- churn --------------------------------------------------------------------------------


def churn_workload(ctx: Context) -> list[Row]:
    ops = ctx.sizes.churn_ops
    lag = Row("churn", f"last op -> replica equal ({ops} ops)", "s", goal=Goal(1.0, "s"))
    bad = Row("churn", "paths still different at the end", "count", goal=Goal(0, ""))
    for tool in ctx.tools:
        got = attempt(ctx, [lag], tool.name, partial(_churn_tool, ctx, tool))
        put(lag, tool.name, got[0] if isinstance(got, tuple) else got)
        put(bad, tool.name, got[1] if isinstance(got, tuple) else None)
    put(lag, "rsync", attempt(ctx, [lag], "rsync", lambda: _churn_rsync(ctx)))
    lag.notes.append(
        "ops: appends, chmods, deletes, symlinks, create-then-delete temp files, new files, "
        "directory renames; plain rsync = one `rsync -a --delete` of the churned tree onto "
        "the pre-churn replica"
    )
    return [lag, bad]


def _storm_tree(ctx: Context, where: Site) -> None:
    write_storm(where.src, files=ctx.sizes.storm_files, dirs=ctx.sizes.storm_dirs)


def _churn_tool(ctx: Context, tool: Replicator) -> tuple[float | str, float]:
    with site(ctx.tmp, f"churn-{tool.name}") as where:
        _storm_tree(ctx, where)
        with running(ctx, "churn", tool, where), ReplicaWatcher(where.replica) as watcher:
            wait_equal(where.src, watcher, timeout=EQUAL_TIMEOUT)
            settle()
            done_ops = churn(where.src, ops=ctx.sizes.churn_ops)
            last = time.monotonic()
            try:
                done = wait_equal(where.src, watcher, timeout=EQUAL_TIMEOUT)
            except NotEqualError as exc:
                ctx.say(f"churn/{tool.name}: {exc}")
                ctx.notes.append(f"churn/{tool.name}: {exc}")
                return "not equal", float(len(exc.diff))
            lag = max(0.0, done - last)
            ctx.say(f"churn/{tool.name}: equal {lag:.3f} s after the last op ({dict(done_ops)})")
            return lag, 0.0


def _churn_rsync(ctx: Context) -> float:
    with site(ctx.tmp, "churn-rsync") as where:
        _storm_tree(ctx, where)
        plain_rsync(where)
        churn(where.src, ops=ctx.sizes.churn_ops)
        settle()
        seconds = plain_rsync(where, delete=True)
        if differences := content_differences(where.src, where.replica, snapshot(where.src)):
            raise RuntimeError(f"plain rsync left {len(differences)} files different")
        ctx.say(f"churn/rsync: {seconds:.3f} s")
        return seconds


# -- bigfile ------------------------------------------------------------------------------


def bigfile(ctx: Context) -> list[Row]:
    mib, rounds = ctx.sizes.bigfile_mib, BIGFILE_ROUNDS
    row = Row(
        "bigfile",
        f"close -> arrival ({mib} MiB, median of {rounds})",
        "s",
        goal=Goal(1.2, ratio=True),
    )
    contenders: list[Replicator | None] = [*ctx.tools, None]
    got: dict[str, list[float]] = {}
    for turn in range(rounds):  # interleaved and rotated, so load hits everyone alike
        for tool in rotated(contenders, turn):
            who = tool.name if tool else "rsync"
            if who in got and not got[who]:
                continue  # failed before
            value = attempt(ctx, [row], who, partial(_bigfile, ctx, tool))
            got.setdefault(who, [])
            if isinstance(value, float):
                got[who].append(value)
            else:
                got[who] = []
                put(row, who, value)
    for who, values in got.items():
        if values:
            put(row, who, statistics.median(values))
    row.notes.append("plain rsync = `rsync -a FILE` into an empty module, spawn to arrival")
    return [row]


def _bigfile(ctx: Context, tool: Replicator | None) -> float:
    name = tool.name if tool else "rsync"
    with site(ctx.tmp, f"bigfile-{name}") as where:
        if tool is None:
            return _bigfile_arrival(ctx, where, None)
        with running(ctx, "bigfile", tool, where):
            return _bigfile_arrival(ctx, where, tool)


def _bigfile_arrival(ctx: Context, where: Site, tool: Replicator | None) -> float:
    path = where.src / "big.bin"
    proc: subprocess.Popen[bytes] | None = None
    with ReplicaWatcher(where.replica) as watcher:
        settle()
        write_big(path, mib=ctx.sizes.bigfile_mib)
        t0 = after = time.monotonic()
        if tool is None:
            proc = spawn_rsync(where, str(path))
        try:
            deadline = t0 + EQUAL_TIMEOUT
            while True:
                # A partial copy may land first (a replicator that saw the file mid-write).
                arrived = watcher.wait_arrival(
                    b"big.bin", max(0.1, deadline - time.monotonic()), after=after
                )
                if not content_differences(
                    where.src, where.replica, {b"big.bin": ("f", 0, 0, b"")}
                ):
                    break
                after = arrived + 1e-6
            if proc is not None and proc.wait(EQUAL_TIMEOUT) != 0:
                raise RuntimeError(f"rsync exited {proc.returncode}")
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    ctx.say(f"bigfile/{tool.name if tool else 'rsync'}: {arrived - t0:.3f} s")
    return arrived - t0


# -- startup ------------------------------------------------------------------------------


def _watches_in_use() -> int:
    """inotify watches held by all processes we can see (the limit is per user)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fdinfo"):
                with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                    total += f.read().count(b"inotify wd:")
        except OSError:
            continue
    return total


def startup(ctx: Context) -> list[Row]:
    dirs, files = ctx.sizes.startup_dirs, ctx.sizes.startup_files
    ready = Row(
        "startup",
        f"start -> watching ({dirs} dirs, {files} files)",
        "s",
        goal=Goal(2, ratio=True),
        ref="find | wc -l",
    )
    rss = Row("startup", "RSS when watching", "MiB", goal=Goal(80, "MiB"))
    ctx.say(f"startup: building or reusing the tree in {ctx.cache}")
    tree = startup_tree(ctx.cache, dirs=dirs, files=files)
    limit, used = ino.limit("max_user_watches") or 0, _watches_in_use()
    if limit - used < dirs + 1000:
        msg = (
            f"skipped: needs {dirs + 1} inotify watches, {limit - used} of {limit} free; "
            f"run: sysctl -w fs.inotify.max_user_watches={2 * (dirs + used)}"
        )
        ctx.say(f"startup: {msg}")
        ready.notes.append(msg)
        put(ready, "trigsync", "skipped")
        return [ready, rss]
    count_lines_of(["find", str(tree)], timeout=600)  # warm the dentry cache for both
    got = attempt(ctx, [ready], "rsync", lambda: count_lines_of(["find", str(tree)], timeout=600))
    put(ready, "rsync", got[0] if isinstance(got, tuple) else got)
    trig = next((t for t in ctx.tools if t.name == "trigsync"), None)
    if trig is not None:
        got2 = attempt(ctx, [ready], "trigsync", lambda: _startup_tool(ctx, trig, tree))
        put(ready, "trigsync", got2[0] if isinstance(got2, tuple) else got2)
        put(rss, "trigsync", got2[1] if isinstance(got2, tuple) else None)
    ready.notes.append("lsyncd not measured: it logs nothing when its watches are in place")
    return [ready, rss]


def _startup_tool(ctx: Context, tool: Replicator, tree: Path) -> tuple[float, float]:
    with site(ctx.tmp, f"startup-{tool.name}", src=tree) as where:
        t0 = time.monotonic()
        proc = tool.start(where, initial_sync=False)
        try:
            seen = proc.wait_log(" watching ", 600)
            mib = rss_mib(proc.pid)
        finally:
            proc.stop()
        ctx.say(f"startup/{tool.name}: watching after {seen - t0:.3f} s, RSS {mib:.1f} MiB")
        return seen - t0, mib


# -- idle ---------------------------------------------------------------------------------


def idle(ctx: Context) -> list[Row]:
    seconds = ctx.sizes.idle_seconds
    row = Row("idle", f"CPU over {seconds:g} s with no changes", "CPU-s", goal=Goal(0.0, "CPU-s"))
    for tool in ctx.tools:
        put(row, tool.name, attempt(ctx, [row], tool.name, partial(_idle_tool, ctx, tool)))
    row.notes.append(
        "utime+stime+cutime+cstime from /proc/PID/stat (10 ms ticks: the process and "
        "the rsync children it reaped), from 1 s after the initial sync"
    )
    return [row]


def _idle_tool(ctx: Context, tool: Replicator) -> float:
    with site(ctx.tmp, f"idle-{tool.name}") as where:
        write_storm(where.src, files=min(2000, ctx.sizes.storm_files), dirs=20)
        with running(ctx, "idle", tool, where) as proc:
            time.sleep(1.0)
            before = cpu_seconds(proc.pid)
            time.sleep(ctx.sizes.idle_seconds)
            used = cpu_seconds(proc.pid) - before
        ctx.say(f"idle/{tool.name}: {used:.2f} CPU-s")
        return used


WORKLOADS: dict[str, Callable[[Context], list[Row]]] = {
    "latency": latency,
    "storm": storm,
    "churn": churn_workload,
    "bigfile": bigfile,
    "startup": startup,
    "idle": idle,
    "bigtree": bigtree,
    "neighbour": neighbour,
}
