from __future__ import annotations

import os
from pathlib import Path

import pytest

from trigsync.errors import ConfigError, SetupError
from trigsync.targets import (
    DaemonTarget,
    LocalTarget,
    SshTarget,
    TargetSpec,
    build,
    kind_of,
    rsyncd,
    ssh,
)


@pytest.mark.parametrize(
    ("url", "cls"),
    [
        ("rsync://u@h/www", DaemonTarget),
        ("u@h::www", DaemonTarget),
        ("h::www/sub", DaemonTarget),
        ("ssh://u@h:2222/srv/www", SshTarget),
        ("u@h:/srv/www", SshTarget),
        ("/backup/www", LocalTarget),
        ("file:///backup/www", LocalTarget),
        ("./rel/dir", LocalTarget),
    ],
)
def test_kind_from_url(url: str, cls: type) -> None:
    assert kind_of(url) is cls


def test_daemon_forms() -> None:
    a = rsyncd.parse("rsync://backup@10.0.0.2:8873/www/site")
    assert (a.user, a.host, a.port, a.module, a.subdir) == (
        "backup",
        "10.0.0.2",
        8873,
        "www",
        "site",
    )
    assert a.destination == "rsync://backup@10.0.0.2:8873/www/site/"
    # After :: comes the module, not a user.
    b = rsyncd.parse("backup@10.0.0.2::www")
    assert (b.user, b.module, b.port) == ("backup", "www", 873)


@pytest.mark.parametrize("url", ["rsync://h/", "u@h::", "rsync://h:99999/www"])
def test_daemon_url_errors_name_the_fix(url: str) -> None:
    with pytest.raises(ConfigError, match=r"module|port"):
        rsyncd.parse(url)


def test_ssh_forms() -> None:
    a = ssh.parse("ssh://deploy@web2:2222/var/www")
    assert (a.login, a.port, a.path) == ("deploy@web2", 2222, "/var/www/")
    b = ssh.parse("web2:/var/www")
    assert (b.login, b.port, b.path) == ("web2", None, "/var/www/")
    with pytest.raises(ConfigError, match="absolute"):
        ssh.parse("web2:relative/dir")


def test_ssh_transport_is_multiplexed(tmp_path: Path) -> None:
    t = build(TargetSpec("ssh://u@h:2222/srv", identity_file="/k"), state_dir=tmp_path)
    tr = t.transport()
    assert tr.destination == "h:/srv/"
    e = tr.options[tr.options.index("-e") + 1]
    assert "ControlMaster=auto" in e and f"ControlPath={tmp_path}/ssh/" in e and "-i /k" in e
    # rsync appends only the host, after "--": a host can never be read as an ssh option
    assert e.endswith(" -l u --")


def test_daemon_transport_never_carries_the_password(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    t = build(TargetSpec("u@h::www", password_file=str(pw)), state_dir=tmp_path)
    t.check()
    tr = t.transport()
    assert "--sockopts=TCP_NODELAY" in tr.options
    assert not any("s3cret" in o for o in tr.options)


def test_password_file_problems_are_clear(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    spec = TargetSpec("u@h::www", password_file=str(pw))
    with pytest.raises(SetupError, match=r"does not exist.*chmod 600"):
        build(spec, state_dir=tmp_path).check()
    pw.write_text("x\n")
    pw.chmod(0o644)
    with pytest.raises(SetupError, match=r"readable by others.*chmod 600"):
        build(spec, state_dir=tmp_path).check()


def test_user_without_password_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RSYNC_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="--password-file"):
        build(TargetSpec("u@h::www"), state_dir=tmp_path).check()


def test_local_target_path(tmp_path: Path) -> None:
    t = build(TargetSpec(str(tmp_path / "r")), state_dir=tmp_path)
    assert t.transport().destination == os.fspath(tmp_path / "r") + "/"
    t.check()
    with pytest.raises(SetupError, match="mkdir -p"):
        build(TargetSpec(str(tmp_path / "x/y/z")), state_dir=tmp_path).check()
