"""doctor's checks as pure functions over plain data."""

from __future__ import annotations

from pathlib import Path

import pytest

from trigsync.doctor import (
    Finding,
    Level,
    exit_code,
    latency_finding,
    munged_link_findings,
    password_file_findings,
    quickack_route,
    risky_link,
    skew_finding,
    watch_limit_findings,
)

REG = 0o100000


def _levels(findings: list[Finding]) -> list[Level]:
    return [f.level for f in findings]


@pytest.mark.parametrize(
    "mode, owner, text, euid, expected",
    [
        (REG | 0o600, 0, "s3cret\n", 0, None),
        (REG | 0o640, 0, "s3cret\n", 0, "chmod 600"),
        (REG | 0o600, 1000, "s3cret\n", 0, "chown root"),
        (REG | 0o600, 1000, "s3cret\n", 1000, None),
        (REG | 0o600, 0, "tsync:s3cret\n", 0, "holds user:password"),
        (REG | 0o600, 0, "\n", 0, "is empty"),
        (REG | 0o600, 0, "pa:ss\n", 0, None),  # a colon in a password, not the user's name
    ],
)
def test_password_file(mode: int, owner: int, text: str, euid: int, expected: str | None) -> None:
    found = password_file_findings(
        "/etc/rsync.pass", mode=mode, owner=owner, text=text, user="tsync", euid=euid
    )
    if expected is None:
        assert _levels(found) == [Level.OK]
    else:
        assert found[0].level == Level.ERROR
        assert expected in found[0].text


def test_watch_limits_against_the_directory_count() -> None:
    assert _levels(watch_limit_findings("/srv", 100, 8192)) == [Level.OK]
    (warn,) = watch_limit_findings("/srv", 7000, 8192)
    assert warn.level == Level.WARNING
    (err,) = watch_limit_findings("/srv", 9000, 8192)
    assert err.level == Level.ERROR
    assert "sysctl fs.inotify.max_user_watches=524288" in err.text


@pytest.mark.parametrize(
    "target, depth, risky",
    [
        (b"/etc/passwd", 3, True),
        (b"../x", 0, True),  # climbs out of the module
        (b"../x", 1, False),
        (b"../../x", 1, True),
        (b"a/../b", 2, True),  # rsync drops '..' after a component
        (b"./x/y", 0, False),
        (b"x", 0, False),
    ],
)
def test_risky_links(target: bytes, depth: int, risky: bool) -> None:
    assert risky_link(target, depth) is risky


def test_munged_links_only_matter_when_the_module_sanitizes() -> None:
    links = [(b"a/l", b"../ok"), (b"abs", b"/srv/x")]
    assert munged_link_findings("t", "www", links, sanitizes=False) == []
    (warn,) = munged_link_findings("t", "www", links, sanitizes=True)
    assert "1 symlinks" in warn.text and "abs -> /srv/x" in warn.text


def test_a_slow_small_file_names_the_route_fix_on_this_host() -> None:
    """Measured over a veth pair into another network namespace: 52 ms per fresh run to a
    stock daemon, 10 ms with quickack 1 on the sender's route (the receiver's alone: 52)."""
    got = "10.77.0.2 via 10.77.0.254 dev eth1 src 10.77.0.1 uid 0 \n    cache \n"
    fix = quickack_route("10.77.0.2", got)
    assert (
        fix == "ip route add 10.77.0.2/32 via 10.77.0.254 dev eth1 onlink src 10.77.0.1 quickack 1"
    )
    same_link = quickack_route("10.77.0.2", "10.77.0.2 dev tsv0 src 10.77.0.1 uid 0 \n cache \n")
    assert same_link == "ip route add 10.77.0.2/32 dev tsv0 src 10.77.0.1 quickack 1"
    v6 = quickack_route("fd00::2", "fd00::2 from :: dev eth0 proto kernel src fd00::1 metric 256")
    assert v6 == "ip route add fd00::2/128 dev eth0 src fd00::1 quickack 1"
    assert (
        quickack_route("10.77.0.2", "10.77.0.2 dev tsv0 src 10.77.0.1 \n cache quickack 1") is None
    )
    assert quickack_route("127.0.0.1", "local 127.0.0.1 dev lo src 127.0.0.1 uid 0") is None
    assert quickack_route("10.0.0.9", "") is None
    slow = latency_finding("t", 0.052, route_fix=fix)
    assert slow.level == Level.WARNING
    assert "socket options = TCP_NODELAY" in slow.text and f"run '{fix}'" in slow.text
    assert "\n" not in slow.text


def test_latency_skew_and_exit_code() -> None:
    slow = latency_finding("t", 0.045)
    assert slow.level == Level.WARNING and "socket options = TCP_NODELAY" in slow.text
    assert latency_finding("t", 0.012).level == Level.OK
    assert skew_finding("t", -30).level == Level.WARNING
    assert "30 s behind" in skew_finding("t", -30).text
    assert skew_finding("t", 1).level == Level.OK
    assert exit_code([slow, latency_finding("t", 0.01)]) == 1
    assert exit_code([]) == 0


def test_source_findings_count_the_real_tree_against_the_kernel_limit(tmp_path: Path) -> None:
    from trigsync.config import SyncConfig
    from trigsync.doctor import source_findings
    from trigsync.targets import TargetSpec

    src = tmp_path / "src"
    for name in ("a/b/c", "a/d", "e"):
        (src / name).mkdir(parents=True)
    (src / "link").symlink_to("a")  # a symlink to a directory takes no watch
    limit = tmp_path / "max_user_watches"
    sync = SyncConfig(source=str(src), targets=(TargetSpec(url="/backup"),))
    limit.write_text("5\n")
    (err,) = source_findings(sync, limit)
    assert err.level == Level.ERROR and "6 directories" in err.text
    limit.write_text("100\n")
    assert _levels(source_findings(sync, limit)) == [Level.OK]
