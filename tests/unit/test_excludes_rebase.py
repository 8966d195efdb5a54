"""Excludes rebased for a run rooted at a subdirectory (the --link-dest rebuild)."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from trigsync import rsync
from trigsync.excludes import Excludes, rebase
from trigsync.rsync import Options, Transport


def test_anchored_patterns_are_rebased_or_dropped() -> None:
    got = rebase(["/site/.env", "/other/x", "*.tmp", "cache/", "s*/conf/"], b"site")
    assert got == ("/.env", "*.tmp", "cache/", "s*/conf/", "/conf/")


def test_unanchored_slash_patterns_keep_their_tails_below_and_across() -> None:
    assert rebase(["b/c/d"], b"a/b") == ("b/c/d", "/c/d")


def test_an_excluded_prefix_or_an_unsupported_pattern_refuses() -> None:
    assert rebase(["/site/"], b"site") is None
    assert rebase(["/a"], b"a/b") is None
    assert rebase(["site/**/x"], b"site") is None


def test_link_dest_argv_carries_the_rebased_excludes() -> None:
    opts = Options(excludes=("/site/.env",))
    argv = rsync.link_dest_argv(b"/src", b"site_new", b"site", opts, Transport("rsync://h/m/"))
    assert argv is not None and "--exclude=/.env" in argv and "--exclude=/site/.env" not in argv
    assert (
        rsync.link_dest_argv(b"/src", b"a", b"site", Options(excludes=("/si**",)), Transport("d/"))
        is None
    )


NAMES = st.sampled_from(["a", "b", "site", ".env", "x.tmp"])
PATHS = st.lists(NAMES, min_size=1, max_size=4).map("/".join)
GLOBS = st.sampled_from(["a", "b", "site", ".env", "*", "?", "s*", "*.tmp"])
PATTERNS = st.builds(
    lambda anchor, parts, slash: anchor + "/".join(parts) + slash,
    st.sampled_from(["", "/"]),
    st.lists(GLOBS, min_size=1, max_size=3),
    st.sampled_from(["", "/"]),
)


@given(st.lists(PATTERNS, max_size=3), PATHS, PATHS, st.booleans())
def test_rebased_patterns_exclude_what_the_root_patterns_exclude(
    patterns: list[str], prefix: str, rel: str, is_dir: bool
) -> None:
    rebased = rebase(patterns, os.fsencode(prefix))
    root = Excludes(patterns)
    if rebased is None:
        return
    assert not root.excludes(os.fsencode(prefix), is_dir=True)
    full = os.fsencode(prefix + "/" + rel)
    assert Excludes(rebased).excludes(os.fsencode(rel), is_dir=is_dir) == root.excludes(
        full, is_dir=is_dir
    )
