"""The command line's service group: status, check, pause, resume, sync-now (one request
each on the daemon's control socket) and ``service install``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from . import config
from .errors import ConfigError


def check_usage_error(message: str) -> int:
    """A monitoring plugin called wrong says UNKNOWN (3) on stdout: exit 2 would page
    someone for a CRITICAL that is only a typo in the check's command."""
    from .health import UNKNOWN, unknown

    print(unknown(f"trigsync check: {message}").line)
    return UNKNOWN


class _PluginParser(argparse.ArgumentParser):
    """``check``'s parser: its usage errors are UNKNOWN (see check_usage_error)."""

    def error(self, message: str) -> NoReturn:
        sys.exit(check_usage_error(message))


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    verbosity: Callable[[argparse.ArgumentParser], None],
) -> None:
    """status, check, pause, resume, sync-now (over the control socket) and service install."""
    status = sub.add_parser("status", help="show each target's state, pending paths and lag")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    plain, sub._parser_class = sub._parser_class, _PluginParser
    check = sub.add_parser(
        "check", help="Nagios/Icinga/Zabbix check: exit 0 ok, 1 warning, 2 critical, 3 unknown"
    )
    sub._parser_class = plain
    check.add_argument(
        "--max-lag", default="60s", help="critical past this lag (default 60s; 90, 5m, 1h)"
    )
    check.add_argument("--warn-lag", help="warning past this lag (default: half of --max-lag)")
    check.add_argument(
        "--canary",
        action="store_true",
        help="write a probe file into each source and wait until every target holds it",
    )
    check.add_argument(
        "--canary-timeout", help="critical if the probe is not on a target by then (default 30s)"
    )
    controls = [status, check]
    for name, text in (
        ("pause", "stop sending to TARGET (or all); changes keep accumulating"),
        ("resume", "send again what accumulated while paused"),
        ("sync-now", "run one reconciling full sync to TARGET (or all) now"),
    ):
        controls.append(sub.add_parser(name, help=text))
        controls[-1].add_argument(
            "target", nargs="?", metavar="TARGET", help="a target URL as in the config"
        )
    for parser in controls:
        parser.add_argument("-c", "--config", help="read the state directory from this config")
        parser.add_argument("--state-dir", help="the daemon's state directory")
        parser.set_defaults(control=True)
        verbosity(parser)

    service = sub.add_parser("service", help="install a systemd unit for trigsync")
    action = service.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = action.add_parser("install", help="write trigsync.service (Type=notify, watchdog)")
    install.add_argument(
        "-c", "--config", help="config file the unit runs (default /etc/trigsync.toml)"
    )
    install.add_argument("--user", action="store_true", help="a user unit (systemctl --user)")
    install.add_argument("--unit-dir", help="write the unit here instead of systemd's directory")
    install.add_argument("--watchdog", default="30s", help="WatchdogSec (default 30s)")
    verbosity(install)


def _state_dir(args: argparse.Namespace) -> Path:
    """--state-dir, else the config file's state_dir, else the default."""
    if args.state_dir:
        return Path(args.state_dir)
    if args.config:
        return Path(config.load(args.config).state_dir)
    return Path(config.default_state_dir())


def control(args: argparse.Namespace) -> int:
    try:
        return _talk(args)
    except BrokenPipeError:  # `trigsync status | head -1`: the reader has gone
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())  # so the flush at exit does not fail again
        os.close(null)
        return 1


def _talk(args: argparse.Namespace) -> int:
    """status, check, pause, resume, sync-now: one request on the control socket."""
    from . import ctl
    from .health import parse_duration

    if args.command == "check":
        try:
            max_lag = parse_duration(args.max_lag)
            warn_lag = parse_duration(args.warn_lag) if args.warn_lag else None
            canary_timeout = parse_duration(args.canary_timeout) if args.canary_timeout else None
            state_dir = _state_dir(args)  # a --config that is missing or wrong: UNKNOWN too
        except ConfigError as exc:
            return check_usage_error(str(exc))
        return ctl.check(
            state_dir,
            max_lag=max_lag,
            warn_lag=warn_lag,
            canary=args.canary,
            canary_timeout=canary_timeout,
        )
    if args.command == "status":
        return ctl.status(_state_dir(args), as_json=args.json)
    return ctl.command(_state_dir(args), args.command, args.target)


def install_service(args: argparse.Namespace) -> int:
    from . import service
    from .health import parse_duration

    user = args.user
    path = Path(args.config or "/etc/trigsync.toml").absolute()
    config.load(path)  # a unit that cannot start helps nobody: check the file now
    unit = service.install(
        path,
        user=user,
        directory=Path(args.unit_dir) if args.unit_dir else None,
        watchdog=max(1, round(parse_duration(args.watchdog))),
    )
    print(f"wrote {unit}")
    print(service.enable_line(user=user))
    return 0
