"""Background processes for tests: argv lists only (never a shell), output to files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from signal import Signals
from types import TracebackType
from typing import IO, Self

StrPath = str | os.PathLike[str]


class Proc:
    """One background process in its own session, with stdout/stderr captured to files.

    `stop()` terminates the whole process group (rsync's ssh child, sshd's per-connection
    children), waits, then kills.
    """

    def __init__(
        self,
        argv: Sequence[StrPath | bytes],
        *,
        log_dir: Path,
        name: str = "proc",
        env: Mapping[str, str] | None = None,
        cwd: StrPath | None = None,
        stdin_pipe: bool = False,
    ) -> None:
        self.argv: list[StrPath | bytes] = list(argv)
        self.name = name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stdin_pipe = stdin_pipe
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        self._popen: subprocess.Popen[bytes] | None = None
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> Self:
        if self._popen is not None:
            raise RuntimeError(f"{self.name}: already started")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._popen = subprocess.Popen(  # noqa: S603 - argv list, no shell
                self.argv,
                stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdin(self) -> IO[bytes]:
        if self.popen.stdin is None:
            raise RuntimeError(f"{self.name}: started without stdin_pipe=True")
        return self.popen.stdin

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for exit (raises subprocess.TimeoutExpired); closes our end of stdin first."""
        self.close_stdin()
        return self.popen.wait(timeout)

    def close_stdin(self) -> None:
        if self._popen is not None and self._popen.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._popen.stdin.close()

    def signal(self, sig: Signals) -> None:
        if self.running:
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate the process group, wait up to `timeout`, then kill. Returns the exit code."""
        if self._popen is None:
            return None
        popen = self._popen
        if popen.poll() is None:
            self._killpg(signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._killpg(signal.SIGKILL)
                popen.wait(timeout)
        # Descendants left in the group (forked daemon children) go too.
        self._killpg(signal.SIGKILL)
        self.close_stdin()
        return popen.returncode

    def kill(self, timeout: float = 5.0) -> int | None:
        """SIGKILL the process group at once (no graceful exit path) and reap it."""
        if self._popen is None:
            return None
        self._killpg(signal.SIGKILL)
        self._popen.wait(timeout)
        self.close_stdin()
        return self._popen.returncode

    def _killpg(self, sig: Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stdout(self) -> bytes:
        return self.stdout_path.read_bytes() if self.stdout_path.exists() else b""

    def stderr(self) -> bytes:
        return self.stderr_path.read_bytes() if self.stderr_path.exists() else b""

    def describe(self) -> str:
        """A summary for assertion messages: argv, exit code and both outputs."""
        argv = " ".join(os.fsdecode(a) for a in self.argv)
        return (
            f"{self.name}: {argv}\n  rc={self.returncode}\n"
            f"  stdout={self.stdout()[-2000:]!r}\n  stderr={self.stderr()[-2000:]!r}"
        )

    def __enter__(self) -> Self:
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ProcGroup:
    """Starts processes for one test and stops every one of them at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(
        self,
        argv: Sequence[StrPath | bytes],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: StrPath | None = None,
        stdin_pipe: bool = False,
    ) -> Proc:
        label = f"{len(self.procs):02d}-{name or Path(os.fsdecode(argv[0])).name}"
        proc = Proc(argv, log_dir=self.log_dir, name=label, env=env, cwd=cwd, stdin_pipe=stdin_pipe)
        self.procs.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> None:
    """Poll `predicate()` until truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` now (from /proc; children come and go)."""
    found = []
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(child))
    return found
