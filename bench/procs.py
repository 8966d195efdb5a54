"""Child processes the benchmarks start, and what /proc says about them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

_TICK = os.sysconf("SC_CLK_TCK")


class BenchTimeout(Exception):
    """A wait in a benchmark ran past its deadline."""


class Proc:
    """A child in its own session, its output in a log file; stop() also kills its children."""

    def __init__(
        self, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        try:
            self.popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 8) -> str:
        return " | ".join(self.log_text().strip().splitlines()[-lines:])

    def wait_log(self, needle: str, timeout: float) -> float:
        """Poll the log until ``needle`` appears; return the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if needle in self.log_text():
                return now
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[0]} exited with {self.popen.returncode} before logging "
                    f"{needle!r}: {self.log_tail()}"
                )
            if now > deadline:
                raise BenchTimeout(f"no {needle!r} within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.002)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole session (rsync children included)."""
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait()
            # Whatever the leader left behind in its session (a stray rsync) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        finally:
            self._log.close()
        return self.popen.returncode

    def __enter__(self) -> Proc:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """utime + stime of a live process (plus its reaped children's), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14 to 17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def rss_mib(pid: int) -> float:
    """VmRSS of a live process in MiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def run_timed(argv: Sequence[str], *, timeout: float, ok: tuple[int, ...] = (0,)) -> float:
    """Run a command to completion, return its wall time; fail on an unexpected exit code."""
    started = time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchTimeout(f"{argv[0]} ran longer than {timeout:.0f} s") from exc
    seconds = time.monotonic() - started
    if done.returncode not in ok:
        err = done.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {err}")
    return seconds


def count_lines_of(argv: Sequence[str], *, timeout: float) -> tuple[float, int]:
    """Time ``argv | wc -l`` without a shell: two processes joined by a pipe."""
    started = time.monotonic()
    first = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert first.stdout is not None
    try:
        wc = subprocess.run(
            ["wc", "-l"], stdin=first.stdout, capture_output=True, timeout=timeout, check=True
        )
    finally:
        first.stdout.close()
        if first.poll() is None:
            first.kill()
        first.wait()
    return time.monotonic() - started, int(wc.stdout.split()[0])
