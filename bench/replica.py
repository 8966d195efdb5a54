"""Watching the receiver: when each file lands, when the replica last changed, whether it is equal.

Arrival is measured where it matters, at the receiver: a thread blocks on an inotify fd
over the daemon's module directory and timestamps every change the moment the kernel
reports it. rsync writes a temporary ``.name.XXXXXX`` and renames it, so a file has
arrived at the IN_MOVED_TO of its final name.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import threading
import time
from pathlib import Path
from types import TracebackType

from trigsync import inotify as ino

from .procs import BenchTimeout

ACTIVITY = (
    ino.IN_CREATE
    | ino.IN_DELETE
    | ino.IN_MOVED_FROM
    | ino.IN_MOVED_TO
    | ino.IN_CLOSE_WRITE
    | ino.IN_ATTRIB
    | ino.IN_DELETE_SELF
)
MASK = ACTIVITY | ino.IN_ONLYDIR | ino.IN_DONT_FOLLOW

# (kind, permission bits, size, symlink target)
Entry = tuple[str, int, int, bytes]
Snapshot = dict[bytes, Entry]


def _join(base: bytes, name: bytes) -> bytes:
    return base + b"/" + name if base else name


class NotEqualError(BenchTimeout):
    """The replica did not become equal to the source in time."""

    def __init__(self, message: str, diff: list[bytes]) -> None:
        super().__init__(message)
        self.diff = diff


class ReplicaWatcher:
    """Timestamps every change below ``root`` from a thread; recursive, new dirs included."""

    def __init__(self, root: Path) -> None:
        self.root = os.fsencode(root)
        self._fd = ino.init(ino.IN_CLOEXEC | ino.IN_NONBLOCK)
        self._paths: dict[int, bytes] = {}
        self._cond = threading.Condition()
        self._arrivals: dict[bytes, float] = {}
        self.last_change = time.monotonic()
        self.changes = 0
        self.overflows = 0
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="replica-watcher", daemon=True)

    def __enter__(self) -> ReplicaWatcher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        self._watch_tree(b"")
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def wait_arrival(self, rel: bytes, timeout: float, *, after: float = 0.0) -> float:
        """Wait until ``rel`` (relative to the root) lands at or after ``after``; return when."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._arrivals.get(rel, -1.0) >= after, timeout):
                raise BenchTimeout(f"{os.fsdecode(rel)} did not arrive within {timeout:.0f} s")
            return self._arrivals.pop(rel)

    def wait_change(self, after: float, timeout: float) -> None:
        """Wait until something changes later than ``after``, or ``timeout`` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self.last_change > after, timeout)

    def forget_arrivals(self) -> None:
        with self._cond:
            self._arrivals.clear()

    def _watch_tree(self, top: bytes) -> None:
        stack = [top]
        while stack:
            rel = stack.pop()
            full = _join(self.root, rel) if rel else self.root
            try:
                wd = ino.add_watch(self._fd, full, MASK)
                with os.scandir(full) as it:
                    subdirs = [_join(rel, e.name) for e in it if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            self._paths[wd] = rel
            stack.extend(subdirs)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = poller.poll()
            now = time.monotonic()
            if any(fd == self._stop_r for fd, _ in ready):
                return
            try:
                data = os.read(self._fd, 1 << 20)
            except BlockingIOError:
                continue
            self._handle(ino.parse_events(data), now)

    def _handle(self, events: list[tuple[int, int, int, bytes]], now: float) -> None:
        new_dirs: list[bytes] = []
        arrived: list[bytes] = []
        changed = 0
        for wd, mask, _cookie, name in events:
            if mask & ino.IN_Q_OVERFLOW:
                self.overflows += 1
                changed += 1
                new_dirs.append(b"")  # re-walk: watches may be missing
                continue
            if mask & ino.IN_IGNORED:
                self._paths.pop(wd, None)
            if not mask & ACTIVITY:
                continue
            changed += 1
            base = self._paths.get(wd)
            if base is None or not name:
                continue
            rel = _join(base, name)
            if mask & ino.IN_ISDIR:
                if mask & (ino.IN_CREATE | ino.IN_MOVED_TO):
                    new_dirs.append(rel)
            elif mask & (ino.IN_MOVED_TO | ino.IN_CLOSE_WRITE):
                arrived.append(rel)
        for rel in new_dirs:
            self._watch_tree(rel)
        if changed:
            with self._cond:
                self.last_change = now
                self.changes += changed
                for rel in arrived:
                    self._arrivals[rel] = now
                self._cond.notify_all()


def snapshot(root: Path) -> Snapshot:
    """(kind, permissions, size, link target) of everything below ``root``; vanished entries skipped."""
    top = os.fsencode(root)
    out: Snapshot = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(_join(top, rel) if rel else top) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            path = _join(rel, entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    out[path] = ("d", stat.S_IMODE(mode), 0, b"")
                    stack.append(path)
                elif stat.S_ISLNK(mode):
                    out[path] = ("l", 0, 0, os.readlink(entry.path))
                elif stat.S_ISREG(mode):
                    out[path] = ("f", stat.S_IMODE(mode), st.st_size, b"")
                else:
                    out[path] = ("o", stat.S_IMODE(mode), 0, b"")
            except FileNotFoundError:
                continue
    return out


def differences(want: Snapshot, have: Snapshot) -> list[bytes]:
    """Paths missing, extra or different in ``have``, sorted."""
    diff = [p for p, e in want.items() if have.get(p) != e]
    diff += [p for p in have if p not in want]
    return sorted(diff)


def _same_content(a: bytes, b: bytes) -> bool:
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                ca, cb = fa.read(1 << 20), fb.read(1 << 20)
                if ca != cb:
                    return False
                if not ca:
                    return True
    except FileNotFoundError:
        return False


def content_differences(src: Path, dst: Path, want: Snapshot) -> list[bytes]:
    """Regular files whose bytes differ between ``src`` and ``dst``."""
    s, d = os.fsencode(src), os.fsencode(dst)
    return [
        p for p, e in want.items() if e[0] == "f" and not _same_content(_join(s, p), _join(d, p))
    ]


def wait_equal(src: Path, watcher: ReplicaWatcher, *, timeout: float, quiet: float = 0.15) -> float:
    """Wait until the replica equals ``src`` (metadata, then bytes); return when it last changed.

    A snapshot is only taken once the replica has been quiet for ``quiet`` seconds, so
    the check does not compete for CPU with the tool under test; the result is the
    inotify timestamp of the replica's last change, not the time the check finished.
    """
    want = snapshot(src)
    replica = Path(os.fsdecode(watcher.root))
    deadline = time.monotonic() + timeout
    diff: list[bytes] = []
    while True:
        now = time.monotonic()
        if now > deadline:
            shown = ", ".join(os.fsdecode(p) for p in diff[:5])
            raise NotEqualError(
                f"replica not equal {timeout:.0f} s in: {len(diff)} differences ({shown})", diff
            )
        last = watcher.last_change
        if now - last < quiet:
            time.sleep(quiet - (now - last) + 0.002)
            continue
        diff = differences(want, snapshot(replica))
        if not diff:
            diff = content_differences(src, replica, want)
            if not diff:
                return watcher.last_change
        watcher.wait_change(last, timeout=min(1.0, max(0.0, deadline - time.monotonic())))
