"""The exclude rules that keep unreadable directories out of a full sync's deletions."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from trigsync import rsync
from trigsync.fullsync import exclude_list, unreadable_dirs
from trigsync.rsync import Options, Transport


def test_names_with_wildcards_are_matched_literally_by_rsync(tmp_path: Path) -> None:
    names = ["w*[x]?", "back\\slash*", "plain", "wzzz", "wxxx"]
    src, dst = tmp_path / "src", tmp_path / "dst"
    for name in names:
        (src / name).mkdir(parents=True)
        (src / name / "f").write_bytes(b"x")
    skipped = [os.fsencode(n) for n in names[:3]]
    subprocess.run(  # noqa: S603 - fixed argv
        [
            "rsync",
            "-a",
            *rsync.full_argv(b"", Options(), Transport(""), exclude_from_stdin=True)[-4:-2],
            f"{src}/",
            f"{dst}/",
        ],
        input=exclude_list(skipped),
        check=True,
    )
    assert sorted(os.listdir(dst)) == ["wxxx", "wzzz"]


def test_only_directories_that_cannot_be_listed_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    assert unreadable_dirs(os.fsencode(tmp_path)) == []
