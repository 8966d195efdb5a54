"""Self-tests for tree snapshots, comparison and workload builders (local filesystem only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.trees import assert_trees_equal, diff, snapshot, wait_trees_equal
from tests.support.workload import WEIRD_NAMES, list_tree, make_tree, make_weird_tree


def test_weird_names_cover_the_hostile_cases() -> None:
    assert {b"new\nline", b"$(touch PWNED)", b"x`touch PWNED`y", b"-rf", b"--delete"} <= set(
        WEIRD_NAMES
    )
    assert {b"caf\xe9", b"\xff\xfe", b"back\\slash", b"n" * 200} <= set(WEIRD_NAMES)
    assert all(b"/" not in name and b"\0" not in name for name in WEIRD_NAMES)


def test_make_tree_is_deterministic(tmp_path: Path) -> None:
    made = make_tree(tmp_path / "a", dirs=4, files_per_dir=3, size=(1, 64), seed=3)
    make_tree(tmp_path / "b", dirs=4, files_per_dir=3, size=(1, 64), seed=3)
    make_tree(tmp_path / "c", dirs=4, files_per_dir=3, size=(1, 64), seed=4)

    assert len(made) == 4 + 5 * 3
    assert sorted(made) == sorted(list_tree(tmp_path / "a"))
    assert_trees_equal(tmp_path / "a", tmp_path / "b")
    with pytest.raises(AssertionError, match="content differs"):
        assert_trees_equal(tmp_path / "a", tmp_path / "c")


def test_snapshot_types_links_and_exclude(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    make_weird_tree(tmp_path)
    os.mkfifo(os.path.join(root, b"fifo"))
    os.symlink(b"\xff\xfe", os.path.join(root, b"lnk"))
    os.symlink(b"weird dir", os.path.join(root, b"dirlink"))

    snap = snapshot(tmp_path)

    assert snap[b"fifo"] == ("p", 0o644 & ~_umask() | snap[b"fifo"][1], None)
    assert snap[b"lnk"][0] == "l"
    assert snap[b"lnk"][2] == b"\xff\xfe"
    assert snap[b"weird dir"][0] == "d"
    assert not any(key.startswith(b"dirlink/") for key in snap)  # symlinks are not followed
    assert b"weird dir/caf\xe9" in snap
    kept = snapshot(tmp_path, exclude=lambda rel: rel.startswith(b"weird dir"))
    assert not any(key.startswith(b"weird dir") for key in kept)
    assert len(snapshot(tmp_path, owners=True)[b"lnk"]) == 5


def test_root_mode_ignored_and_diff_capped(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, dirs=0, files_per_dir=30, seed=1)
    dst.mkdir()
    dst.chmod(0o700)

    lines = diff(snapshot(src), snapshot(dst))

    assert len(lines) == 21
    assert lines[-1] == "... and 10 more difference(s)"
    (dst / "only-here").write_text("x")
    for rel in list_tree(src):
        os.link(os.path.join(os.fsencode(src), rel), os.path.join(os.fsencode(dst), rel))
    assert diff(snapshot(src), snapshot(dst)) == ["only in replica: b'only-here' (f)"]
    os.unlink(dst / "only-here")
    assert wait_trees_equal(src, dst, timeout=1.0) < 1.0


def test_type_and_link_mismatch_reported(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "x").mkdir()
    (dst / "x").write_text("file")
    os.symlink("a", src / "l")
    os.symlink("b", dst / "l")

    assert diff(snapshot(src), snapshot(dst)) == [
        "link target differs at b'l': source b'a', replica b'b'",
        "type differs at b'x': source 'd', replica 'f'",
    ]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
