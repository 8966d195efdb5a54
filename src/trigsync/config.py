"""The configuration (plain data, ``config_data``) read from TOML or the command line.

Other formats (sersync's confxml.xml, in ``sersync.py``) only produce the same ``Config``.
Bad input raises ConfigError with one line naming the file, the key and the fix.

    state_dir = "/var/lib/trigsync"      # optional

    [[sync]]
    source = "/var/www"
    excludes = ["*.tmp", ".cache/"]
    delay = 0                            # seconds of lsyncd-style aggregation
    initial_sync = false
    targets = ["rsync://backup@10.0.0.2/www"]   # shorthand, or [[sync.target]] tables:

    [[sync.target]]
    url = "rsync://backup@10.0.0.3/www"
    password_file = "/etc/trigsync/www.pass"
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import mounts
from .config_data import CommandHook, Config, SyncConfig, default_state_dir, private_dir
from .config_values import (
    check_keys,
    hook_argv,
    metrics_address,
    positive,
    rsync_args,
    strings,
    webhook,
)
from .errors import ConfigError
from .excludes import Excludes
from .targets import DaemonTarget, TargetSpec, kind_of

log = logging.getLogger(__name__)

__all__ = [
    "CommandHook",
    "Config",
    "SyncConfig",
    "default_state_dir",
    "from_args",
    "from_mapping",
    "load",
    "private_dir",
    "with_env_password",
]

MAX_PARALLEL = 64  # most runs at once to one target


_TOP_KEYS: dict[str, Any] = {
    "state_dir": str,
    "sync": list,
    "canary_every": (int, float),
    "canary_name": str,
    "canary_timeout": (int, float),
    "metrics": str,
    "log_format": str,
    "log_file": str,
}
_SYNC_KEYS: dict[str, Any] = {
    "source": str,
    "targets": list,
    "target": list,
    "excludes": list,
    "delay": (int, float),
    "initial_sync": bool,
    "timeout": int,
    "contimeout": int,
    "rsync_path": str,
    "rsync_args": list,
    "watch_modify": bool,
    "watch_backend": str,
    "password_file": str,
    "reconcile_every": (int, float),
    "standby": bool,
    "auto_raise_limits": bool,
    "exclude_regex": list,
    "retry_max": (int, float),
    "command_hook": list,
    "on_success": list,
    "on_failure": list,
    "hook_timeout": (int, float),
    "webhook": str,
}
_HOOK_KEYS: dict[str, Any] = {
    "argv": list,
    "argv_after": list,
    "include_regex": list,
    "ignore_error": bool,
}
_TARGET_KEYS: dict[str, Any] = {
    "url": str,
    "password_file": str,
    "identity_file": str,
    "ssh_options": list,
    "remote_rsync": str,
    "ssh_fast_path": bool,
    "max_parallel": int,
    "rsync_args": list,
    "on_success": list,
    "on_failure": list,
}


def load(path: str | Path) -> Config:
    """Read a TOML config file."""
    where = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: no such config file; check the path given to --config"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # tomllib decodes the bytes itself, before parsing
        raise ConfigError(
            f"{where}: not UTF-8 (byte {exc.start}); save the file as UTF-8"
        ) from None
    return from_mapping(data, origin=where)


def from_mapping(data: Mapping[str, Any], *, origin: str) -> Config:
    check_keys(data, _TOP_KEYS, origin, "")
    blocks = data.get("sync")
    if not blocks:
        raise ConfigError(f"{origin}: no [[sync]] block; add one with a source and a target")
    syncs = tuple(_sync(b, origin, f"sync[{i}]") for i, b in enumerate(blocks))
    _check_overlap(syncs, origin)
    state_dir = data.get("state_dir") or default_state_dir()
    return Config(
        syncs=syncs,
        state_dir=state_dir,
        origin=origin,
        **_service_settings(data, origin),
    )


def _service_settings(data: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """The top-level keys of a running service: canary, metrics, logging."""
    for key in ("canary_every", "canary_timeout"):
        if data.get(key, 0) < 0:
            raise ConfigError(f"{origin}: {key} must be 0 or a positive number of seconds")
    name = data.get("canary_name", "")
    if "/" in name or name in (".", ".."):
        raise ConfigError(
            f"{origin}: canary_name {name!r} must be a plain file name, e.g. .trigsync-canary"
        )
    log_format = data.get("log_format", "text")
    if log_format not in ("text", "json"):
        raise ConfigError(f'{origin}: log_format must be "text" or "json", not {log_format!r}')
    metrics = data.get("metrics")
    if metrics is not None:
        metrics_address(metrics, origin)
    return {
        "canary_every": float(data.get("canary_every", 0)),
        "canary_name": name,
        "canary_timeout": float(data.get("canary_timeout", 30)) or 30.0,
        "metrics": metrics,
        "log_format": log_format,
        "log_file": data.get("log_file"),
    }


def from_args(
    source: str,
    targets: Sequence[str],
    *,
    password_file: str | None = None,
    excludes: Sequence[str] = (),
    delay: float = 0.0,
    initial_sync: bool = False,
    state_dir: str | None = None,
    rsync_path: str = "rsync",
    watch_backend: str = "inotify",
) -> Config:
    """The ad-hoc ``trigsync run SRC TARGET...`` form."""
    sync: dict[str, Any] = {
        "source": source,
        "targets": list(targets),
        "excludes": list(excludes),
        "delay": delay,
        "initial_sync": initial_sync,
        "rsync_path": rsync_path,
        "watch_backend": watch_backend,
    }
    if password_file:
        sync["password_file"] = password_file
    data: dict[str, Any] = {"sync": [sync]}
    if state_dir:
        data["state_dir"] = state_dir
    return from_mapping(data, origin="command line")


def _sync(block: Any, origin: str, where: str) -> SyncConfig:
    if not isinstance(block, Mapping):
        raise ConfigError(f"{origin}: {where} must be a table; write [[sync]] with keys below it")
    check_keys(block, _SYNC_KEYS, origin, where)
    source = block.get("source")
    if not source:
        raise ConfigError(
            f"{origin}: {where}.source is missing; set it to the directory to replicate"
        )
    source = os.path.abspath(source)
    if not os.path.isdir(source):
        raise ConfigError(
            f"{origin}: {where}.source {source} is not a directory; create it or fix the path"
        )
    default_password = block.get("password_file")
    specs: list[TargetSpec] = []
    for i, url in enumerate(block.get("targets", [])):
        specs.append(_target({"url": url}, origin, f"{where}.targets[{i}]", default_password))
    for i, table in enumerate(block.get("target", [])):
        specs.append(_target(table, origin, f"{where}.target[{i}]", default_password))
    if not specs:
        raise ConfigError(
            f'{origin}: {where} has no target; add targets = ["rsync://user@host/module"]'
        )
    excludes = tuple(strings(block, "excludes", origin, where))
    exclude_regex = tuple(strings(block, "exclude_regex", origin, where))
    try:  # compile now, so a bad pattern fails at load time
        Excludes(excludes, exclude_regex)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {where}: {exc}") from None
    delay = float(block.get("delay", 0.0))
    if delay < 0:
        raise ConfigError(
            f"{origin}: {where}.delay is {delay}; use 0 or a positive number of seconds"
        )
    backend = block.get("watch_backend", "inotify")
    if backend not in ("auto", "fanotify", "inotify"):
        raise ConfigError(
            f'{origin}: {where}.watch_backend is {backend!r}; use "auto", "fanotify" or "inotify"'
        )
    if block.get("reconcile_every", 0) < 0:
        raise ConfigError(
            f"{origin}: {where}.reconcile_every must be 0 or a positive number of seconds"
            " (0: no periodic full sync)"
        )
    for key in ("timeout", "contimeout", "retry_max"):
        if key in block and block[key] <= 0:
            raise ConfigError(f"{origin}: {where}.{key} must be a positive number of seconds")
    return SyncConfig(
        source=source,
        targets=tuple(specs),
        excludes=excludes,
        delay=delay,
        initial_sync=bool(block.get("initial_sync", False)),
        timeout=int(block.get("timeout", 60)),
        contimeout=int(block.get("contimeout", 10)),
        rsync_path=str(block.get("rsync_path", "rsync")),
        rsync_args=rsync_args(block, origin, where),
        watch_modify=bool(block.get("watch_modify", False)),
        watch_backend=backend,
        reconcile_every=float(block.get("reconcile_every", 0)),
        standby=bool(block.get("standby", True)),
        auto_raise_limits=bool(block.get("auto_raise_limits", False)),
        exclude_regex=exclude_regex,
        retry_max=float(block.get("retry_max", 30.0)),
        command_hooks=tuple(
            _command_hook(h, origin, f"{where}.command_hook[{i}]")
            for i, h in enumerate(block.get("command_hook", []))
        ),
        on_success=hook_argv(block, "on_success", origin, where),
        on_failure=hook_argv(block, "on_failure", origin, where),
        hook_timeout=positive(block, "hook_timeout", 30.0, origin, where),
        webhook=webhook(block, origin, where),
    )


def _command_hook(table: Any, origin: str, where: str) -> CommandHook:
    if not isinstance(table, Mapping):
        raise ConfigError(f'{origin}: {where} must be a table with argv = ["/bin/sh"]')
    check_keys(table, _HOOK_KEYS, origin, where)
    argv = tuple(strings(table, "argv", origin, where))
    if not argv:
        raise ConfigError(f'{origin}: {where}.argv is empty; e.g. argv = ["/usr/local/bin/x"]')
    include = tuple(strings(table, "include_regex", origin, where))
    try:
        Excludes(regexes=include)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {where}: {exc}") from None
    return CommandHook(
        argv=argv,
        argv_after=tuple(strings(table, "argv_after", origin, where)),
        include_regex=include,
        ignore_error=bool(table.get("ignore_error", True)),
    )


def _target(table: Any, origin: str, where: str, default_password: str | None) -> TargetSpec:
    if isinstance(table, str):
        table = {"url": table}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{origin}: {where} must be a URL string or a table with url = ...")
    check_keys(table, _TARGET_KEYS, origin, where)
    url = table.get("url")
    if not url:
        raise ConfigError(
            f'{origin}: {where}.url is missing; e.g. url = "rsync://user@host/module"'
        )
    spec = TargetSpec(
        url=url,
        password_file=table.get("password_file", default_password),
        identity_file=table.get("identity_file"),
        ssh_options=tuple(strings(table, "ssh_options", origin, where)),
        remote_rsync=table.get("remote_rsync"),
        ssh_fast_path=table.get("ssh_fast_path", False),
        max_parallel=int(table.get("max_parallel", 2)),
        extra_rsync_args=rsync_args(table, origin, where),
        # Only a daemon target without a password file takes the environment's password.
        password=None if table.get("password_file", default_password) else _env_password(url),
        on_success=hook_argv(table, "on_success", origin, where),
        on_failure=hook_argv(table, "on_failure", origin, where),
    )
    if not 1 <= spec.max_parallel <= MAX_PARALLEL:
        # Each run is a lane the worker wakes for every change: a million took 13 s and
        # 1 GB before the first run, and no receiver takes that many connections.
        raise ConfigError(
            f"{origin}: {where}.max_parallel is {spec.max_parallel}; use 1 to {MAX_PARALLEL}"
        )
    try:
        kind_of(url)(spec, state_dir=Path("/nonexistent"))  # parse the URL now
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {where}.url: {exc}") from None
    return spec


def _env_password(url: str) -> str | None:
    return os.environ.get("RSYNC_PASSWORD") if kind_of(url) is DaemonTarget else None


def with_env_password(cfg: Config, password: str | None) -> Config:
    """``cfg`` as ``load`` makes it while RSYNC_PASSWORD is ``password``: a SIGHUP reads
    the file again after the variable has left our environment (see cli)."""
    if not password:
        return cfg

    def give(spec: TargetSpec) -> TargetSpec:
        if spec.password_file or spec.password or kind_of(spec.url) is not DaemonTarget:
            return spec
        return dataclasses.replace(spec, password=password)

    syncs = tuple(
        dataclasses.replace(s, targets=tuple(give(t) for t in s.targets)) for s in cfg.syncs
    )
    return dataclasses.replace(cfg, syncs=syncs)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _check_overlap(syncs: Sequence[SyncConfig], origin: str) -> None:
    _check_shared_targets(syncs, origin)
    for sync in syncs:
        # Resolved: a symlink must not hide the overlap from this check.
        source = os.path.realpath(sync.source)
        for spec in sync.targets:
            if spec.url.startswith("/") or spec.url.startswith("file://"):
                dest = os.path.realpath(spec.url.removeprefix("file://"))
                if _inside(dest, source) or mounts.inside(dest, source):
                    raise ConfigError(
                        f"{origin}: target {dest} lies inside source {sync.source}; "
                        "that would replicate forever: choose a directory outside it"
                    )
                if _inside(source, dest) or mounts.inside(source, dest):
                    raise ConfigError(
                        f"{origin}: source {sync.source} lies inside target {dest}; "
                        "a full sync would delete it: choose a directory outside it"
                    )


def _check_shared_targets(syncs: Sequence[SyncConfig], origin: str) -> None:
    """Two workers on one destination: each full sync (--delete) would remove what the
    other sends, so neither replica would ever equal its source."""
    seen: dict[str, int] = {}
    for i, sync in enumerate(syncs):
        for spec in sync.targets:
            url = spec.url
            if url.startswith("/") or url.startswith("file://"):
                key = os.path.realpath(url.removeprefix("file://"))
            else:
                key = url.rstrip("/")
            if key in seen:
                where = f"sync[{i}]" if seen[key] == i else f"sync[{seen[key]}] and sync[{i}]"
                raise ConfigError(
                    f"{origin}: target {url} is given twice ({where}); each full sync to it "
                    "would delete what the other sends: give each its own directory"
                )
            seen[key] = i
