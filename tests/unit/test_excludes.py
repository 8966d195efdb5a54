from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trigsync.errors import ConfigError
from trigsync.excludes import Excludes, regex_to_rsync


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "excluded"),
    [
        ("*.tmp", b"a.tmp", False, True),
        ("*.tmp", b"deep/down/a.tmp", False, True),
        ("*.tmp", b"a.tmpx", False, False),
        ("cache/", b"cache", True, True),
        ("cache/", b"cache", False, False),
        ("cache/", b"x/cache/file", False, True),
        ("/top", b"top", False, True),
        ("/top", b"sub/top", False, False),
        ("sub/*.log", b"a/sub/x.log", False, True),
        ("sub/*.log", b"sub/x.log", False, True),
        ("sub/*.log", b"xsub/x.log", False, False),
        ("sub/*.log", b"sub/deeper/x.log", False, False),
        ("a/**/z", b"a/b/c/z", False, True),
        ("dir/***", b"dir", True, True),
        ("dir/***", b"dir/f", False, True),
        ("file?.txt", b"file1.txt", False, True),
        ("[ab].c", b"b.c", False, True),
        ("[!ab].c", b"b.c", False, False),
        (".git/", b".git/objects/ab", False, True),
        ("caf\udce9", b"caf\xe9", False, True),
    ],
)
def test_rsync_pattern_semantics(pattern: str, path: bytes, is_dir: bool, excluded: bool) -> None:
    assert Excludes([pattern]).excludes(path, is_dir=is_dir) is excluded


def test_empty_pattern_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        Excludes(["/"])


def test_rsync_args_pass_patterns_verbatim() -> None:
    assert Excludes(["*.tmp", "-x"]).rsync_args() == ["--exclude=*.tmp", "--exclude=-x"]


@given(st.binary(min_size=1, max_size=30).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_no_patterns_exclude_nothing(name: bytes) -> None:
    assert not Excludes().excludes(name, is_dir=False)
    assert Excludes(["*"]).excludes(name, is_dir=False)


@pytest.mark.parametrize(
    "regex, glob",
    [
        (r"(.*)\.svn", "/**.svn"),
        (r"(.*)\.gz", "/**.gz"),
        ("^info/*", "/info"),
        ("^static/*", "/static"),
        (r"^cache/(.*)\.tmp$", "/cache/**.tmp"),
        (r"^logs/[^/]*\.log", "/logs/*.log"),
        (r"(.*)\.(swp|swx)?", None),
        (r"a.c", None),
        (r"(.*)", None),
        (r"x\*", None),
    ],
)
def test_regex_translates_to_the_rsync_pattern_that_excludes_the_same(
    regex: str, glob: str | None
) -> None:
    assert regex_to_rsync(regex) == glob
    if glob is None:
        assert Excludes(regexes=[regex]).untranslatable == (regex,)
        return
    by_regex, by_glob = Excludes(regexes=[regex]), Excludes([glob])
    assert by_regex.rsync_patterns == (glob,)
    paths = [
        b"a.svn", b"x/y/a.svn", b"a.svnx", b"info", b"info/x", b"x/info", b"infox",
        b"static/a/b", b"cache/a.tmp", b"cache/d/a.tmp", b"a/cache/b.tmp", b"logs/a.log",
        b"logs/d/a.log", b"f.gz", b"d.gz/inner", b"gz",
    ]  # fmt: skip
    for path in paths:
        assert by_regex.excludes(path, is_dir=False) == by_glob.excludes(path, is_dir=False), path


def test_regex_excludes_match_the_whole_path() -> None:
    ex = Excludes(regexes=[r"(.*)\.(swp|swx)", "tmp"])
    assert ex.excludes(b"d/a.swp", is_dir=False)
    assert not ex.excludes(b"d/a.swpx", is_dir=False)
    assert ex.excludes(b"tmp/x", is_dir=False)  # below an excluded directory
    assert not ex.excludes(b"d/tmp2", is_dir=False)
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        Excludes(regexes=["(unclosed"])
