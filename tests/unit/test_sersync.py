"""sersync's confxml.xml into the same Config the TOML loader builds."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from trigsync import config, sersync, sersync_cli, sersync_import
from trigsync.config import CommandHook
from trigsync.errors import ConfigError
from trigsync.sersync_params import common_params
from trigsync.targets import TargetSpec

FIXTURES = Path(__file__).parent / "fixtures" / "sersync"


def _read(name: str, source: Path) -> sersync.Imported:
    text = (FIXTURES / name).read_bytes().replace(b"/opt/tongbu", bytes(source))
    return sersync.parse(text, origin=name)


def _warnings(imported: sersync.Imported) -> list[str]:
    return [n.element for n in imported.notes if n.warning]


def test_default_confxml(tmp_path: Path) -> None:
    imported = _read("default.xml", tmp_path)
    (sync,) = imported.config.syncs
    assert sync == config.SyncConfig(
        source=str(tmp_path),
        targets=(TargetSpec(url="rsync://127.0.0.1/tongbu1"),),
        rsync_args=("-uz",),
        watch_modify=False,
        retry_max=3600.0,
    )
    # The stock file enables nothing trigsync lacks, but defines plugins it cannot run.
    assert _warnings(imported) == ["host", "plugin socket", "plugin refreshCDN"]
    cdn = next(n for n in imported.notes if n.element == "plugin refreshCDN")
    assert "sersync ran it only with -m refreshCDN" in str(cdn)


def test_tutorial_setup_with_two_remotes_auth_port_filters_crontab_and_hook(
    tmp_path: Path,
) -> None:
    imported = _read("tutorial.xml", tmp_path)
    (sync,) = imported.config.syncs
    assert sync.targets == (
        TargetSpec(
            url="rsync://rsync_backup@10.0.0.25:8873/www", password_file="/etc/rsync.password"
        ),
        TargetSpec(
            url="rsync://rsync_backup@10.0.0.26:8873/www_bak",
            password_file="/etc/rsync.password",
        ),
    )
    assert sync.exclude_regex == (
        r"(.*)\.svn",
        r"(.*)\.gz",
        "^info/*",
        r"^cache/(.*)\.tmp",
        r"(.*)\.(swp|swx)",
    )
    assert sync.excludes == ("*.gz", "info/*")  # crontabfilter: rsync patterns already
    assert sync.rsync_args == ("-uz", "--bwlimit=2000")
    assert sync.timeout == 100
    assert sync.reconcile_every == 30 * 60
    assert sync.retry_max == 5 * 60
    assert sync.command_hooks == (
        CommandHook(
            argv=("/usr/local/bin/purge", "--quiet"),
            argv_after=("--now",),
            include_regex=(r"(.*)\.php",),
            ignore_error=False,
        ),
    )
    assert _warnings(imported) == ["host"]
    assert "once per file" in str(next(n for n in imported.notes if n.element == "plugin command"))


def test_ssh_remotes_take_the_port_and_need_absolute_paths(tmp_path: Path) -> None:
    imported = _read("ssh.xml", tmp_path)
    (sync,) = imported.config.syncs
    assert [t.url for t in sync.targets] == [
        "ssh://web2.example.com:2222/var/www",
        "ssh://[fd00::7]:2222/srv/www",
    ]
    assert all(t.password_file is None for t in sync.targets)
    assert sync.watch_modify is True
    assert sync.rsync_args == ("-z",)
    assert _warnings(imported) == [
        "debug",
        "inotify/delete start=false",
        "sersync/plugin refreshCDN",
        "sersync/mystery",
    ]
    relative = (FIXTURES / "ssh.xml").read_bytes().replace(b'name="/var/www"', b'name="www"')
    with pytest.raises(ConfigError, match=r"relative; over ssh .* absolute path"):
        sersync.parse(relative.replace(b"/opt/tongbu", bytes(tmp_path)), origin="x.xml")


@pytest.mark.parametrize("name", ["default.xml", "tutorial.xml", "ssh.xml"])
def test_import_prints_toml_that_loads_into_the_same_config(name: str, tmp_path: Path) -> None:
    imported = _read(name, tmp_path)
    text = sersync_import.render(imported, name)
    assert config.from_mapping(tomllib.loads(text), origin=name) == imported.config
    assert "dot-files" in text and "exit 23" in text
    for note in imported.notes:  # every note shows as a comment
        assert str(note) in text


def test_import_comments_sit_above_the_key_they_explain(tmp_path: Path) -> None:
    text = sersync_import.render(_read("tutorial.xml", tmp_path), "tutorial.xml")
    lines = text.splitlines()
    at = lines.index("reconcile_every = 1800")
    assert lines[at - 1] == "# crontab: a full sync every 30 min"


@pytest.mark.parametrize(
    "bad, message",
    [
        (b'<?xml version="1.0"?><!DOCTYPE head [<!ENTITY x "y">]><head/>', "DOCTYPE"),
        (b"<head><sersync>", "not well-formed"),
        (b"<config/>", "not sersync's <head>"),
        (b"<head/>", "no <sersync> section"),
        (b"<head><sersync/></head>", "no <localpath"),
        (
            b'<head><sersync><localpath watch="/"><remote ip="h" name="m"/></localpath>'
            b'<rsync><userDefinedPort start="true" port="x"/></rsync></sersync></head>',
            "not a number",
        ),
        (
            b'<head><sersync><localpath watch="/"><remote ip="h" name="m"/></localpath>'
            b'<crontab start="true" schedule="soon"/></sersync></head>',
            "positive whole number",
        ),
        (
            b'<head><sersync><localpath watch="/"><remote ip="evil/x" name="m"/>'
            b"</localpath></sersync></head>",
            "not a host name or address",
        ),
        (
            b'<head><sersync><localpath watch="/"><remote ip="h" name="m"/></localpath>'
            b'<rsync><auth start="true" users="a@b" passwordfile="/p"/></rsync></sersync></head>',
            "must be one user name",
        ),
        (
            b'<head><sersync><localpath watch="/nonexistent/dir"><remote ip="h" name="m"/>'
            b"</localpath></sersync></head>",
            "not a directory",
        ),
    ],
)
def test_bad_files_fail_with_one_line_naming_the_problem(bad: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sersync.parse(bad, origin="confxml.xml")


def test_missing_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file; check the path given to -o"):
        sersync.load(tmp_path / "nope.xml")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-d", "-r", "-o", "/opt/c.xml"], ["run", "-d", "-r", "-o", "/opt/c.xml"]),
        (["-dro", "/opt/c.xml"], ["run", "-d", "-r", "-o", "/opt/c.xml"]),
        (["-r", "-n", "12", "-o", "c.xml", "-v"], ["run", "-r", "-n", "12", "-o", "c.xml", "-v"]),
        (["-r"], ["run", "-r", "-o", "confxml.xml"]),  # sersync2's default file
    ],
)
def test_sersync2_command_line_becomes_run(argv: list[str], expected: list[str]) -> None:
    assert sersync_cli.is_sersync_argv(argv)
    assert sersync_cli.translate(argv) == expected


def test_sersync2_flags_without_equivalent_are_refused_with_the_reason() -> None:
    assert not sersync_cli.is_sersync_argv(["run", "-r"])
    with pytest.raises(ConfigError, match="no such plugin: drop -m"):
        sersync_cli.translate(["-m", "socket"])
    with pytest.raises(ConfigError, match="-o needs a value"):
        sersync_cli.translate(["-r", "-o"])


@pytest.mark.parametrize(
    "params, kept",
    [
        ("-artuz", ["-uz"]),
        ("-avz --delete --bwlimit=100", ["-z", "--bwlimit=100"]),
        ("-rtlz -e 'ssh -p 22'", ["-z", "-e", "ssh -p 22"]),
        ("-a", []),
    ],
)
def test_common_params_keep_what_trigsync_does_not_set_itself(params: str, kept: list[str]) -> None:
    assert common_params(params) == kept


def test_common_params_refuse_a_word_that_is_not_an_option() -> None:
    with pytest.raises(ValueError, match="'rsync' is not an option"):
        common_params("rsync -az")
