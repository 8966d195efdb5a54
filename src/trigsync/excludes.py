"""rsync-style exclude patterns, matched against relative paths as bytes.

The same patterns are passed to every rsync run with ``--exclude``, so the watcher and
rsync agree on what is outside the replica. Supported, as in rsync's FILTER RULES:
a leading ``/`` anchors at the sync root; a trailing ``/`` matches directories only;
a pattern with a ``/`` matches the path's tail at a component boundary, one without
matches the last component; ``*``, ``?``, ``[...]``, ``**`` and a final ``dir/***``.
A path below an excluded directory is excluded too.

Regular-expression excludes (sersync's ``<filter>``) must match the whole relative path.
rsync has no regex rules, so each is translated to an equivalent rsync pattern where one
exists (``(.*)\\.gz`` is ``/**.gz``); ``untranslatable`` lists the others, which only the
watcher can honour.
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


# rsync's wildmatch character classes, over the ASCII bytes a bytes regex knows.
_POSIX_CLASSES = {
    b"alnum": rb"a-zA-Z0-9",
    b"alpha": rb"a-zA-Z",
    b"blank": rb" \t",
    b"cntrl": rb"\x00-\x1f\x7f",
    b"digit": rb"0-9",
    b"graph": rb"!-~",
    b"lower": rb"a-z",
    b"print": rb" -~",
    b"punct": rb"!-/:-@\[-`{-~",
    b"space": rb" \t\n\r\x0b\x0c",
    b"upper": rb"A-Z",
    b"xdigit": rb"0-9A-Fa-f",
}
_NEVER = b"(?!)"


def _class(glob: bytes, i: int, wild: bool) -> tuple[bytes, int]:
    """The regex for the ``[...]`` at ``glob[i]`` as rsync's wildmatch reads it, and the
    index after it. A class that never closes makes wildmatch match nothing at all."""
    i += 1
    negated = glob[i : i + 1] in (b"!", b"^")
    i += negated
    items: list[bytes] = []
    first = True
    while True:
        if i >= len(glob):
            return _NEVER, i
        c = glob[i : i + 1]
        if c == b"]" and not first:
            break
        first = False
        if c == b"\\" and wild and i + 1 < len(glob):
            i += 1
            c = glob[i : i + 1]
        elif c == b"[" and glob[i + 1 : i + 2] == b":":
            end = glob.find(b":]", i + 2)
            if end >= 0 and glob[i + 2 : end] in _POSIX_CLASSES:
                items.append(_POSIX_CLASSES[glob[i + 2 : end]])
                i = end + 2
                continue
        if glob[i + 1 : i + 2] == b"-" and glob[i + 2 : i + 3] not in (b"", b"]"):
            hi = i + 2
            if glob[hi : hi + 1] == b"\\" and wild and hi + 1 < len(glob):
                hi += 1
            items.append(re.escape(c) + b"-" + re.escape(glob[hi : hi + 1]))
            i = hi + 1
            continue
        items.append(re.escape(c))
        i += 1
    body = b"".join(items)
    # wildmatch never matches "/" with a class, negated or not.
    return (b"[^/" + body + b"]" if negated else b"(?!/)[" + body + b"]"), i + 1


def _translate(glob: bytes) -> bytes:
    # rsync compares a pattern without *, ? or [ as a plain string; only one with a
    # wildcard goes through wildmatch, where a backslash quotes the next byte.
    wild = any(w in glob for w in (b"*", b"?", b"["))
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
            regex, i = _class(glob, i, wild)
            out.append(regex)
        elif c == b"\\" and wild and i + 1 < n:
            out.append(re.escape(glob[i + 1 : i + 2]))
            i += 2
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


_COUNT = re.compile(r"\{\d*,?\d*\}")


def _class_end(regex: str, i: int) -> int:
    """The index just past the ``[...]`` class that starts at ``i``."""
    j = i + 1
    j += regex[j : j + 1] == "^"
    j += regex[j : j + 1] == "]"  # a "]" first is a member, not the end
    while j < len(regex) and regex[j] != "]":
        j += 2 if regex[j] == "\\" else 1
    return j + 1


def nested_repeat(regex: str) -> bool:
    """Whether a repeated group holds a repeat or alternatives, as in ``(a+)+`` or
    ``(a|aa)+``: Python's backtracking takes exponential time on a name that almost
    matches, and names come from the tree."""
    groups: list[bool] = []  # per open group: whether it holds a repeat or a "|"
    i = 0
    while i < len(regex):
        c = regex[i]
        repeat = c in "*+" or (c == "{" and _COUNT.match(regex, i) is not None)
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _class_end(regex, i)
            continue
        if c == "(":
            groups.append(False)
        elif c == ")" and groups:
            inner = groups.pop()
            after = regex[i + 1 : i + 2]
            if inner and (after in ("*", "+") or _COUNT.match(regex, i + 1)):
                return True
            if groups:
                groups[-1] |= inner
        elif (repeat or c == "|") and groups:
            groups[-1] = True
        i += 1
    return False


def _compile_regex(regex: str) -> _Rule:
    if nested_repeat(regex):
        raise ConfigError(
            f"exclude regex {regex!r} repeats a group that holds a repeat or alternatives, "
            "which can take forever on some names; drop the outer repeat, e.g. (a+)+ is a+"
        )
    try:
        # Compiled as written and full-matched: wrapping it would refuse a leading (?i).
        return _Rule(re.compile(os.fsencode(regex), re.DOTALL), True, False)
    except re.error as exc:
        raise ConfigError(
            f"exclude regex {regex!r} is not a valid regular expression: {exc}"
        ) from exc


# Regex pieces with an exact rsync equivalent, over paths that never end in "/".
_REGEX_TOKENS = (("(.*)", "**"), (".*", "**"), ("[^/]*", "*"))
_LITERAL = re.compile(r"[A-Za-z0-9_\-/~@%,=: ]")  # no "+": a quantifier
_GLOB_SPECIAL = "*?[\\"


def regex_to_rsync(regex: str) -> str | None:
    """The anchored rsync pattern that excludes exactly what ``regex`` does, or None."""
    body = regex.removeprefix("^")
    if body.endswith("$") and not body.endswith("\\$"):
        body = body[:-1]
    if body.endswith("/*"):  # "x/*" fully matches "x" (and "x/", which no path is)
        body = body[:-2]
    out: list[str] = []
    i = 0
    while i < len(body):
        for token, glob in _REGEX_TOKENS:
            if body.startswith(token, i):
                out.append(glob)
                i += len(token)
                break
        else:
            c = body[i]
            members = _CLASS.match(body, i)
            if members:  # [px]: the same set to rsync, which never puts "/" in one
                out.append(members[0])
                i = members.end()
                continue
            if c == "\\" and i + 1 < len(body) and not body[i + 1].isalnum():
                c = body[i + 1]
                i += 2
                if c in _GLOB_SPECIAL:
                    return None
            elif _LITERAL.fullmatch(c):
                i += 1
            else:
                return None
            out.append(c)
    glob = "".join(out)
    if glob.startswith("/") or glob.endswith("/") or "//" in glob or "***" in glob:
        return None  # never matches a relative path, or means something else to rsync
    if not glob.replace("*", ""):
        return None  # all wildcards: excludes everything, which no one means
    return "/" + glob


# A group of plain alternatives, not repeated: (swp|swx), (?:tmp|bak), (\.git|\.svn).
_ALTERNATION = re.compile(
    r"\((?:\?:)?((?:[A-Za-z0-9_ -]|\\\.)*(?:\|(?:[A-Za-z0-9_ -]|\\\.)*)+)\)(?![*+?{])"
)
_CLASS = re.compile(r"\[[A-Za-z0-9_.-]+\](?![*+?{])")
MAX_PATTERNS_PER_REGEX = 32


def regex_to_rsync_all(regex: str) -> tuple[str, ...] | None:
    """The rsync patterns that together exclude exactly what ``regex`` does, or None.

    Each alternative of a group becomes a pattern of its own, so sersync's stock
    ``(.*)\\.(swp|swx)`` is ``/**.swp`` and ``/**.swx`` and no full sync sends them.
    """
    group = _ALTERNATION.search(regex)
    if group is None:
        glob = regex_to_rsync(regex)
        return None if glob is None else (glob,)
    out: list[str] = []
    for alternative in group[1].split("|"):
        globs = regex_to_rsync_all(regex[: group.start()] + alternative + regex[group.end() :])
        if globs is None:
            return None
        out += globs
        if len(out) > MAX_PATTERNS_PER_REGEX:
            return None
    return tuple(dict.fromkeys(out))


class Excludes:
    """A compiled list of exclude patterns (rsync-style) and regexes (full match)."""

    def __init__(self, patterns: Iterable[str] = (), regexes: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.regexes: tuple[str, ...] = tuple(regexes)
        self._rules = tuple(_compile(p) for p in self.patterns) + tuple(
            _compile_regex(r) for r in self.regexes
        )
        translated = [(r, regex_to_rsync_all(r)) for r in self.regexes]
        self.untranslatable = tuple(r for r, globs in translated if globs is None)
        self.rsync_patterns: tuple[str, ...] = self.patterns + tuple(
            glob for _, globs in translated for glob in globs or ()
        )

    def __bool__(self) -> bool:
        return bool(self._rules)

    def _matches(self, path: bytes, is_dir: bool) -> bool:
        name = path[path.rfind(b"/") + 1 :]
        for rule in self._rules:
            if rule.dirs_only and not is_dir:
                continue
            if rule.regex.fullmatch(path if rule.whole_path else name):
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
        return [f"--exclude={p}" for p in self.rsync_patterns]


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
