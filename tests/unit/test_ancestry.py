"""The list filter that keeps rsync from reaching through a symlinked ancestor."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from trigsync.ancestry import confine, confine_below


def _not_dir(*names: bytes) -> tuple[list[bytes], object]:
    asked: list[bytes] = []

    def not_dir(rel: bytes) -> bool:
        asked.append(rel)
        return rel in names

    return asked, not_dir


def test_entries_below_real_directories_are_kept_as_they_are() -> None:
    _, not_dir = _not_dir()
    entries = [b"a/b/c", b"a/", b"top", b"x/y"]
    assert confine(entries, not_dir) == entries  # type: ignore[arg-type]


def test_an_entry_below_a_symlink_becomes_the_symlink_listed_once() -> None:
    _, not_dir = _not_dir(b"a")
    got = confine([b"a/key", b"b/c", b"a/deep/er", b"a"], not_dir)  # type: ignore[arg-type]
    assert got == [b"a", b"b/c"]


def test_the_highest_non_directory_wins() -> None:
    _, not_dir = _not_dir(b"a/b", b"a/b/c")
    assert confine([b"a/b/c/d"], not_dir) == [b"a/b"]  # type: ignore[arg-type]


def test_a_whole_directory_entry_must_itself_be_a_directory() -> None:
    _, not_dir = _not_dir(b"d")
    # "d/" makes rsync follow d; "d" alone sends the symlink as a symlink.
    assert confine([b"d/", b"e/"], not_dir) == [b"d", b"e/"]  # type: ignore[arg-type]
    assert confine([b"d"], not_dir) == [b"d"]  # type: ignore[arg-type]


def test_the_entry_itself_is_never_asked_about_unless_listed_whole() -> None:
    asked, not_dir = _not_dir()
    confine([b"a/b/c"], not_dir)  # type: ignore[arg-type]
    assert asked == [b"a", b"a/b"]


def test_on_disk_symlinks_files_and_missing_ancestors(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("x")
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "real", tmp_path / "link")
    src = os.fsencode(tmp_path)
    entries = [b"real/f", b"link/f", b"link/g", b"file/x", b"gone/x", b"real/"]
    # a missing ancestor: the entry is a deletion, sent as it is
    assert confine_below(src, entries) == [b"real/f", b"link", b"file", b"gone/x", b"real/"]


def _naive(entries: list[bytes], bad: set[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for entry in entries:
        parts = entry.rstrip(b"/").split(b"/")
        upto = len(parts) if entry.endswith(b"/") else len(parts) - 1
        prefixes = [b"/".join(parts[:i]) for i in range(1, upto + 1)]
        listed = next((p for p in prefixes if p in bad), entry)
        if listed not in out:
            out.append(listed)
    return out


NAMES = st.sampled_from([b"a", b"b", b"c"])
PATHS = st.lists(NAMES, min_size=1, max_size=4).map(b"/".join)


@given(
    entries=st.lists(st.tuples(PATHS, st.booleans()).map(lambda t: t[0] + b"/" * t[1])),
    bad=st.sets(PATHS),
)
def test_confine_lists_the_highest_non_directory_of_each_entry(
    entries: list[bytes], bad: set[bytes]
) -> None:
    entries = list(dict.fromkeys(entries))
    assert confine(entries, bad.__contains__) == _naive(entries, bad)
