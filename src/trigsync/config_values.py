"""Checks of single config values, shared by every table of the TOML config: each raises
ConfigError with one line that names the file, the key and the fix."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError


def metrics_address(text: str, origin: str = "metrics") -> tuple[str, int]:
    """ "127.0.0.1:9108" or "[::1]:9108" -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f'{origin}: metrics = {text!r} is not HOST:PORT; write e.g. metrics = "127.0.0.1:9108"'
        )
    return host.strip("[]"), int(port)


def hook_argv(table: Mapping[str, Any], key: str, origin: str, where: str) -> tuple[str, ...]:
    argv = tuple(strings(table, key, origin, where))
    if key in table and not argv:
        raise ConfigError(
            f'{origin}: {where}.{key} is empty; give an argv list, e.g. ["/usr/local/bin/notify"]'
        )
    return argv


def positive(table: Mapping[str, Any], key: str, default: float, origin: str, where: str) -> float:
    value = float(table.get(key, default))
    if value <= 0:
        raise ConfigError(f"{origin}: {where}.{key} must be a positive number of seconds")
    return value


def webhook(table: Mapping[str, Any], origin: str, where: str) -> str | None:
    url = table.get("webhook")
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{origin}: {where}.webhook must be an http:// or https:// URL, not {url!r}"
        )
    return url


def check_keys(
    table: Mapping[str, Any], allowed: Mapping[str, Any], origin: str, where: str
) -> None:
    prefix = f"{where}." if where else ""
    for key, value in table.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(allowed)}"
            raise ConfigError(f"{origin}: unknown key {prefix}{key}; {hint}")
        expected = allowed[key]
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            names = " or ".join(
                t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,))
            )
            raise ConfigError(
                f"{origin}: {prefix}{key} must be of type {names}, not {type(value).__name__}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            # TOML allows inf and nan: delay = inf never sent a change, and nan passes
            # every range check (each comparison with nan is false).
            raise ConfigError(
                f"{origin}: {prefix}{key} is {value}; give a finite number of seconds"
            )


def strings(table: Mapping[str, Any], key: str, origin: str, where: str) -> list[str]:
    values = table.get(key, [])
    if not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{origin}: {where}.{key} must be a list of strings")
    return list(values)


# rsync options after which a run writes nothing, or which destroy the source: trigsync
# would log each run as sent while the replica never changes (or empty the source).
_NOTHING_WRITTEN = {
    "--dry-run": "makes every run write nothing",
    "--list-only": "makes every run write nothing",
    "--only-write-batch": "makes every run write nothing",
    "--read-batch": "replays a batch file instead of the source",
    "--remove-source-files": "deletes each file sent from the source",
}
# rsync's short options that take a value: the rest of a bundle is that value.
_SHORT_WITH_VALUE = frozenset("BefMT@")


def rsync_args(table: Mapping[str, Any], origin: str, where: str) -> tuple[str, ...]:
    """``rsync_args``, without an option that would make trigsync report runs that
    replicate nothing."""
    args = strings(table, "rsync_args", origin, where)
    for arg in args:
        name = arg.split("=", 1)[0]
        why = _NOTHING_WRITTEN.get(name)
        if why is None and arg.startswith("-") and not arg.startswith("--"):
            for letter in arg[1:]:
                if letter in _SHORT_WITH_VALUE:
                    break
                if letter == "n":
                    why = _NOTHING_WRITTEN["--dry-run"]
        if why is not None:
            raise ConfigError(f"{origin}: {where}.rsync_args holds {arg!r}, which {why}; remove it")
    return tuple(args)
