"""Attack round 7: config values that would start a trigsync that never does its job."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from trigsync import config, reload, sersync
from trigsync.config import SyncConfig
from trigsync.errors import ConfigError
from trigsync.targets import TargetSpec, ssh


def _load(tmp_path: Path, top: str, sync: str) -> config.Config:
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    path = tmp_path / "t.toml"
    path.write_text(
        f'{top}\n[[sync]]\nsource = "{source}"\ntargets = ["{tmp_path / "rep"}"]\n{sync}\n'
    )
    return config.load(path)


@pytest.mark.parametrize(
    ("top", "sync", "key"),
    [
        ("", "delay = inf", "delay"),
        ("", "delay = nan", "delay"),
        ("", "reconcile_every = inf", "reconcile_every"),
        ("", "reconcile_every = nan", "reconcile_every"),
        ("", "retry_max = inf", "retry_max"),
        ("", "retry_max = nan", "retry_max"),
        ("", "hook_timeout = nan", "hook_timeout"),
        ("canary_every = nan", "", "canary_every"),
        ("canary_timeout = inf", "", "canary_timeout"),
    ],
)
def test_a_number_that_is_not_finite_is_one_line_naming_the_key(
    tmp_path: Path, top: str, sync: str, key: str
) -> None:
    """delay = inf started a trigsync that never sent a change, and that SIGTERM could not
    stop; nan slipped past every `< 0` check (each comparison with nan is false)."""
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, top, sync)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "t.toml") in message
    assert key in message and "finite" in message, message


def test_a_negative_reconcile_every_is_refused(tmp_path: Path) -> None:
    """reconcile_every = -5 started a loop of back-to-back full syncs (16,000 in 10 min,
    one core busy) that SIGTERM did not stop: asyncio.sleep(-5) returns at once."""
    with pytest.raises(ConfigError, match=r"reconcile_every must be 0 or a positive number"):
        _load(tmp_path, "", "reconcile_every = -5")


@pytest.mark.parametrize(
    "change", [{"retry_max": 5.0}, {"exclude_regex": (r".*\.log",)}], ids=["retry_max", "regex"]
)
def test_a_reload_that_changes_what_a_worker_is_built_from_replaces_it(
    change: dict[str, object],
) -> None:
    """retry_max (the worker's backoff cap) and exclude_regex (its rsync patterns) were
    not among a worker's inputs: a reload that changed them kept the old worker, which
    went on with the old values."""
    spec = TargetSpec("/rep")
    old = SyncConfig("/src", (spec,))
    new = dataclasses.replace(old, **change)  # type: ignore[arg-type]
    (p,) = reload.plan(
        config.Config(syncs=(old,), state_dir="/s"), config.Config(syncs=(new,), state_dir="/s")
    )
    assert p.targets == (reload.TargetPlan("/rep", reload.REPLACE),)


@pytest.mark.parametrize(
    "blocks",
    [
        '[[sync]]\nsource = "{src}"\ntargets = ["{rep}", "{rep}/"]\n',
        '[[sync]]\nsource = "{src}"\ntargets = ["{rep}"]\n'
        '[[sync]]\nsource = "{other}"\ntargets = ["file://{rep}"]\n',
        '[[sync]]\nsource = "{src}"\ntargets = ["rsync://u@h/www/"]\n'
        '[[sync]]\nsource = "{other}"\ntargets = ["rsync://u@h/www"]\n',
    ],
    ids=["twice-in-one-sync", "two-syncs-local", "two-syncs-daemon"],
)
def test_one_destination_given_twice_is_refused(tmp_path: Path, blocks: str) -> None:
    """Two syncs (or one sync twice) to one destination started, and each full sync with
    --delete removed what the other had sent: `run --once` said both were done (exit 0)
    with the replica equal to neither source."""
    src, other, rep = tmp_path / "src", tmp_path / "other", tmp_path / "rep"
    src.mkdir()
    other.mkdir()
    path = tmp_path / "t.toml"
    path.write_text(blocks.format(src=src, other=other, rep=rep))
    with pytest.raises(ConfigError, match=r"is given twice .*give each its own directory"):
        config.load(path)


@pytest.mark.parametrize("url", ["ssh://web2", "ssh://deploy@web2", "ssh://web2:2222"])
def test_an_ssh_url_without_a_path_is_refused_not_taken_for_host_ssh(url: str) -> None:
    """ "ssh://web2" (the path forgotten) was read in the scp form: host "ssh", path
    "//web2", so trigsync logged in to a host named ssh and wrote to /web2 there."""
    with pytest.raises(ConfigError, match=r"is not an ssh URL; write ssh://user@host"):
        ssh.parse(url)


@pytest.mark.parametrize(
    ("arg", "why"),
    [
        ("--dry-run", "write nothing"),
        ("-n", "write nothing"),
        ("-avzn", "write nothing"),
        ("--list-only", "write nothing"),
        ("--only-write-batch=/tmp/b", "write nothing"),
        ("--remove-source-files", "deletes each file sent from the source"),
    ],
)
def test_rsync_args_that_replicate_nothing_are_refused(tmp_path: Path, arg: str, why: str) -> None:
    """rsync_args = ["--dry-run"] started, logged every run as sent and `run --once` as
    done (exit 0), while the replica never changed."""
    with pytest.raises(ConfigError, match=rf"rsync_args holds .*{why}.*; remove it"):
        _load(tmp_path, "", f"rsync_args = [{arg!r}]".replace("'", '"'))


@pytest.mark.parametrize("arg", ["-avz", "--bwlimit=20m", "-e", "-B1024n", "--no-inc-recursive"])
def test_rsync_args_that_replicate_are_kept(tmp_path: Path, arg: str) -> None:
    (sync,) = _load(tmp_path, "", f"rsync_args = [{arg!r}]".replace("'", '"')).syncs
    assert sync.rsync_args == (arg,)


@pytest.mark.parametrize("n", [0, 65, 1_000_000])
def test_max_parallel_out_of_range_is_one_line(tmp_path: Path, n: int) -> None:
    """max_parallel = 1000000 was taken: `run --once` of an empty tree took 13 s and
    1 GB of memory for its million lanes, each woken by every change."""
    source = tmp_path / "src"
    source.mkdir()
    path = tmp_path / "t.toml"
    path.write_text(
        f'[[sync]]\nsource = "{source}"\n[[sync.target]]\nurl = "{tmp_path / "rep"}"\n'
        f"max_parallel = {n}\n"
    )
    with pytest.raises(ConfigError, match=rf"max_parallel is {n}; use 1 to 64"):
        config.load(path)


def test_a_sersync_localpath_without_remote_names_the_xml_fix() -> None:
    """A <localpath> with no <remote> said: add targets = ["rsync://user@host/module"],
    TOML advice for a sersync user running `trigsync -r -o confxml.xml`."""
    bad = b'<head><sersync><localpath watch="/"></localpath></sersync></head>'
    with pytest.raises(ConfigError) as info:
        sersync.parse(bad, origin="confxml.xml")
    message = str(info.value)
    assert message.startswith("confxml.xml: <localpath>: "), message
    assert '<remote ip="HOST" name="MODULE"/>' in message and "targets =" not in message
