"""The systemd unit `trigsync service install` writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trigsync import service
from trigsync.cli import main


def test_quote_for_exec_start() -> None:
    assert service.quote("/etc/trigsync.toml") == "/etc/trigsync.toml"
    assert service.quote("/etc/my sync.toml") == '"/etc/my sync.toml"'
    assert service.quote('/a"b\\c') == '"/a\\"b\\\\c"'
    assert service.quote("/x/100%/$HOME") == "/x/100%%/$$HOME"


def test_unit_content() -> None:
    text = service.unit(
        Path("/etc/my sync.toml"), user=False, argv=["/opt/trigsync/bin/trigsync"], watchdog=20
    )
    lines = text.splitlines()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        'ExecStart=/opt/trigsync/bin/trigsync run --config "/etc/my sync.toml"',
        "Restart=on-failure",
        "RestartPreventExitStatus=2 3",
        "WatchdogSec=20",
        "KillMode=mixed",
        "WantedBy=multi-user.target",
    ):
        assert line in lines
    user = service.unit(Path("/c.toml"), user=True, argv=["/bin/trigsync"])
    assert "WantedBy=default.target" in user.splitlines()


def test_binary_prefers_the_running_interpreters_script() -> None:
    argv = service.binary()
    if os.access(service.STABLE_BINARY, os.X_OK):
        assert argv == [service.STABLE_BINARY]
    else:
        assert argv == [str(Path(os.path.abspath(sys.executable)).parent / "trigsync")]


def test_install_writes_the_unit_and_prints_the_enable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "trigsync.toml"
    config.write_text(f'[[sync]]\nsource = "{tmp_path}"\ntargets = ["/mnt/replica"]\n')
    code = main(
        ["service", "install", "--config", str(config), "--unit-dir", str(tmp_path / "units")]
    )
    assert code == 0
    unit = tmp_path / "units" / "trigsync.service"
    text = unit.read_text()
    assert f"run --config {config}" in text
    assert "Type=notify" in text
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"wrote {unit}",
        "systemctl daemon-reload && systemctl enable --now trigsync.service",
    ]
    if shutil.which("systemd-analyze"):
        result = subprocess.run(  # noqa: S603 - argv list, no shell
            ["systemd-analyze", "verify", str(unit)],
            capture_output=True,
            text=True,
            check=False,
        )
        # Only lines about our unit count: the container's own units may warn too.
        ours = [line for line in result.stderr.splitlines() if "trigsync.service" in line]
        assert ours == [], result.stderr


def test_install_refuses_a_bad_config(tmp_path: Path) -> None:
    code = main(
        ["service", "install", "--config", str(tmp_path / "none.toml"), "--unit-dir", str(tmp_path)]
    )
    assert code == 2
    assert not (tmp_path / "trigsync.service").exists()
