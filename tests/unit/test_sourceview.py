"""The kernel's no-symlink view of the source (needs root on Linux 5.14+)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from trigsync import sourceview
from trigsync.sourceview import SourceView


@pytest.fixture
def view(tmp_path: Path) -> SourceView:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("mine")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_text("secret")
    os.symlink("../outside", src / "d2")
    os.symlink("f", src / "d" / "lnk")
    v = SourceView(os.fsencode(src))
    if v.path() == v.source:
        pytest.skip("no nosymfollow view here (needs CAP_SYS_ADMIN, Linux 5.14+)")
    return v


def test_the_view_follows_no_symlink_but_reads_them(view: SourceView) -> None:
    path = view.path()
    assert (Path(os.fsdecode(path)) / "d" / "f").read_text() == "mine"
    with pytest.raises(OSError) as caught:
        (Path(os.fsdecode(path)) / "d2" / "f").read_text()
    assert caught.value.errno == errno.ELOOP
    assert os.readlink(path + b"/d2") == b"../outside"
    fd = view._fd
    assert fd in sourceview.held()
    view.close()
    # Other views of this process (another test's) may still be held: only ours must go.
    assert view._fd == -1 and fd not in sourceview.held()


def test_rsync_copies_symlinks_as_symlinks_and_never_through_them(
    view: SourceView, tmp_path: Path
) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    path = os.fsdecode(view.path())
    argv = ["rsync", "-a", "--files-from=-", "--from0", f"{path}/", f"{dst}/"]
    done = subprocess.run(  # noqa: S603
        argv, input=b"d/f\0d/lnk\0d2\0", pass_fds=sourceview.held(), check=False
    )
    assert done.returncode == 0
    assert (dst / "d" / "f").read_text() == "mine"
    assert os.readlink(dst / "d" / "lnk") == "f"
    assert os.readlink(dst / "d2") == "../outside"
    # listed through the symlink: refused (ELOOP), never the outside file
    subprocess.run(  # noqa: S603
        argv, input=b"d2/f\0", pass_fds=sourceview.held(), check=False, capture_output=True
    )
    assert (dst / "d2").is_symlink()
    view.close()


def test_a_swapped_source_root_shows_in_the_next_path(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "which").write_text(name)
    os.symlink("one", tmp_path / "current")
    v = SourceView(os.fsencode(tmp_path / "current"))
    first = v.path()
    if first == v.source:
        pytest.skip("no nosymfollow view here")
    assert Path(os.fsdecode(first), "which").read_text() == "one"
    os.unlink(tmp_path / "current")
    os.symlink("two", tmp_path / "current")
    second = v.path()
    assert second == first  # the same fd number: a waiting standby's argv stays valid
    assert Path(os.fsdecode(second), "which").read_text() == "two"
    v.close()


def test_a_view_that_cannot_be_made_says_so_once_and_reads_the_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = os.fsencode(tmp_path / "no-such-source")
    assert SourceView(missing).path() == missing  # gone for now: no warning
    assert not caplog.records
    views = [SourceView(missing), SourceView(missing)]
    monkeypatch.setattr(sourceview, "UNSUPPORTED", frozenset({errno.ENOENT}))
    assert [v.path() for v in views] == [missing, missing]
    warnings = [r for r in caplog.records if "no-symlink view" in r.getMessage()]
    assert len(warnings) == 1


def test_rsync_output_names_the_source_not_the_view(view: SourceView) -> None:
    path = view.path()
    said = b'rsync: [sender] link_stat "' + path + b'/x" failed'
    assert view.unview(said) == b'rsync: [sender] link_stat "' + view.source + b'/x" failed'
    view.close()


def test_a_filesystem_mounted_below_the_source_shows_in_the_next_path(view: SourceView) -> None:
    below = Path(os.fsdecode(view.source), "d")
    assert (Path(os.fsdecode(view.path()), "d", "f")).exists()
    assert not view._mounts_changed()  # nothing changed: no clone on the next path()
    mounted = subprocess.run(  # noqa: S603
        ["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(below)],
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("mount is not permitted here")
    try:
        (below / "on-tmpfs").write_text("x")
        assert (Path(os.fsdecode(view.path()), "d", "on-tmpfs")).read_text() == "x"
    finally:
        subprocess.run(["umount", "-l", str(below)], check=False)  # noqa: S603
        view.close()
