"""The map of hard-linked names: what it keeps, what it forgets, and its limit."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from trigsync.links import HardLinks


def st(ino: int, nlink: int, mode: int = stat.S_IFREG | 0o644) -> os.stat_result:
    return os.stat_result((mode, ino, 7, nlink, 0, 0, 0, 0, 0, 0))


def test_only_regular_files_with_other_links_are_kept() -> None:
    links = HardLinks()
    links.learn((1, b"lone"), st(10, 1))
    links.learn((1, b"link"), st(11, 2, stat.S_IFLNK | 0o777))
    assert len(links) == 0 and not links.incomplete
    links.learn((1, b"a"), st(12, 2))
    assert links.incomplete  # its other name is not known yet
    links.learn((2, b"b"), st(12, 2))
    assert not links.incomplete
    assert links.others((1, b"a")) == [(2, b"b")]


def test_unlink_rename_and_reuse_of_a_name_keep_the_counts() -> None:
    links = HardLinks()
    for key in ((1, b"a"), (1, b"b"), (2, b"c")):
        links.learn(key, st(5, 3))
    links.forget((2, b"c"))  # unlinked: two links left, both known
    assert not links.incomplete
    moved = links.moved((1, b"b"))  # renamed away: known again at its new name
    assert moved == ((7, 5), 2) and links.incomplete
    links.add((3, b"b2"), *moved)
    assert sorted(links.others((1, b"a"))) == [(3, b"b2")] and not links.incomplete
    links.learn((1, b"a"), st(6, 1))  # the name now holds another, unlinked file
    assert links.others((3, b"b2")) == [] and len(links) == 0  # b2 has no other link now
    for key in ((1, b"x"), (3, b"y")):
        links.learn(key, st(8, 3))
    links.drop_dirs([3])  # y's directory left the tree: x's file has a name not known
    assert links.others((1, b"x")) == [] and links.incomplete


def test_past_its_limit_it_logs_once_and_keeps_what_it_has(
    caplog: pytest.LogCaptureFixture,
) -> None:
    links = HardLinks(limit=4)
    with caplog.at_level(logging.WARNING, logger="trigsync.links"):
        for n in range(6):
            links.learn((1, b"f%d" % n), st(100 + n // 2, 2))
    assert len(links) == 4 and links.overflowed
    assert links.others((1, b"f0")) == [(1, b"f1")]
    assert [r.getMessage() for r in caplog.records if "hard-linked" in r.getMessage()] == [
        "more than 4 hard-linked names below the source: a change written through one of "
        "them reaches its other names only at the next full sync"
    ]
