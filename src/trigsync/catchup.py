"""What changed in a tree while trigsync was not running, found from inode change times."""

from __future__ import annotations

import os
import stat

from .changes import Batch, Change, Kind
from .excludes import Excludes


def changed_since(root: bytes, since: float, excludes: Excludes) -> Batch:
    """Files whose ctime is after ``since`` become CHANGED paths.

    A directory changed since then may have lost entries, which no scan can name, so it
    asks for one reconciling full sync instead (rsync then moves only differences).
    """
    changes: list[Change] = []
    try:
        if os.lstat(root).st_ctime > since:
            return Batch(full=True)
    except OSError:
        return Batch(full=True)
    stack = [b""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(root + b"/" + rel if rel else root) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            path = rel + b"/" + entry.name if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if excludes and excludes.excludes(path, is_dir=is_dir):
                continue
            if is_dir:
                if st.st_ctime > since:
                    return Batch(full=True)
                stack.append(path)
            elif st.st_ctime > since:
                changes.append(Change(path, Kind.CHANGED))
    return Batch(tuple(changes))
