"""The contenders: trigsync and lsyncd as long-running replicators, and plain rsync runs.

Each measurement gets a fresh sandbox (a ``Site``): an empty source directory and its
own loopback rsync daemon from ``trigsync.loopback``, with ``munge symlinks = no`` and
password auth (and TCP_NODELAY unless a workload asks for the stock config), so every
contender pushes to the same kind of receiver.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trigsync
from trigsync.loopback import LoopbackDaemon

from .procs import Proc, run_timed

READY_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class Site:
    """One sandbox: a source tree and the daemon module it is replicated to."""

    workdir: Path
    src: Path
    daemon: LoopbackDaemon

    @property
    def replica(self) -> Path:
        return self.daemon.module_path


@contextlib.contextmanager
def site(base: Path, name: str, *, src: Path | None = None, tuned: bool = True) -> Iterator[Site]:
    """A fresh sandbox with a running daemon; everything is stopped and removed afterwards.

    ``tuned`` gives the daemon ``socket options = TCP_NODELAY``; without it, it runs the
    stock rsyncd.conf that tutorials write.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    source = src or workdir / "src"
    source.mkdir(exist_ok=True)
    daemon = LoopbackDaemon(workdir / "rsyncd", tuned=tuned)
    try:
        daemon.start()
        yield Site(workdir, source, daemon)
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class Replicator(Protocol):
    name: str

    def start(self, where: Site, *, initial_sync: bool = True) -> Proc: ...

    def wait_ready(self, proc: Proc, *, initial_sync: bool = True) -> float: ...


def _dir(path: Path) -> str:
    return str(path).rstrip("/") + "/"


class Trigsync:
    """``python -m trigsync run SRC rsync://... --initial-sync``, logging at INFO to a file."""

    name = "trigsync"

    def __init__(self, extra: Sequence[str] = ()) -> None:
        self.extra = tuple(extra)

    def argv(self, where: Site, *, initial_sync: bool) -> list[str]:
        argv = [
            sys.executable, "-m", "trigsync", "run", str(where.src), where.daemon.url,
            "--password-file", str(where.daemon.password_file),
            "--state-dir", str(where.workdir / "state"),
        ]  # fmt: skip
        if initial_sync:
            argv.append("--initial-sync")
        return argv + list(self.extra)

    @staticmethod
    def env() -> dict[str, str]:
        """Run the trigsync this benchmark imported, wherever the current directory is."""
        package_root = str(Path(trigsync.__file__).resolve().parent.parent)
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        return {"PYTHONPATH": path}

    def start(self, where: Site, *, initial_sync: bool = True) -> Proc:
        return Proc(
            self.argv(where, initial_sync=initial_sync),
            log_path=where.workdir / "trigsync.log",
            env=self.env(),
        )

    def wait_ready(self, proc: Proc, *, initial_sync: bool = True) -> float:
        proc.wait_log(" watching ", READY_TIMEOUT)
        if initial_sync:
            return proc.wait_log("full sync done", READY_TIMEOUT)
        return proc.wait_log(" watching ", READY_TIMEOUT)


def _lua(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Lsyncd:
    """lsyncd at its fastest: ``default.rsync``, ``delay = 0``, rsync with TCP_NODELAY.

    ``archive = true`` because lsyncd's default rsync flags (-lts) drop permission
    changes, which the churn workload checks. ``processes`` is its ``maxProcesses``:
    1 is its default, trigsync's ``max_parallel`` (2) is the fair match.
    """

    def __init__(self, binary: str, *, processes: int = 1, name: str = "lsyncd") -> None:
        self.binary = binary
        self.processes = processes
        self.name = name

    def config(self, where: Site, *, initial_sync: bool) -> str:
        # ``init`` is the startup-sync function; only ``false`` (skip it) may replace it.
        init = "" if initial_sync else "  init = false,\n"
        return (
            "settings {\n"
            "  nodaemon = true,\n"
            "  insist = true,\n"
            f"  maxProcesses = {self.processes},\n"
            "}\n"
            "sync {\n"
            "  default.rsync,\n"
            f"  source = {_lua(_dir(where.src))},\n"
            f"  target = {_lua(where.daemon.url)},\n"
            "  delay = 0,\n"
            f"{init}"
            "  rsync = {\n"
            "    archive = true,\n"
            f"    password_file = {_lua(str(where.daemon.password_file))},\n"
            '    _extra = { "--sockopts=TCP_NODELAY" },\n'
            "  },\n"
            "}\n"
        )

    def start(self, where: Site, *, initial_sync: bool = True) -> Proc:
        conf = where.workdir / "lsyncd.lua"
        conf.write_text(self.config(where, initial_sync=initial_sync))
        return Proc([self.binary, str(conf)], log_path=where.workdir / "lsyncd.log")

    def wait_ready(self, proc: Proc, *, initial_sync: bool = True) -> float:
        if initial_sync:
            return proc.wait_log("finished.", READY_TIMEOUT)
        return proc.wait_log("--- Startup ---", READY_TIMEOUT)


def rsync_argv(where: Site, *sources: str, delete: bool = False) -> list[str]:
    """Plain ``rsync -a`` to the site's module, with the same socket options trigsync uses."""
    argv = [
        "rsync", "-a", "--sockopts=TCP_NODELAY",
        f"--password-file={where.daemon.password_file}",
    ]  # fmt: skip
    if delete:
        argv.append("--delete")
    return [*argv, *sources, where.daemon.url]


def plain_rsync(where: Site, *, delete: bool = False, timeout: float = 600.0) -> float:
    """Wall time of one ``rsync -a`` of the whole source tree into the module."""
    return run_timed(rsync_argv(where, _dir(where.src), delete=delete), timeout=timeout)


def spawn_rsync(where: Site, *sources: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        rsync_argv(where, *sources), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )


def tool_versions() -> dict[str, str]:
    """First lines of ``rsync --version`` and ``lsyncd --version``, where installed."""
    out: dict[str, str] = {}
    for name in ("rsync", "lsyncd"):
        path = shutil.which(name)
        if path is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [path, "--version"], capture_output=True, timeout=10, check=False
            ).stdout.decode(errors="replace")
            out[name] = " ".join(text.strip().splitlines()[0].split())
    root = Path(trigsync.__file__).resolve().parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            timeout=10,
            check=False,
        ).stdout.decode(errors="replace")
        out["trigsync"] = f"trigsync {trigsync.__version__} ({rev.strip() or 'no git'})"
    return out
