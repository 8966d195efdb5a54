"""Run trigsync as a real process (the CLI) against real targets, and describe each target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.proc import Proc, ProcGroup, wait_for
from tests.support.rsyncd import RsyncDaemon

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m trigsync ARGS`` to its end, as a user runs a one-shot command."""
    return subprocess.run(  # noqa: S603 - argv list, no shell
        [sys.executable, "-m", "trigsync", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


@dataclass
class Replica:
    """One target kind as the conformance suite sees it: its URL, its tree, its options."""

    kind: str
    url: str
    path: Path
    options: dict[str, object] = field(default_factory=dict)
    owners: bool = False  # ssh replicas belong to the test user: compare modes, not owners
    log: Path | None = None  # the rsync daemon's log, for bytes on the wire
    daemon: RsyncDaemon | None = None  # to stop and restart it
    ready: str | None = None  # a log line to wait for after the start (ssh-daemon's route)


def _toml(value: object) -> str:
    """A TOML value: JSON scalars are valid TOML; lists and tables are spelled out."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def write_config(
    path: Path,
    *,
    source: Path,
    replicas: Sequence[Replica],
    state_dir: Path,
    excludes: Sequence[str] = (),
    initial_sync: bool = True,
    extra: dict[str, object] | None = None,
    top: dict[str, object] | None = None,
) -> Path:
    """``extra`` goes into the [[sync]] block, ``top`` above it (canary, metrics, logs)."""
    lines = [
        f"state_dir = {_toml(str(state_dir))}",
        *(f"{k} = {_toml(v)}" for k, v in (top or {}).items()),
        "[[sync]]",
        f"source = {_toml(str(source))}",
        f"initial_sync = {'true' if initial_sync else 'false'}",
        f"excludes = {_toml(list(excludes))}",
    ]
    lines += [f"{k} = {_toml(v)}" for k, v in (extra or {}).items()]
    for replica in replicas:
        lines += ["[[sync.target]]", f"url = {_toml(replica.url)}"]
        lines += [f"{k} = {_toml(v)}" for k, v in replica.options.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Trigsync:
    """``python -m trigsync run --config FILE`` in the background."""

    def __init__(self, procs: ProcGroup, config: Path, *args: str) -> None:
        self.procs = procs
        self.config = config
        self.args = args
        self.proc: Proc | None = None

    def start(self, *, wait_watching: bool = True) -> Trigsync:
        argv = [sys.executable, "-m", "trigsync", "run", "--config", str(self.config), *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = self.procs.start(argv, name="trigsync", env=env)
        if wait_watching:
            wait_for(
                lambda: b"watching " in self.proc.stderr() or not self.proc.running,  # type: ignore[union-attr]
                timeout=20,
                what="trigsync to start watching",
            )
            assert self.proc.running, self.log()
        return self

    def log(self) -> str:
        return self.proc.stderr().decode(errors="replace") if self.proc else ""

    def wait_log(self, text: str, timeout: float = 20) -> None:
        """Wait until the log says ``text``; fail with the log's tail."""
        try:
            wait_for(lambda: text in self.log(), timeout=timeout, what=repr(text))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{self.log()[-3000:]}") from None

    def stop(self) -> int:
        """SIGTERM, as systemd would; returns the exit status."""
        assert self.proc is not None
        self.proc.signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGKILL)
        self.proc.wait(10)
