"""Full-sync progress: rsync's real --info=progress2 output parsed, the bar and the log
line every 10 s, and the runner's report while a real rsync works."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trigsync import progress
from trigsync.progress import Progress, Reporter, parse

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed")


def tree(path: Path, files: int, size: int) -> Path:
    path.mkdir()
    for i in range(files):
        (path / f"f{i:03}").write_bytes(os.urandom(size))
    return path


def test_parses_what_rsync_prints(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", 20, 100_000)
    out = subprocess.run(  # noqa: S603 - argv list, no shell
        ["rsync", "-a", "--info=progress2", "--bwlimit=4m", f"{src}/", f"{tmp_path}/dst/"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    seen = [p for line in out.replace("\r", "\n").splitlines() if (p := parse(line))]
    assert len(seen) >= 5
    assert [p.bytes for p in seen] == sorted(p.bytes for p in seen)
    last = seen[-1]
    assert (last.bytes, last.percent, last.files, last.left, last.total) == (
        2_000_000,
        100,
        20,
        0,
        21,  # the files and the directory itself
    )
    assert last.rate.endswith("B/s")
    assert parse("sending incremental file list") is None


def test_parse_while_listing() -> None:
    p = parse("  1,048,576  12%  1.00MB/s    0:00:07 (xfr#3, ir-chk=1000/1200)")
    assert p == Progress(1_048_576, 12, "1.00MB/s", "0:00:07", 3, 1000, 1200, True)
    assert progress.describe(p) == (
        "12%, 1.0 MiB, 1.00MB/s, ETA 0:00:07, 3 files sent, 1000/1200+ (still listing) to check"
    )


def test_a_terminal_gets_a_bar_and_a_log_gets_a_line_every_10_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = Progress(5_000_000, 50, "1.00MB/s", "0:00:05", 10, 10, 21)
    tty = io.StringIO()
    shown = Reporter("rsync://h/m/", stream=tty)
    shown.update(p)
    shown.done()
    assert tty.getvalue() == (
        "\rrsync://h/m/ [############............] 50%, 4.8 MiB, 1.00MB/s, ETA 0:00:05, "
        "10 files sent, 10/21 to check\x1b[K\n"
    )
    now = [100.0]
    logged = Reporter("/backup", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="trigsync.progress"):
        for step in range(25):  # 0 to 24 s, one update a second
            now[0] = 100.0 + step
            logged.update(p._replace(percent=step * 4))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # at 10 s and at 20 s
    assert lines[0].startswith("/backup: full sync 40%, 4.8 MiB, 1.00MB/s, ETA 0:00:05")
    assert lines[1].startswith("/backup: full sync 80%, ")


def test_the_runner_reports_while_a_real_rsync_runs(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", 10, 200_000)
    seen: list[Progress] = []
    argv = ["rsync", "-a", "--bwlimit=4m", "--info=progress2", f"{src}/", f"{tmp_path}/dst/"]
    result = asyncio.run(progress.run(argv, None, seen.append))
    assert result.code == 0
    assert len(seen) >= 3 and seen[-1].percent == 100 and seen[-1].files == 10
    assert sorted(os.listdir(tmp_path / "dst")) == sorted(os.listdir(src))


def test_full_sync_puts_the_option_before_source_and_destination(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", 2, 10)
    runner = progress.FullSync("x")
    result = asyncio.run(runner(["rsync", "-a", f"{src}/", f"{tmp_path}/dst/"], None, None))
    assert result.code == 0, result.stderr
    assert runner.current is None
    assert sorted(os.listdir(tmp_path / "dst")) == ["f000", "f001"]
