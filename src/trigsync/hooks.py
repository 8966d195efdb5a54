"""on_success / on_failure hooks and the webhook: sersync's "command" plugin, done safely.

A hook is an argv list, never a shell line. It learns what happened from its environment
(TRIGSYNC_EVENT, TRIGSYNC_SOURCE, TRIGSYNC_TARGET, TRIGSYNC_PATHS, TRIGSYNC_FULL,
TRIGSYNC_SECONDS, TRIGSYNC_EXIT_CODE, TRIGSYNC_ERROR) and reads the batch's paths
NUL-separated on stdin. Hooks run beside replication: one that hangs is killed at its time
limit, and past MAX_WAITING waiting reports a target's hook runs are dropped (and logged),
so a hook can never hold up or swamp a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

from . import spawnfds
from .config_data import CommandHook, SyncConfig
from .excludes import Excludes
from .status import RunReport
from .targets import TargetSpec

log = logging.getLogger(__name__)

MAX_WAITING = 32  # hook runs queued per target before new ones are dropped


class Hooks:
    """The hooks of one target; ``observe`` is its dispatcher's run observer."""

    def __init__(
        self,
        *,
        on_success: Sequence[str] = (),
        on_failure: Sequence[str] = (),
        webhook: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.on_success = tuple(on_success)
        self.on_failure = tuple(on_failure)
        self.webhook = webhook
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._order = asyncio.Lock()  # one at a time, in the order the runs ended
        self._dropped = 0

    @classmethod
    def of(cls, sync: SyncConfig, spec: TargetSpec) -> Hooks | None:
        """A target's hooks (its own, else its sync's), or None when it has none."""
        hooks = cls(
            on_success=spec.on_success or sync.on_success,
            on_failure=spec.on_failure or sync.on_failure,
            webhook=sync.webhook,
            timeout=sync.hook_timeout,
        )
        return hooks if hooks.on_success or hooks.on_failure or hooks.webhook else None

    def observe(self, report: RunReport) -> None:
        """Queue this run's hooks; returns at once (called from the worker)."""
        argv = self.on_success if report.kind in ("ok", "partial") else self.on_failure
        if not argv and not self.webhook:
            return
        if len(self._tasks) >= MAX_WAITING:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                log.warning(
                    "%s: hooks are slower than the runs; %d hook run(s) dropped",
                    report.target,
                    self._dropped,
                )
            return
        task = asyncio.get_running_loop().create_task(self._run(argv, report))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, argv: Sequence[str], report: RunReport) -> None:
        async with self._order:
            if argv:
                await run_hook(argv, report, self.timeout)
            if self.webhook:
                await post_webhook(self.webhook, report, self.timeout)


def environment(report: RunReport) -> dict[str, str]:
    """What a hook is told, as environment variables (the paths go on stdin)."""
    return {
        "TRIGSYNC_EVENT": "success" if report.kind in ("ok", "partial") else "failure",
        "TRIGSYNC_KIND": report.kind,
        "TRIGSYNC_SOURCE": report.source,
        "TRIGSYNC_TARGET": report.target,
        "TRIGSYNC_PATHS": str(len(report.paths)),
        "TRIGSYNC_FULL": "1" if report.full else "0",
        "TRIGSYNC_SECONDS": f"{report.seconds:.3f}",
        "TRIGSYNC_EXIT_CODE": "" if report.code is None else str(report.code),
        "TRIGSYNC_ERROR": report.error or "",
    }


def body(report: RunReport) -> dict[str, object]:
    """The webhook's JSON body: the environment's facts, paths decoded losslessly."""
    return {
        "event": "success" if report.kind in ("ok", "partial") else "failure",
        "kind": report.kind,
        "source": report.source,
        "target": report.target,
        "paths": [os.fsdecode(p) for p in report.paths],
        "full": report.full,
        "seconds": round(report.seconds, 6),
        "exit_code": report.code,
        "error": report.error,
    }


async def run_hook(argv: Sequence[str], report: RunReport, timeout: float) -> int | None:
    """Run one hook with its time limit; returns its exit status, None if it was killed."""
    stdin = b"".join(p + b"\0" for p in report.paths)
    return await run_limited(argv, stdin, environment(report), timeout, "hook")


