"""The command line: parses argv, sets up logging, maps errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import (
    __version__,
    background,
    cli_service,
    config,
    daemon,
    logs,
    sersync_cli,
    spawnfds,
)
from .engine import Engine
from .errors import TrigsyncError

log = logging.getLogger("trigsync")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trigsync", description="Event-triggered, real-time directory replication with rsync."
    )
    parser.add_argument("--version", action="version", version=f"trigsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="watch a tree and replicate every change to the targets",
        epilog=sersync_cli.SERSYNC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _sync_arguments(run)
    run.add_argument(
        "-r",
        "--initial-sync",
        action="store_true",
        help="push the whole tree once at start (sersync -r)",
    )
    run.add_argument("-n", dest="threads", type=int, help=argparse.SUPPRESS)  # sersync's -n
    run.add_argument(
        "--once", action="store_true", help="run the initial sync and exit (for cron and scripts)"
    )
    run.add_argument(
        "--delay", type=float, help="aggregate changes for this many seconds (default 0)"
    )
    run.add_argument(
        "-d",
        "--daemon",
        action="store_true",
        help="go to the background once started (no systemd; sersync -d)",
    )
    run.add_argument("--pid-file", help="write the pid here once started; removed at exit")
    run.add_argument(
        "--log-file",
        help="log here, not to stderr; SIGHUP reopens it (with -d: STATE_DIR/trigsync.log)",
    )
    _verbosity(run)

    verify = sub.add_parser(
        "verify", help="list how each target differs from its source (exit 1 on any drift)"
    )
    _sync_arguments(verify)
    _verbosity(verify)

    cli_service.add_commands(sub, _verbosity)

    doctor = sub.add_parser(
        "doctor", help="check the setup of every target: one line per finding, with its fix"
    )
    _sync_arguments(doctor)
    _verbosity(doctor)

    imp = sub.add_parser(
        "import-sersync", help="print the trigsync.toml equivalent of a sersync confxml.xml"
    )
    imp.add_argument("xml", metavar="CONFXML", help="sersync's confxml.xml")
    _verbosity(imp)

    demo = sub.add_parser("demo", help="replicate a demo tree to a throwaway local rsync daemon")
    demo.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    _verbosity(demo)
    return parser


def _sync_arguments(run: argparse.ArgumentParser) -> None:
    run.set_defaults(subparser=run)  # so usage errors show this command's usage
    run.add_argument("source", nargs="?", help="directory to replicate")
    run.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="rsync://user@host[:port]/module, user@host::module, ssh://user@host/path, "
        "user@host:/path, or a local directory",
    )
    run.add_argument("-c", "--config", help="TOML config file with [[sync]] blocks")
    run.add_argument("-o", dest="sersync_config", metavar="CONFXML", help="sersync's confxml.xml")
    run.add_argument("--password-file", help="rsync daemon password file (mode 600)")
    run.add_argument("--exclude", action="append", metavar="PATTERN", help="rsync-style exclude")
    run.add_argument("--state-dir", help="where trigsync keeps its state")
    run.add_argument("--rsync-path", help="the rsync binary to run (default rsync)")
    run.add_argument(
        "--watch-backend",
        choices=("auto", "fanotify", "inotify"),
        help="inotify (default); auto: fanotify where allowed (root, Linux 5.17+), else inotify",
    )


def _verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format=logs.TEXT, stream=sys.stderr)


# Flags that set one sync's keys: with --config, the file's [[sync]] block holds them.
_PER_SYNC = {
    "password_file": "password_file",
    "exclude": "excludes",
    "delay": "delay",
    "rsync_path": "rsync_path",
    "watch_backend": "watch_backend",
}


def _load_config(args: argparse.Namespace, top: argparse.ArgumentParser) -> config.Config:
    parser: argparse.ArgumentParser = getattr(args, "subparser", top)
    if args.sersync_config:
        if args.config or args.source:
            parser.error("give one of -o CONFXML, --config FILE or SOURCE TARGET...")
        return sersync_cli.load(args.sersync_config)
    if args.config:
        if args.source:
            parser.error("give either --config FILE or SOURCE TARGET..., not both")
        for dest, key in _PER_SYNC.items():
            if getattr(args, dest, None) is not None:
                flag = "--" + dest.replace("_", "-")
                parser.error(
                    f"{flag} cannot be given with --config; set {key} in {args.config} instead"
                )
        cfg = config.load(args.config)
    else:
        if not args.source or not args.targets:
            parser.error("give SOURCE and at least one TARGET, or --config FILE")
        cfg = config.from_args(
            args.source,
            args.targets,
            password_file=args.password_file,
            excludes=args.exclude or (),
            delay=getattr(args, "delay", None) or 0.0,
            state_dir=args.state_dir,
            rsync_path=args.rsync_path or "rsync",
            watch_backend=getattr(args, "watch_backend", None) or "inotify",
        )
    # The targets that use RSYNC_PASSWORD hold it now (TargetSpec.password): no child
    # started from here on (rsync, ssh, anything else) inherits it. A reload gets it back.
    password = os.environ.pop("RSYNC_PASSWORD", None)
    args.env_password = password or getattr(args, "env_password", None)
    return cfg


async def _serve(
    engine: Engine, on_ready: Callable[[], None], load: Callable[[], config.Config] | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _log_status, engine)
    if load is not None:  # a config file: SIGHUP reads it again (and reopens the log)
        from .reload import Reloader

        reloader = Reloader(engine, load)
        tasks: set[asyncio.Task[object]] = set()

        def hangup() -> None:
            _reopen_logs()
            if stop.is_set():
                log.info("SIGHUP: stopping; the config is read at the next start")
                return
            task: asyncio.Task[object] = asyncio.create_task(reloader.reload())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, hangup)
    elif background.logging_to_file():
        loop.add_signal_handler(signal.SIGHUP, _reopen_logs)
    else:  # the terminal went away: stop cleanly rather than die
        loop.add_signal_handler(signal.SIGHUP, stop.set)
    await daemon.serve(engine, stop, on_ready=on_ready)


def _reopen_logs() -> None:
    """``kill -HUP`` (logrotate): reopen the log file."""
    reopened = background.reopen_logs()
    if reopened:
        log.info("SIGHUP: reopened %d log file(s)", reopened)


def _log_status(engine: Engine) -> None:
    """``kill -USR1``: one line per target from the engine's status snapshot."""
    for sync in engine.status().syncs:
        for t in sync.targets:
            log.info(
                "status %s: %s, %d pending%s, %d in flight, lag %.3f s, %d batches, "
                "%d paths sent, %d failures, %d restarts, last error: %s%s",
                t.target,
                t.state,
                t.pending,
                " + full sync" if t.full_pending else "",
                t.in_flight,
                t.lag,
                t.batches,
                t.paths_sent,
                t.failures,
                t.restarts,
                t.last_error or "none",
                f"; journal behind: {t.journal_error}" if t.journal_error else "",
            )


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cfg = _load_config(args, parser)
    if args.state_dir and (args.config or args.sersync_config):  # the command line wins
        cfg = dataclasses.replace(cfg, state_dir=args.state_dir)
    logs.use_format(cfg.log_format)
    before, after = spawnfds.raise_fd_limit()
    if after != before:
        log.debug("open files limit raised from %d to %d", before, after)
    engine = Engine(cfg, initial_sync=args.initial_sync)
    if args.threads is not None:
        log.info("-n %d: not needed; trigsync runs one worker per target", args.threads)
    if args.once:
        ok = asyncio.run(engine.once())
        return 0 if ok else 5
    log_file = args.log_file or cfg.log_file  # the command line wins over the file
    if args.daemon or log_file:
        # With -d, startup errors still reach the terminal; after ready, only the file.
        background.log_to_file(
            log_file or os.path.join(cfg.state_dir, "trigsync.log"), keep_stderr=args.daemon
        )
    pid_file = Path(args.pid_file).absolute() if args.pid_file else None
    if pid_file is not None:
        background.check_pid_file(pid_file)
    detached = background.detach() if args.daemon else None  # before any thread or loop

    def ready() -> None:
        if pid_file is not None:
            try:
                background.write_pid_file(pid_file)
            except OSError as exc:  # raised here it would kill the sidecar, not the start
                log.error("cannot write the pid file %s: %s", pid_file, exc.strerror)
        if detached is not None:
            detached.ready()
            background.log_to_file(None, keep_stderr=False)

    try:
        asyncio.run(_serve(engine, ready, _reload_source(args) if args.config else None))
    finally:
        if pid_file is not None:
            background.remove_pid_file(pid_file)
    log.info("stopped")
    return 0


