"""Attack on issue 15: confxml.xml as the tutorials write it, and hostile variants."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from trigsync import config, doctor, sersync, sersync_import
from trigsync.errors import ConfigError
from trigsync.excludes import Excludes, regex_to_rsync

CONFXML = """<?xml version="1.0" encoding="{enc}"?>
<head version="2.5">
    <filter start="true">
    <exclude expression="(.*)\\.svn"></exclude>
    </filter>
    <sersync>
    <localpath watch="{watch}">
        <!-- {comment} -->
        <remote ip="{ip}" name="{name}"/>
    </localpath>
    <rsync>
        <commonParams params="-artuz"/>
        <ssh start="{ssh}"/>
    </rsync>
    </sersync>
</head>
"""


def _xml(watch: Path | str, *, enc: str = "ISO-8859-1", **kw: str) -> str:
    fields = {"comment": "sync", "ip": "127.0.0.1", "name": "www", "ssh": "false", **kw}
    return CONFXML.format(enc=enc, watch=watch, **fields)


@pytest.mark.parametrize("enc", ["GBK", "gb2312", "GB18030"])
def test_a_chinese_encoding_declaration_is_read(enc: str, tmp_path: Path) -> None:
    """Tutorials save confxml.xml as GBK; sersync (tinyxml) read it byte for byte."""
    data = _xml(tmp_path, enc=enc, comment="同步到备份服务器").encode("gbk")
    (sync,) = sersync.parse(data, origin="confxml.xml").config.syncs
    assert sync.source == str(tmp_path)
    assert sync.exclude_regex == (r"(.*)\.svn",)


def test_a_utf8_path_in_the_stock_iso_8859_1_file_names_the_real_directory(
    tmp_path: Path,
) -> None:
    """sersync's stock file says ISO-8859-1; users add a UTF-8 path in a UTF-8 editor."""
    source = tmp_path / "网站"
    source.mkdir()
    data = _xml(source, comment="中文注释").encode("utf-8")
    (sync,) = sersync.parse(data, origin="confxml.xml").config.syncs
    assert sync.source == str(source)


def test_a_doctype_in_utf16_is_refused_too(tmp_path: Path) -> None:
    text = _xml("&src;", enc="UTF-16").replace(
        "<head", f'<!DOCTYPE head [<!ENTITY src "{tmp_path}">]>\n<head', 1
    )
    with pytest.raises(ConfigError, match="DOCTYPE"):
        sersync.parse(text.encode("utf-16"), origin="confxml.xml")


@pytest.mark.parametrize(
    ("ip", "name", "ssh"),
    [
        ("127.0.0.1", "../etc", "false"),
        ("127.0.0.1", "www/../../etc", "false"),
        ("127.0.0.1", "-e", "false"),
        ("127.0.0.1", "rsync://10.0.0.1/www", "false"),
        ("-Jevil.example", "www", "false"),
        ("-Jevil.example", "/data/www", "true"),
        ("127.0.0.1", "/data/../../etc", "true"),
    ],
)
def test_a_hostile_remote_is_refused(ip: str, name: str, ssh: str, tmp_path: Path) -> None:
    data = _xml(tmp_path, ip=ip, name=name, ssh=ssh).encode()
    with pytest.raises(ConfigError, match="<remote>"):
        sersync.parse(data, origin="confxml.xml")


# Each regex against names it does and does not fully match.
REGEX_CASES = [
    (r"a+\.log", [b"a.log", b"aa.log", b"a+.log", b"d/aa.log"]),
    (r"(.*)\.gz", [b"x.gz", b"d/x.gz", b"x.gzz", b".gz"]),
    (r"^info/*", [b"info", b"info/x", b"xinfo", b"d/info"]),
    (r"^cache/(.*)\.tmp", [b"cache/a.tmp", b"cache/d/a.tmp", b"a.tmp"]),
    (r"(.*)~", [b"a~", b"d/a~", b"a"]),
    (r"(.*)\.(swp|swx)", [b"a.swp", b"d/a.swx", b"a.swpx", b"a.sw"]),
    (r"(.*)\.sw[px]", [b"a.swp", b"d/a.swx", b"a.swq"]),
    (r"^(cache|tmp)/(.*)\.tmp", [b"cache/a.tmp", b"tmp/d/a.tmp", b"x/a.tmp"]),
]


@pytest.mark.parametrize(("regex", "paths"), REGEX_CASES, ids=[r for r, _ in REGEX_CASES])
def test_the_rsync_pattern_of_a_regex_excludes_what_the_regex_does(
    regex: str, paths: list[bytes]
) -> None:
    """A full sync uses the translated pattern: it must agree with the watcher on every path."""
    glob = regex_to_rsync(regex)
    if glob is None:
        return  # reported as untranslatable: warned about, not silently wrong
    watcher, rsync = Excludes(regexes=[regex]), Excludes(patterns=[glob])
    for path in paths:
        assert rsync.excludes(path, is_dir=False) == watcher.excludes(path, is_dir=False), (
            regex,
            glob,
            path,
        )


