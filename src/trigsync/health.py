"""Pure reporting from status snapshots: JSON for the wire, the status table, the check.

Nothing here does I/O or reads a live object: every function takes an ``EngineStatus``
(and the time, where an age is shown), so the same snapshot gives the same answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import ConfigError
from .status import EngineStatus, SyncStatus, TargetStatus

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
_WORDS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'90', '90s', '1.5m', '2h', '250ms' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise ConfigError(f"{text!r} is not a duration; write e.g. 60s, 5m, 1h or 90 (seconds)")
    return float(match[1]) * _UNITS[match[2] or ""]


def to_json(status: EngineStatus) -> dict[str, Any]:
    """The snapshot as plain JSON data (``status --json`` and the control socket)."""
    data = status._asdict()
    data["syncs"] = [
        {**s._asdict(), "targets": [t._asdict() for t in s.targets]} for s in status.syncs
    ]
    data["down"] = list(status.down)
    return data


def from_json(data: Mapping[str, Any]) -> EngineStatus:
    """The inverse of ``to_json``; keys a newer daemon added are ignored."""
    syncs = tuple(
        SyncStatus(
            **{
                **_known(SyncStatus, s),
                "targets": tuple(TargetStatus(**_known(TargetStatus, t)) for t in s["targets"]),
            }
        )
        for s in data["syncs"]
    )
    return EngineStatus(
        **{**_known(EngineStatus, data), "syncs": syncs, "down": tuple(data.get("down", ()))}
    )


def _known(kind: type[NamedTuple], data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k in kind._fields}


def state(t: TargetStatus) -> str:
    """What a person should read: ok, syncing, retrying, failing, paused or stopped."""
    if t.paused:
        return "paused"
    return {"idle": "ok", "backoff": "retrying"}.get(t.state, t.state)


def _age(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _secs(seconds: float) -> str:
    # The check compares against thresholds given in seconds: keep its unit fixed.
    return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"


def _when(stamp: float | None, now: float) -> str:
    return "never" if stamp is None else f"{_age(max(0.0, now - stamp))} ago"


def table(status: EngineStatus, now: float | None = None) -> str:
    """The human status: a header per sync, one row per target."""
    now = time.time() if now is None else now
    lines = [
        f"trigsync pid {status.pid}, up {_when(status.started, now).removesuffix(' ago')}, "
        f"heartbeat {_when(status.heartbeat, now)}{', stopping' if status.stopping else ''}"
    ]
    lines += [f"DOWN: {part}" for part in status.down]
    head = ("TARGET", "STATE", "PENDING", "LAG", "LAST SUCCESS", "SENT", "LAST ERROR")
    for sync in status.syncs:
        rows = [head]
        for t in sync.targets:
            pending = f"{t.pending}{' +full' if t.full_pending else ''}"
            rows.append(
                (
                    t.target,
                    state(t) + (f" {t.progress.split(',')[0]}" if t.progress else ""),
                    pending,
                    _age(t.lag),
                    _when(t.last_success, now),
                    str(t.paths_sent),
                    " ".join((t.last_error or "-").split()),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        lines += ["", f"{sync.source} ({sync.watches} directories watched)"]
        lines += [
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
            for r in rows
        ]
    return "\n".join(lines)


class Verdict(NamedTuple):
    code: int  # OK, WARNING, CRITICAL or UNKNOWN (the Nagios plugin exit status)
    line: str  # one line: "TRIGSYNC OK - ... | perfdata"


def unknown(why: str) -> Verdict:
    """The check itself was called wrong: a plugin says UNKNOWN, not CRITICAL."""
    return Verdict(UNKNOWN, f"TRIGSYNC UNKNOWN - {why}")


def no_daemon(why: str) -> Verdict:
    """The daemon did not answer: ``why`` names the socket and the likely cause."""
    return Verdict(CRITICAL, f"TRIGSYNC CRITICAL - {why}")


def check(
    status: EngineStatus, *, max_lag: float, warn_lag: float, canary: bool = False
) -> Verdict:
    """Nagios plugin verdict: critical past ``max_lag`` or with a part down, warning
    past ``warn_lag`` or while a target fails, retries or is paused. A failed canary is
    critical when this check ran it (``canary``), a warning when a scheduled one failed."""
    if status.stopping:  # its watchers end on purpose
        problems = [(WARNING, "the daemon is stopping")]
    else:
        problems = [(CRITICAL, f"{part} is down") for part in status.down]
    perf: list[str] = []
    targets = [t for s in status.syncs for t in s.targets]
    for t in targets:
        label = _label(t.target)
        perf.append(f"'{label} lag'={t.lag:.3f}s;{warn_lag:g};{max_lag:g};0;")
        perf.append(f"'{label} pending'={t.pending};;;0;")
        if t.lag > max_lag:
            problems.append((CRITICAL, f"{t.target} lag {_secs(t.lag)} > {_secs(max_lag)}"))
        elif t.lag > warn_lag:
            problems.append((WARNING, f"{t.target} lag {_secs(t.lag)} > {_secs(warn_lag)}"))
        if t.canary_rtt is not None:
            perf.append(f"'{label} canary'={t.canary_rtt:.3f}s;;;0;")
        if t.canary_error is not None:
            problems.append(
                (CRITICAL if canary else WARNING, f"{t.target} canary: {t.canary_error}")
            )
        if state(t) in ("retrying", "failing", "paused", "stopped"):
            detail = f": {t.last_error}" if t.last_error and not t.paused else ""
            problems.append((WARNING, f"{t.target} {state(t)}{detail}"))
    code = max((c for c, _ in problems), default=OK)
    if problems:
        problems.sort(key=lambda p: -p[0])
        # One line, and '|' starts the perfdata: an rsync error may hold either.
        text = " ".join("; ".join(msg for _, msg in problems).replace("|", "/").split())
    else:
        worst = max((t.lag for t in targets), default=0.0)
        text = f"{_count(len(targets), 'target')} in sync, worst lag {_age(worst)}"
        if canary:
            text += ", canary arrived everywhere"
    return Verdict(code, f"TRIGSYNC {_WORDS[code]} - {text} | {' '.join(perf)}".rstrip(" |"))


def _label(name: str) -> str:
    # Nagios perfdata labels are quoted with ' and end at '='.
    return name.replace("'", "").replace("=", "_")


def worst_lag(status: EngineStatus) -> str:
    """One line for sd_notify's STATUS=: how far behind the furthest target is."""
    targets = [t for s in status.syncs for t in s.targets]
    if not targets:
        return "no targets"
    worst = max(targets, key=lambda t: t.lag)
    paused = sum(t.paused for t in targets)
    extra = f", {paused} paused" if paused else ""
    # Whole seconds: the line is sent again only when it changes.
    return f"{_count(len(targets), 'target')}, worst lag {worst.lag:.0f}s ({worst.target}){extra}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
