"""Result rows, goals, and the markdown report (stdout and bench/results/latest.md)."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# A cell is a measurement, a short reason it is missing ("timeout", "skipped"), or None.
Cell = float | str | None

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Goal:
    """trigsync's value must be at most ``limit`` (or ``limit`` times the reference)."""

    limit: float
    unit: str = ""
    ratio: bool = False  # compare trigsync / reference column, not trigsync itself

    def text(self, ref: str) -> str:
        if self.ratio:
            return f"<= {self.limit:g}x {ref}"
        return f"<= {self.limit:g} {self.unit}".rstrip()


@dataclass(slots=True)
class Row:
    """One metric, lower is better, for every contender."""

    workload: str
    metric: str
    unit: str
    trigsync: Cell = None
    lsyncd: Cell = None
    lsyncd_par: Cell = None  # lsyncd with maxProcesses = trigsync's max_parallel
    rsync: Cell = None
    goal: Goal | None = None
    ref: str = "rsync"  # what the reference column holds for this row
    notes: list[str] = field(default_factory=list)

    def ratio(self, other: Cell) -> float | None:
        if isinstance(self.trigsync, float) and isinstance(other, float) and other > 0:
            return self.trigsync / other
        return None

    def verdict(self) -> str:
        if self.goal is None:
            return ""
        value = self.ratio(self.rsync) if self.goal.ratio else self.trigsync
        text = self.goal.text(self.ref)
        if not isinstance(value, float):
            return f"{text}: no result"
        return f"{text}: {'met' if value <= self.goal.limit + 1e-9 else 'MISSED'}"


_FORMATS = {"ms": "{:.1f} ms", "s": "{:.3f} s", "MiB": "{:.1f} MiB", "CPU-s": "{:.2f} CPU-s"}


def fmt(value: Cell, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "count":
        return f"{value:.0f}"
    return _FORMATS.get(unit, "{:g} " + unit).format(value).rstrip()


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(rows: Sequence[Row]) -> str:
    head = (
        "| workload | metric | trigsync | lsyncd | lsyncd, parallel | plain rsync "
        "| ratio vs rsync | ratio vs lsyncd | goal |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        ref = fmt(r.rsync, r.unit)
        if r.ref != "rsync" and r.rsync is not None:
            ref += f" ({r.ref})"
        cells = [
            r.workload,
            r.metric,
            fmt(r.trigsync, r.unit),
            fmt(r.lsyncd, r.unit),
            fmt(r.lsyncd_par, r.unit),
            ref,
            _ratio(r.ratio(r.rsync)),
            _ratio(r.ratio(r.lsyncd)),
            r.verdict(),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return head + "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def machine(versions: dict[str, str]) -> list[str]:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"{os.cpu_count()} CPUs ({_cpu_model()}), {_os_name()}, kernel {platform.release()}",
        f"{versions.get('rsync', 'rsync: not found')}; "
        f"lsyncd {versions.get('lsyncd', 'not installed').removeprefix('Version: ')}; "
        f"Python {platform.python_version()}; {versions.get('trigsync', 'trigsync')}",
        f"load average at the end of the run (1/5/15 min): {load}",
    ]


def render(
    rows: Sequence[Row],
    *,
    command: str,
    started: datetime.datetime,
    seconds: float,
    versions: dict[str, str],
    sizes: str,
    notes: Sequence[str],
) -> str:
    out = [
        "# trigsync benchmark results",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z')} (run took {seconds:.0f} s)",
        f"- command: `{command}`",
        *(f"- machine: {m}" for m in machine(versions)),
        f"- sizes: {sizes}",
        "",
        table(rows),
    ]
    all_notes = list(notes) + [f"{r.workload}/{r.metric}: {n}" for r in rows for n in r.notes]
    if all_notes:
        out += ["Notes:", "", *(f"- {n}" for n in all_notes), ""]
    return "\n".join(out)


def write_latest(text: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "latest.md"
    path.write_text(text)
    return path
