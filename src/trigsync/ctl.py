"""The client side of the control socket: status, check, pause, resume, sync-now."""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import control, health
from .errors import ControlError

CANARY_WAIT = 300.0  # the daemon's canary_timeout is not known here: wait up to this


def status(state_dir: Path, *, as_json: bool) -> int:
    reply = control.request(control.socket_path(state_dir), "status")
    if as_json:
        print(json.dumps(reply["status"], indent=2))
    else:
        print(health.table(health.from_json(reply["status"]), time.time()))
    return 0


def check(
    state_dir: Path,
    *,
    max_lag: float,
    warn_lag: float | None,
    canary: bool = False,
    canary_timeout: float | None = None,
) -> int:
    """Nagios plugin: one line, exit 0 OK, 1 WARNING, 2 CRITICAL. With ``canary``, a probe
    file goes through every target first, and one that does not arrive is critical."""
    path = control.socket_path(state_dir)
    try:
        if canary:
            # The daemon answers once every target has the probe or has timed out.
            wait = (canary_timeout or CANARY_WAIT) + control.CLIENT_TIMEOUT
            control.request(path, "canary", timeout=wait, canary_timeout=canary_timeout)
        reply = control.request(path, "status")
    except ControlError as exc:
        verdict = health.no_daemon(str(exc))
    else:
        warn = max_lag / 2 if warn_lag is None else warn_lag
        verdict = health.check(
            health.from_json(reply["status"]), max_lag=max_lag, warn_lag=warn, canary=canary
        )
    print(verdict.line)
    return verdict.code


def command(state_dir: Path, name: str, target: str | None) -> int:
    """pause, resume or sync-now, on one target or all."""
    reply = control.request(control.socket_path(state_dir), name, target=target)
    done = {"pause": "paused", "resume": "resumed", "sync-now": "full sync queued for"}[name]
    for key in reply["targets"]:
        note = (
            " (paused: it runs after resume)"
            if name == "sync-now" and key in reply["paused"]
            else ""
        )
        print(f"{done} {key}{note}")
    return 0