def _reload_source(args: argparse.Namespace) -> Callable[[], config.Config]:
    """How SIGHUP reads the config again, with the same command-line overrides."""

    def load() -> config.Config:
        cfg = config.with_env_password(config.load(args.config), args.env_password)
        return dataclasses.replace(cfg, state_dir=args.state_dir) if args.state_dir else cfg

    return load


def _verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .verify import verify

    drifts = asyncio.run(verify(_load_config(args, parser)))
    worst = 0
    for drift in drifts:
        if drift.error:
            print(f"{drift.target}: cannot verify: {drift.error}")
            worst = max(worst, 5)
        elif drift.lines:
            print(f"{drift.target}: {len(drift.lines)} differences from {drift.source}")
            for line in drift.lines[:50]:
                print(f"  {line}")
            if len(drift.lines) > 50:
                print(f"  ... and {len(drift.lines) - 50} more")
            worst = max(worst, 1)
        else:
            print(f"{drift.target}: in sync with {drift.source}")
    return worst


def _demo(args: argparse.Namespace) -> int:
    from .demo import demo

    return demo(keep=args.keep)


def _doctor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .doctor import diagnose, report

    return report(diagnose(_load_config(args, parser)))


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, except that ``check`` called wrong exits UNKNOWN (3), as a plugin."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        message = f"unrecognized arguments: {' '.join(unknown)}"
        if getattr(args, "command", None) == "check":
            sys.exit(cli_service.check_usage_error(message))
        parser.error(message)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if sersync_cli.is_sersync_argv(argv):  # sersync2's command line, trigsync in its place
        try:
            argv = sersync_cli.translate(argv)
        except TrigsyncError as exc:
            print(f"trigsync: {exc}", file=sys.stderr)
            return exc.exit_code
    args = _parse(parser, argv)
    _setup_logging(args)
    commands: dict[str, Callable[[], int]] = {
        "run": lambda: _run(args, parser),
        "verify": lambda: _verify(args, parser),
        "service": lambda: cli_service.install_service(args),
        "demo": lambda: _demo(args),
        "doctor": lambda: _doctor(args, parser),
        "import-sersync": lambda: sersync_cli.import_sersync(args.xml),
    }
    try:
        if getattr(args, "control", False):
            return cli_service.control(args)
        if args.command in commands:
            return commands[args.command]()
    except TrigsyncError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2
