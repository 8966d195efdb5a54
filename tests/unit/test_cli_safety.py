"""Command-line and start-up hardening: flags with --config, RSYNC_PASSWORD, the state dir."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from trigsync import cli, config, rsync
from trigsync.targets import build


@pytest.mark.parametrize(
    "flag",
    [
        ["--exclude", "*.tmp"],
        ["--password-file", "/pw"],
        ["--delay", "1"],
        ["--rsync-path", "/bin/rsync"],
    ],
)
def test_per_sync_flags_with_config_are_a_usage_error(
    tmp_path: Path, flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[[sync]]\nsource = "/nonexistent"\ntargets = ["/tmp/x"]\n')
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--config", str(cfg), *flag])
    assert exit_.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{flag[0]} cannot be given with --config" in message and str(cfg) in message


def test_rsync_password_reaches_only_the_daemon_target_that_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSYNC_PASSWORD", "s3cret")
    (tmp_path / "src").mkdir()
    cfg = config.from_args(str(tmp_path / "src"), ["u@h::www", "h:/srv", str(tmp_path / "r")])
    daemon, ssh, local = (build(s, state_dir=tmp_path) for s in cfg.syncs[0].targets)
    assert daemon.transport().env == {"RSYNC_PASSWORD": "s3cret"}
    assert ssh.transport().env is None and local.transport().env is None
    assert "s3cret" not in repr(cfg)

    async def child_sees(env: dict[str, str] | None) -> bytes:
        argv = ["sh", "-c", "echo ${RSYNC_PASSWORD-unset}"]
        return (await rsync.run(argv, env=env, stdout=True)).stdout.strip()

    assert asyncio.run(child_sees(None)) == b"unset"
    assert asyncio.run(child_sees(daemon.transport().env)) == b"s3cret"  # type: ignore[arg-type]


def test_the_command_line_takes_rsync_password_out_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSYNC_PASSWORD", "s3cret")
    (tmp_path / "src").mkdir()
    parser = cli._parser()
    args = parser.parse_args(["run", str(tmp_path / "src"), "u@h::www"])
    cfg = cli._load_config(args, parser)
    assert "RSYNC_PASSWORD" not in os.environ
    assert cfg.syncs[0].targets[0].password == "s3cret"


def _once(tmp_path: Path, state: Path) -> int:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "f").write_bytes(b"x")
    argv = [
        "run",
        str(tmp_path / "src"),
        str(tmp_path / "dst"),
        "--once",
        "--state-dir",
        str(state),
    ]
    return cli.main(argv)


def test_a_loose_state_directory_is_made_private_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        assert _once(tmp_path, state) == 0
    assert state.stat().st_mode & 0o777 == 0o700
    assert "was mode 0755; set to 0700" in caplog.text


def test_the_lock_file_is_never_followed_through_a_symlink(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (state / "lock").symlink_to(victim)
    assert _once(tmp_path, state) != 0
    assert victim.read_bytes() == b"precious\n"
