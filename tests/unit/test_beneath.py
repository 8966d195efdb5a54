"""Renames beneath a replica root never follow a symlink in any component."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trigsync.targets import beneath


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow").write_bytes(b"secret")
    replica = tmp_path / "replica"
    (replica / "d").mkdir(parents=True)
    (replica / "x").symlink_to(tmp_path / "outside")
    (replica / "d" / "f").write_bytes(b"f")
    return replica


def _rename(root: Path, old: bytes, new: bytes) -> None:
    fd = beneath.open_root(os.fsencode(root))
    try:
        beneath.rename(fd, old, new)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("old", "new"), [(b"x/shadow", b"z"), (b"d/f", b"x/f"), (b"d/../x/shadow", b"z")]
)
def test_a_symlinked_or_escaping_parent_is_refused(root: Path, old: bytes, new: bytes) -> None:
    with pytest.raises(OSError):
        _rename(root, old, new)
    assert (root.parent / "outside" / "shadow").read_bytes() == b"secret"
    assert sorted(os.listdir(root.parent / "outside")) == ["shadow"]


def test_plain_renames_and_a_symlink_as_the_last_component(root: Path) -> None:
    _rename(root, b"d/f", b"g")
    assert (root / "g").read_bytes() == b"f"
    _rename(root, b"x", b"d/x2")  # the link itself moves; its target is untouched
    assert os.readlink(root / "d" / "x2") == str(root.parent / "outside")
