"""Whole-tree snapshots and comparisons on bytes paths, never following symlinks."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

# (type, mode bits, sha256 hex for files | link target for symlinks | None) [+ (uid, gid)]
Entry = tuple[str, int, str | bytes | None] | tuple[str, int, str | bytes | None, int, int]
Snapshot = dict[bytes, Entry]
Exclude = Callable[[bytes], bool]

MAX_DIFF_LINES = 20
_CHUNK = 1 << 20


_KINDS = {
    stat.S_IFREG: "f",
    stat.S_IFDIR: "d",
    stat.S_IFLNK: "l",
    stat.S_IFIFO: "p",
    stat.S_IFSOCK: "s",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "?")


def _hash_file(path: bytes) -> str | None:
    """sha256 of a regular file; None if it vanished or turned into something else."""
    try:
        # O_NONBLOCK: a file swapped for a FIFO since the stat must not hang us.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, OSError):
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot(
    root: Path | str | bytes, *, owners: bool = False, exclude: Exclude | None = None
) -> Snapshot:
    """Map each relative path (bytes) under `root` to its entry; `root` itself is left out."""
    base = os.fsencode(root)
    result: Snapshot = {}
    pending: list[bytes] = [b""]
    while pending:
        rel_dir = pending.pop()
        try:
            scanner = os.scandir(os.path.join(base, rel_dir) if rel_dir else base)
        except (FileNotFoundError, NotADirectoryError):
            continue  # vanished while we walked; a later poll sees the new state
        with scanner:
            for item in scanner:
                rel = os.path.join(rel_dir, item.name) if rel_dir else item.name
                if exclude is not None and exclude(rel):
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                kind = _kind(st.st_mode)
                content: str | bytes | None = None
                if kind == "f":
                    content = _hash_file(item.path)
                    if content is None:
                        continue
                elif kind == "l":
                    try:
                        content = os.readlink(item.path)
                    except FileNotFoundError:
                        continue
                elif kind == "d":
                    pending.append(rel)
                mode = stat.S_IMODE(st.st_mode)
                if owners:
                    result[rel] = (kind, mode, content, st.st_uid, st.st_gid)
                else:
                    result[rel] = (kind, mode, content)
    return result


def _describe(path: bytes, src: Entry, dst: Entry) -> list[str]:
    if src[0] != dst[0]:
        return [f"type differs at {path!r}: source {src[0]!r}, replica {dst[0]!r}"]
    out: list[str] = []
    if src[1] != dst[1]:
        out.append(f"mode differs at {path!r}: source {src[1]:#o}, replica {dst[1]:#o}")
    if src[2] != dst[2]:
        if src[0] == "l":
            out.append(f"link target differs at {path!r}: source {src[2]!r}, replica {dst[2]!r}")
        else:
            a, b = str(src[2])[:12], str(dst[2])[:12]
            out.append(f"content differs at {path!r}: sha256 source {a}.., replica {b}..")
    if src[3:] != dst[3:]:
        out.append(f"owner differs at {path!r}: source {src[3:]!r}, replica {dst[3:]!r}")
    return out


def diff(a: Snapshot, b: Snapshot, *, limit: int = MAX_DIFF_LINES) -> list[str]:
    """Human-readable differences from source snapshot `a` to replica `b`, capped at `limit`."""
    lines: list[str] = []
    for path in sorted(a.keys() | b.keys()):
        if path not in b:
            lines.append(f"only in source: {path!r} ({a[path][0]})")
        elif path not in a:
            lines.append(f"only in replica: {path!r} ({b[path][0]})")
        elif a[path] != b[path]:
            lines.extend(_describe(path, a[path], b[path]))
    if len(lines) > limit:
        extra = len(lines) - limit
        lines = [*lines[:limit], f"... and {extra} more difference(s)"]
    return lines


def _message(src: Path | str | bytes, dst: Path | str | bytes, lines: list[str]) -> str:
    head = f"trees differ: source {os.fsdecode(src)} vs replica {os.fsdecode(dst)}"
    return "\n  ".join([head, *lines])


def assert_trees_equal(
    src: Path | str | bytes,
    dst: Path | str | bytes,
    *,
    owners: bool = False,
    exclude: Exclude | None = None,
) -> None:
    """Raise AssertionError listing the differences unless the trees match now."""
    lines = diff(
        snapshot(src, owners=owners, exclude=exclude), snapshot(dst, owners=owners, exclude=exclude)
    )
    if lines:
        raise AssertionError(_message(src, dst, lines))


def wait_trees_equal(
    src: Path | str | bytes,
    dst: Path | str | bytes,
    timeout: float = 10.0,
    *,
    owners: bool = False,
    exclude: Exclude | None = None,
    interval: float = 0.02,
) -> float:
    """Poll until the trees match; return the seconds waited, or fail with the last diff."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        lines = diff(
            snapshot(src, owners=owners, exclude=exclude),
            snapshot(dst, owners=owners, exclude=exclude),
        )
        if not lines:
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise AssertionError(_message(src, dst, [f"(after {timeout:.1f}s)", *lines]))
        time.sleep(interval)
