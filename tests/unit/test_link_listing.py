"""Reading the receiver's --list-only of a renamed directory's old copy."""

from __future__ import annotations

from pathlib import Path

from trigsync.targets.rsyncd import symlinked_dirs

D = b"drwxr-xr-x          4,096 2026/11/29 15:36:17 "
L = b"lrwxrwxrwx             15 2026/11/29 15:36:17 "
F = b"-rw-r--r--              2 2026/11/29 15:36:17 "


def test_a_symlink_where_the_new_directory_has_a_directory_is_unsafe(tmp_path: Path) -> None:
    new = tmp_path / "site"
    (new / "sub").mkdir(parents=True)
    (new / "a -> b").mkdir()
    new_b = bytes(new)
    listing = D + b"old\n" + F + b"old/f\n" + L + b"old/link\n"
    assert not symlinked_dirs(listing, b"x/old", new_b)  # link: no directory in new
    assert symlinked_dirs(listing + L + b"old/sub -> /etc\n", b"x/old", new_b)
    assert symlinked_dirs(listing + L + b"old/a -> b -> /etc\n", b"x/old", new_b)
    assert symlinked_dirs(listing + L + b"old/we\\#012ird\n", b"x/old", new_b)


def test_old_must_be_a_directory_by_that_name() -> None:
    assert symlinked_dirs(L + b"old -> /etc\n", b"old", b"/nonexistent")
    assert symlinked_dirs(D + b"other\n", b"old", b"/nonexistent")
    assert symlinked_dirs(b"", b"old", b"/nonexistent")
    assert not symlinked_dirs(D + b"old\n", b"old", b"/nonexistent")
