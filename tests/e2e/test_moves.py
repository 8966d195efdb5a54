"""A renamed directory is moved on the target, not sent again."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.conftest import Start
from tests.e2e.harness import Replica
from tests.support.proc import wait_for
from tests.support.trees import wait_trees_equal

MB = 1 << 20


def inodes(root: Path) -> dict[bytes, int]:
    """Inode of every regular file below root, by path relative to root."""
    out = {}
    base = os.fsencode(root)
    for dirpath, _, files in os.walk(base):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, base)] = os.lstat(path).st_ino
    return out


def test_directory_rename_sends_no_bytes(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    old = source / "site" / "assets"
    (old / "img").mkdir(parents=True)
    for i in range(20):
        (old / f"f{i:02d}.bin").write_bytes(os.urandom(2 * MB))
    (old / "img" / "logo.bin").write_bytes(os.urandom(10 * MB))
    (source / "site" / "static").mkdir()
    start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=60, owners=replica.owners)
    before = inodes(replica.path / "site" / "assets")
    if replica.log:  # the daemon logs a run's totals just after its files are in place
        log = replica.log
        wait_for(lambda: b"total size 52428800" in log.read_bytes(), what="the full sync's log")
    log_size = os.path.getsize(replica.log) if replica.log else 0

    os.rename(old, source / "site" / "static" / "assets-v2")  # 50 MB, across directories
    wait_trees_equal(source, replica.path, timeout=60, owners=replica.owners)

    after = inodes(replica.path / "site" / "static" / "assets-v2")
    assert after == before, "the replica's files were sent again instead of moved"
    if replica.log:  # the daemon logs what each connection received
        received = 0
        with open(replica.log, "rb") as fh:
            fh.seek(log_size)
            for line in fh:
                if b" received " in line and b"total size" in line:
                    received += int(line.split(b" received ")[1].split()[0])
        assert received < 0.01 * 50 * MB, f"{received} bytes crossed the wire for a rename"


def test_in_place_deploy_sends_renamed_temp_files_as_plain_changes(
    source: Path, tmp_path: Path, replica: Replica, start_trigsync: Start
) -> None:
    """``rsync -a --delete release/ live/`` renames a temp file over every updated name.

    No target can have those temp files, so there is nothing to move: each rename is a
    change at its new name, and the runs never wait on rename hints (finding 9).
    """
    import subprocess

    from tests.e2e.deploy import release

    release(tmp_path / "r1", 0, files=600)
    release(tmp_path / "r2", 1, files=600)
    subprocess.run(["rsync", "-a", f"{tmp_path / 'r1'}/", f"{source}/"], check=True)  # noqa: S603
    trig = start_trigsync(replica)
    wait_trees_equal(source, replica.path, timeout=60, owners=replica.owners)
    argv = ["rsync", "-a", "--delete", f"{tmp_path / 'r2'}/", f"{source}/"]
    subprocess.run(argv, check=True)  # noqa: S603
    waited = wait_trees_equal(source, replica.path, timeout=60, owners=replica.owners)
    hints = [line for line in trig.log().splitlines() if "renamed paths in place" in line]
    assert not hints, "\n".join(hints[:5])
    print(f"deploy of 600 files equal {waited:.2f} s after rsync's exit")


def test_directory_moved_out_and_made_again_loses_its_old_files(
    source: Path, replica: Replica, start_trigsync: Start, tmp_path: Path
) -> None:
    """A release directory swapped out and a fresh one made at its name before the
    deletion was sent: DELETED then NEW merged to CHANGED, a list run is not recursive,
    and the replica kept the old directory's files until the next full sync."""
    site = source / "site"
    (site / "old").mkdir(parents=True)
    for name in ("a.html", "b.html", "old/c.css"):
        (site / name).write_bytes(name.encode())
    start_trigsync(replica, extra={"delay": 0.3})
    wait_trees_equal(source, replica.path)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(site, outside / "site")  # within one delay: moved out, then made again
    site.mkdir()
    (site / "a.html").write_bytes(b"the new release")
    wait_trees_equal(source, replica.path)
