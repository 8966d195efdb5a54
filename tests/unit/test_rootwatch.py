"""The pure parts of rootwatch: reading mountinfo, mounts below a root, symlinks on a path."""

from __future__ import annotations

import os
from pathlib import Path

from trigsync.rootwatch import below, parse_mountinfo, symlink_dirs

MOUNTINFO = (
    b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    b"40 22 0:35 / /srv/www/site/my\\040uploads rw - tmpfs none rw\n"
    b"41 22 0:36 / /srv/www/site\\134x rw - tmpfs none rw\n"
    b"42 22 0:37 / /srv/www/sitemap rw - tmpfs none rw\n"
    b"43 22 0:38 /data /srv/www/site rw - ext4 /dev/sdb1 rw\n"
)


def test_mount_points_are_unescaped_exactly() -> None:
    assert parse_mountinfo(MOUNTINFO) == [
        (b"22", b"/"),
        (b"40", b"/srv/www/site/my uploads"),
        (b"41", b"/srv/www/site\\x"),
        (b"42", b"/srv/www/sitemap"),
        (b"43", b"/srv/www/site"),
    ]


def test_only_mounts_at_or_below_the_root_count() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert below(mounts, b"/srv/www/site") == {
        (b"40", b"/srv/www/site/my uploads"),
        (b"43", b"/srv/www/site"),
    }
    assert below(mounts, b"/") == frozenset(mounts)


def test_a_mount_replaced_at_the_same_point_is_a_change() -> None:
    # umount then mount again between two wake-ups: the point is the same, the id is not.
    before = below([(b"40", b"/srv/site/mnt")], b"/srv/site")
    after = below([(b"44", b"/srv/site/mnt")], b"/srv/site")
    assert before != after


def test_symlink_dirs_names_the_directory_of_each_symlinked_component(tmp_path: Path) -> None:
    (tmp_path / "releases" / "2" / "public").mkdir(parents=True)
    (tmp_path / "current").symlink_to("releases/2")
    root = os.fsencode(tmp_path / "current" / "public")
    assert symlink_dirs(root) == [os.fsencode(tmp_path)]
    assert symlink_dirs(os.fsencode(tmp_path / "releases" / "2")) == []
