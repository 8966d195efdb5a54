"""Renames inside a replica that never follow a symlink, in any component.

The replica mirrors a source that hostile users may write: a symlink ``x -> /etc``
replicated as a symlink must never turn ``rename(replica/x/shadow, replica/z)`` into a
rename of ``/etc/shadow``. So each parent directory is opened one component at a time
from the replica root with ``O_NOFOLLOW | O_DIRECTORY`` (a symlink fails with ELOOP or
ENOTDIR), and the rename is made with ``renameat`` between those directory fds, which
never follows the last component either. An fd, once open, names the directory it
opened even if a path above it is swapped afterwards.

The same walk runs on ssh targets: ``REMOTE_SCRIPT`` is fixed text run by the remote
``python3``; the paths travel NUL-separated on stdin.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: bytes) -> list[bytes]:
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise OSError(22, "a '..' component", path)
    return parts


@contextlib.contextmanager
def parent_fd(root_fd: int, path: bytes) -> Iterator[tuple[int, bytes]]:
    """The directory holding ``path`` (relative to ``root_fd``), opened without following
    a symlink in any component, and the last component's name."""
    parts = _parts(path)
    if not parts:
        raise OSError(22, "the replica root itself", path)
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        yield fd, parts[-1]
    finally:
        os.close(fd)


def rename(root_fd: int, old: bytes, new: bytes) -> None:
    """``rename(root/old, root/new)`` with no symlink followed; raises OSError."""
    with parent_fd(root_fd, old) as (src, src_name), parent_fd(root_fd, new) as (dst, dst_name):
        os.rename(src_name, dst_name, src_dir_fd=src, dst_dir_fd=dst)


def open_root(path: bytes) -> int:
    """The replica root (configured by the user, so a symlink there is followed)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


# Run as ``python3 -c REMOTE_SCRIPT``; stdin: the replica root, then old and new of each
# move, all NUL-terminated. stdout: one byte per move, "1" if it was renamed, else "0".
REMOTE_SCRIPT = r"""
import os, sys
F = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
def parent(root, path):
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if not parts or b".." in parts:
        raise OSError(22, "bad path")
    fd = os.dup(root)
    try:
        for p in parts[:-1]:
            n = os.open(p, F, dir_fd=fd)
            os.close(fd)
            fd = n
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]
data = sys.stdin.buffer.read().split(b"\0")
root = os.open(data[0], os.O_RDONLY | os.O_DIRECTORY)
out = []
for i in range(1, len(data) - 1, 2):
    fds = []
    try:
        s, sn = parent(root, data[i]); fds.append(s)
        d, dn = parent(root, data[i + 1]); fds.append(d)
        os.rename(sn, dn, src_dir_fd=s, dst_dir_fd=d)
        out.append("1")
    except OSError:
        out.append("0")
    finally:
        for fd in fds:
            os.close(fd)
sys.stdout.write("".join(out))
"""
