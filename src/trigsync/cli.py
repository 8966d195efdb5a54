"""The command line: parses argv, sets up logging, maps errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from . import __version__, config, sersync_cli
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
    run.add_argument(
        "-d", "--daemon", action="store_true", help="detach into the background (sersync -d)"
    )
    run.add_argument("--pid-file", help="with -d: write the daemon's pid here")
    run.add_argument("-n", dest="threads", type=int, help=argparse.SUPPRESS)  # sersync's -n
    run.add_argument(
        "--once", action="store_true", help="run the initial sync and exit (for cron and scripts)"
    )
    run.add_argument(
        "--delay", type=float, default=0.0, help="aggregate changes for this many seconds"
    )
    _verbosity(run)

    verify = sub.add_parser(
        "verify", help="list how each target differs from its source (exit 1 on any drift)"
    )
    _sync_arguments(verify)
    _verbosity(verify)

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
    run.add_argument(
        "--exclude", action="append", default=[], metavar="PATTERN", help="rsync-style exclude"
    )
    run.add_argument("--state-dir", help="where trigsync keeps its state")
    run.add_argument("--rsync-path", default="rsync", help="the rsync binary to run")


def _verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )


def _load_config(args: argparse.Namespace, top: argparse.ArgumentParser) -> config.Config:
    parser: argparse.ArgumentParser = getattr(args, "subparser", top)
    if args.sersync_config:
        if args.config or args.source:
            parser.error("give one of -o CONFXML, --config FILE or SOURCE TARGET...")
        return sersync_cli.load(args.sersync_config)
    if args.config:
        if args.source:
            parser.error("give either --config FILE or SOURCE TARGET..., not both")
        return config.load(args.config)
    if not args.source or not args.targets:
        parser.error("give SOURCE and at least one TARGET, or --config FILE")
    return config.from_args(
        args.source,
        args.targets,
        password_file=args.password_file,
        excludes=args.exclude,
        delay=getattr(args, "delay", 0.0),
        state_dir=args.state_dir,
        rsync_path=args.rsync_path,
    )


async def _serve(engine: Engine) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _log_status, engine)
    await engine.run(stop)


def _log_status(engine: Engine) -> None:
    """``kill -USR1``: one line per target from the engine's status snapshot."""
    for sync in engine.status().syncs:
        for t in sync.targets:
            log.info(
                "status %s: %s, %d pending%s, %d in flight, lag %.3f s, %d batches, "
                "%d paths sent, %d failures, last error: %s",
                t.target,
                t.state,
                t.pending,
                " + full sync" if t.full_pending else "",
                t.in_flight,
                t.lag,
                t.batches,
                t.paths_sent,
                t.failures,
                t.last_error or "none",
            )


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cfg = _load_config(args, parser)
    if args.state_dir and (args.config or args.sersync_config):  # the command line wins
        cfg = config.Config(cfg.syncs, args.state_dir, cfg.origin)
    engine = Engine(cfg, initial_sync=args.initial_sync)
    if args.threads is not None:
        log.info("-n %d: not needed; trigsync runs one worker per target", args.threads)
    if args.once:
        ok = asyncio.run(engine.once())
        return 0 if ok else 5
    if args.daemon:
        from .daemon import daemonize, preflight, remove_pid_file

        preflight(cfg)
        daemonize(args.pid_file)
        try:
            asyncio.run(_serve(engine))
        finally:
            remove_pid_file(args.pid_file)
    else:
        asyncio.run(_serve(engine))
    log.info("stopped")
    return 0


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


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one return per command
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if sersync_cli.is_sersync_argv(argv):  # sersync2's command line, trigsync in its place
        try:
            argv = sersync_cli.translate(argv)
        except TrigsyncError as exc:
            print(f"trigsync: {exc}", file=sys.stderr)
            return exc.exit_code
    args = parser.parse_args(argv)
    _setup_logging(args)
    try:
        if args.command == "run":
            return _run(args, parser)
        if args.command == "verify":
            return _verify(args, parser)
        if args.command == "doctor":
            from .doctor import diagnose, report

            return report(diagnose(_load_config(args, parser)))
        if args.command == "import-sersync":
            return sersync_cli.import_sersync(args.xml)
        if args.command == "demo":
            from .demo import demo

            return demo(keep=args.keep)
    except TrigsyncError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2
