"""rsync-style exclude patterns, matched against relative paths as bytes.

The same patterns are passed to every rsync run with ``--exclude``, so the watcher and
rsync agree on what is outside the replica. Supported, as in rsync's FILTER RULES:
a leading ``/`` anchors at the sync root; a trailing ``/`` matches directories only;
a pattern with a ``/`` matches the path's tail at a component boundary, one without
matches the last component; ``*``, ``?``, ``[...]``, ``**`` and a final ``dir/***``.
A path below an excluded directory is excluded too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .changes import ancestors
from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class _Rule:
    regex: re.Pattern[bytes]
    whole_path: bool
    dirs_only: bool


def _translate(glob: bytes) -> bytes:
    out: list[bytes] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i : i + 1]
        if glob.startswith(b"/***", i) and i + 4 == n:
            out.append(b"(?:/.*)?")
            i += 4
        elif glob.startswith(b"**", i):
            out.append(b".*")
            i += 2
            while glob[i : i + 1] == b"*":
                i += 1
        elif c == b"*":
            out.append(b"[^/]*")
            i += 1
        elif c == b"?":
            out.append(b"[^/]")
            i += 1
        elif c == b"[":
            end = glob.find(b"]", i + 2 if glob[i + 1 : i + 2] in (b"!", b"^") else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1 : end]
            if body[:1] == b"!":
                body = b"^" + body[1:]
            out.append(b"[" + body.replace(b"\\", b"\\\\") + b"]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return b"".join(out)


def _compile(pattern: str) -> _Rule:
    raw = os.fsencode(pattern)
    if not raw or raw.strip(b"/") == b"":
        raise ConfigError(
            f"exclude pattern {pattern!r} is empty; give a name or glob such as '*.tmp'"
        )
    dirs_only = raw.endswith(b"/")
    raw = raw.rstrip(b"/")
    anchored = raw.startswith(b"/")
    raw = raw.lstrip(b"/")
    whole_path = anchored or b"/" in raw or b"**" in raw
    body = _translate(raw)
    if anchored or not whole_path:
        regex = b"\\A" + body + b"\\Z"
    else:
        regex = b"(?:\\A|.*/)" + body + b"\\Z"
    try:
        return _Rule(re.compile(regex, re.DOTALL), whole_path, dirs_only)
    except re.error as exc:
        raise ConfigError(f"exclude pattern {pattern!r} is not a valid glob: {exc}") from exc


class Excludes:
    """A compiled list of exclude patterns."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._rules = tuple(_compile(p) for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def _matches(self, path: bytes, is_dir: bool) -> bool:
        name = path[path.rfind(b"/") + 1 :]
        for rule in self._rules:
            if rule.dirs_only and not is_dir:
                continue
            if rule.regex.match(path if rule.whole_path else name):
                return True
        return False

    def excludes(self, path: bytes, *, is_dir: bool) -> bool:
        """True if ``path`` (relative to the root) or a directory above it is excluded."""
        if not self._rules:
            return False
        if self._matches(path, is_dir):
            return True
        return any(self._matches(a, True) for a in ancestors(path))

    def rsync_args(self) -> list[str]:
        return [f"--exclude={p}" for p in self.patterns]


_SLASH_IN_CLASS = re.compile(rb"\[[^\]]*/")


def _component_matches(glob: bytes, name: bytes) -> bool:
    return re.fullmatch(_translate(glob), name, re.DOTALL) is not None


def _strip(globs: list[bytes], prefix: list[bytes]) -> list[bytes] | None:
    """What an anchored pattern (as components) asks below ``prefix``; None if it cannot
    match below it. An empty list: it matches ``prefix`` itself or a directory above it."""
    if not all(_component_matches(g, n) for g, n in zip(globs, prefix, strict=False)):
        return None
    return globs[len(prefix) :]


def rebase(patterns: Iterable[str], prefix: bytes) -> tuple[str, ...] | None:
    """The patterns that exclude, in a run rooted at directory ``prefix``, exactly what
    ``patterns`` exclude below ``prefix`` in a run rooted at the sync root.

    rsync matches anchored patterns, and patterns holding a ``/``, against the path from
    the transfer root, so ``/site/.env`` never matches in a run rooted at ``site/``.
    Returns None when that cannot be done (``**``, a ``/`` inside ``[...]``), or when
    ``prefix`` itself is excluded: such a directory is not to be rebuilt on its own.
    """
    patterns = tuple(patterns)
    if Excludes(patterns).excludes(prefix, is_dir=True):
        return None
    base = [p for p in prefix.split(b"/") if p]
    out: list[str] = []
    for pattern in patterns:
        raw = os.fsencode(pattern)
        dirs_only = raw.endswith(b"/")
        body = raw.rstrip(b"/")
        anchored = body.startswith(b"/")
        body = body.lstrip(b"/")
        if not anchored and b"/" not in body and b"**" not in body:
            out.append(pattern)  # matches the last component wherever it is
            continue
        if b"**" in body or _SLASH_IN_CLASS.search(body):
            return None
        globs = body.split(b"/")
        if not anchored:
            out.append(pattern)  # a tail that starts below the prefix
        starts = [0] if anchored else range(len(base))
        for start in starts:  # a tail that starts at the prefix's component ``start``
            rest = _strip(globs, base[start:])
            if rest == []:
                return None
            if rest:
                out.append(os.fsdecode(b"/" + b"/".join(rest) + (b"/" if dirs_only else b"")))
    return tuple(out)