@pytest.mark.parametrize("regex", ["(a+)+b", "(a|aa)+b"])
def test_a_catastrophic_regex_cannot_freeze_the_watcher(regex: str) -> None:
    """A file name in the (hostile) source tree must not hang the exclude check forever."""
    code = (
        "from trigsync.excludes import Excludes\n"
        "try:\n"
        f"    ex = Excludes(regexes=[{regex!r}])\n"
        "except Exception:\n"
        "    raise SystemExit(0)\n"
        "ex.excludes(b'a' * 40 + b'!', is_dir=False)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=10)  # noqa: S603


def test_a_regex_with_inline_flags_is_valid_and_full_matched() -> None:
    ex = Excludes(regexes=[r"(?i)(.*)\.jpg", r"(.*)\.svn|(.*)\.git"])
    assert ex.excludes(b"d/a.JPG", is_dir=False)
    assert ex.excludes(b"d/x.git", is_dir=False)
    assert not ex.excludes(b"d/a.jpgx", is_dir=False)
    assert not ex.excludes(b"x.svnx", is_dir=False)


def test_a_second_filter_block_is_not_silently_dropped(tmp_path: Path) -> None:
    text = _xml(tmp_path).replace(
        "<sersync>",
        '<filter start="true"><exclude expression="(.*)\\.tmp"></exclude></filter>\n<sersync>',
        1,
    )
    imported = sersync.parse(text.encode(), origin="confxml.xml")
    (sync,) = imported.config.syncs
    honoured = set(sync.exclude_regex)
    warned = any("filter" in n.element and n.warning for n in imported.notes)
    assert {r"(.*)\.svn", r"(.*)\.tmp"} <= honoured or warned


def test_import_writes_toml_for_any_path_it_read(tmp_path: Path) -> None:
    source = tmp_path / "site-😀"
    source.mkdir()
    imported = sersync.parse(_xml(source, enc="UTF-8").encode(), origin="confxml.xml")
    out = sersync_import.render(imported, "confxml.xml")
    assert tomllib.loads(out)["sync"][0]["source"] == str(source)
    assert re.search(r"^source = ", out, re.M)


def test_import_comments_cannot_smuggle_toml_lines(tmp_path: Path) -> None:
    """A newline in an attribute (&#10;) must stay inside the comment that quotes it."""
    regex = "(.*)\\.svn&#10;rsync_path = &quot;/tmp/evil&quot;&#10;#"
    text = _xml(tmp_path).replace('expression="(.*)\\.svn"', f'expression="{regex}"')
    imported = sersync.parse(text.encode(), origin="confxml.xml")
    out = sersync_import.render(imported, "confxml.xml")
    (sync,) = config.from_mapping(tomllib.loads(out), origin="trigsync.toml").syncs
    assert sync == imported.config.syncs[0]
    assert sync.rsync_path == "rsync"


@pytest.mark.parametrize("ip", ["10.0.0.1:874", "backup.example.com:874", "1:2:3"])
def test_a_port_written_into_ip_is_named(ip: str, tmp_path: Path) -> None:
    """Tutorials' readers write ip="10.0.0.1:874"; it must not become the host [10.0.0.1:874]."""
    with pytest.raises(ConfigError, match=r"userDefinedPort|not a host"):
        sersync.parse(_xml(tmp_path, ip=ip).encode(), origin="confxml.xml")


@pytest.mark.parametrize("ip", ["::1", "fe80::1%eth0", "2001:db8::25"])
def test_an_ipv6_ip_is_a_host(ip: str, tmp_path: Path) -> None:
    (sync,) = sersync.parse(_xml(tmp_path, ip=ip).encode(), origin="confxml.xml").config.syncs
    assert sync.targets[0].url == f"rsync://[{ip}]/www"


def test_doctor_names_trailing_whitespace_in_the_password_file() -> None:
    """`echo "secret " > rsync.password`: rsync sends the space, the daemon says auth failed."""
    found = doctor.password_file_findings(
        "/etc/rsync.password", mode=0o100600, owner=0, text="secret \n", user="u", euid=0
    )
    assert any(f.level != doctor.Level.OK and "space" in f.text for f in found), found


def test_doctor_counts_only_the_directories_trigsync_watches(tmp_path: Path) -> None:
    """The tutorials exclude ^cache/* because it is huge; its directories take no watch."""
    src = tmp_path / "src"
    for i in range(30):
        (src / "cache" / f"c{i}").mkdir(parents=True)
    (src / "www").mkdir()
    limit = tmp_path / "max_user_watches"
    limit.write_text("20\n")
    sync = config.SyncConfig(source=str(src), targets=(), exclude_regex=("^cache/*",))
    found = doctor.source_findings(sync, limit)
    assert [f.level for f in found] == [doctor.Level.OK], found