async def run_limited(
    argv: Sequence[str | bytes], stdin: bytes, env: dict[str, str], timeout: float, what: str
) -> int | None:
    """Run a hook's argv (no shell) in a session of its own, with ``env`` added to ours
    (less RSYNC_PASSWORD); past ``timeout`` the whole session is killed and None returned."""
    base = {k: v for k, v in os.environ.items() if k != "RSYNC_PASSWORD"}
    name = os.fsdecode(argv[0])
    # stderr is our own pipe, not asyncio's: only its last bytes are kept (a hook may
    # write without end), and a killed hook's unread stderr cannot hold proc.wait() up
    # (Python 3.11 waits for every asyncio pipe of the child to close).
    stderr = _Tail()
    try:
        with spawnfds.reclaimed():
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr.write_end,
                env={**base, **env},
                start_new_session=True,  # its children die with it at the time limit
            )
    except OSError as exc:
        stderr.close()
        log.error("%s %s cannot start: %s; fix its argv in the config", what, name, exc)
        return None
    stderr.start()
    try:
        await asyncio.wait_for(_feed_and_wait(proc, stdin), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        log.error("%s %s killed after its time limit of %g s", what, name, timeout)
        return None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        raise
    finally:
        stderr.close()
    if proc.returncode:
        last = stderr.text().strip().splitlines()[-1:] or ["(no message)"]
        log.warning("%s %s exited %d: %s", what, name, proc.returncode, last[0])
    return proc.returncode


async def _feed_and_wait(proc: asyncio.subprocess.Process, data: bytes) -> int:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # a hook that does not read its stdin
    finally:
        proc.stdin.close()
    return await proc.wait()


class _Tail:
    """A pipe for a child's stderr whose reader keeps only the last ``KEEP`` bytes."""

    KEEP = 4096

    def __init__(self) -> None:
        self._read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._read_end, False)
        self._data = b""
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        os.close(self.write_end)  # the child has its own copy
        self.write_end = -1
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._read_end, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self._read_end, 65536)
        except BlockingIOError:
            return
        if not chunk and self._loop is not None:
            self._loop.remove_reader(self._read_end)  # EOF
        self._data = (self._data + chunk)[-self.KEEP :]

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(OSError):
                self._read()  # what the hook wrote last, before it ended
            self._loop.remove_reader(self._read_end)
            self._loop = None
        for fd in (self._read_end, self.write_end):
            if fd >= 0:
                os.close(fd)
        self._read_end = self.write_end = -1

    def text(self) -> str:
        return self._data.decode(errors="replace")


MAX_POSTING = 4  # webhook threads still stuck in a server past their time limit


async def post_webhook(url: str, report: RunReport, timeout: float) -> int | None:
    """POST the report as JSON; returns the HTTP status, None on failure (logged)."""
    data = json.dumps(body(report)).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )

    def post() -> int:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)

    # urlopen's timeout bounds each socket call, not the request: a server that trickles
    # keeps its thread for good. So not asyncio's default executor (the journal's, and
    # asyncio.run waits for it at exit) but a daemon thread, and few of them at once.
    if not _POSTING.acquire(blocking=False):
        log.warning("webhook %s: %d posts still hang; this one skipped", shown(url), MAX_POSTING)
        return None
    try:
        return await asyncio.wait_for(_in_daemon_thread(post), timeout + 1)
    except (OSError, TimeoutError, ValueError) as exc:
        log.warning("webhook %s failed: %s", shown(url), str(exc) or f"no answer in {timeout:g} s")
        return None


_POSTING = threading.Semaphore(MAX_POSTING)  # held by each webhook thread alive


def _in_daemon_thread(call: Callable[[], int]) -> asyncio.Future[int]:
    """``call()`` in a thread that never holds the process up at exit; the caller
    holds ``_POSTING``, which the thread releases when ``call`` returns."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    def settle(result: int | None, exc: BaseException | None) -> None:
        if future.done():  # given up on at its time limit
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result or 0)

    def run() -> None:
        result: int | None = None
        error: BaseException | None = None
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        finally:
            _POSTING.release()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="webhook", daemon=True).start()
    return future


def shown(url: str) -> str:
    """The URL without a user, a password, a path or a query, for the log: Slack's,
    Discord's and Teams' webhook URLs carry their token in the path."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    with contextlib.suppress(ValueError):
        netloc += f":{parts.port}" if parts.port else ""
    path = "/..." if parts.path not in ("", "/") else parts.path
    return parts._replace(netloc=netloc, path=path, query="", fragment="").geturl()


class CommandHooks:
    """sersync's command plugin: ``argv + [path] + argv_after`` for each file a run sent.

    Observes one target of the sync (its first), so each file runs the command once. Only
    paths that still exist are passed (sersync ran it on creates and writes), as absolute
    paths and as argv words, never through a shell; ``include_regex`` (full match on the
    relative path) narrows them. One command at a time, each with the sync's time limit.
    """

    def __init__(self, source: bytes, hooks: Sequence[CommandHook], timeout: float) -> None:
        self.source = source.rstrip(b"/")
        self.hooks = [
            (h, Excludes(regexes=h.include_regex) if h.include_regex else None) for h in hooks
        ]
        self.timeout = timeout
        self._queue: list[tuple[CommandHook, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    def observe(self, report: RunReport) -> None:
        if report.kind not in ("ok", "partial"):
            return
        for hook, include in self.hooks:
            for path in report.paths:
                if include is not None and not include.excludes(path, is_dir=False):
                    continue
                absolute = self.source + b"/" + path
                if os.path.lexists(absolute) and len(self._queue) < MAX_WAITING * 1000:
                    self._queue.append((hook, absolute))
        if self._queue and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            hook, path = self._queue.pop(0)
            await run_command(hook, path, self.timeout)


async def run_command(hook: CommandHook, path: bytes, timeout: float) -> int | None:
    """One command for one file, with its time limit; its exit status, None if killed."""
    argv: list[str | bytes] = [*hook.argv, path, *hook.argv_after]
    return await run_limited(argv, b"", {}, timeout, "command hook")
