from __future__ import annotations

import re
from pathlib import Path

import pytest

from trigsync import config, config_values
from trigsync.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "trigsync.toml"
    p.write_text(text)
    return p


def test_full_config(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cfg = config.load(
        write(
            tmp_path,
            f"""
state_dir = "{tmp_path}/state"
[[sync]]
source = "{src}"
excludes = ["*.tmp"]
delay = 1.5
targets = ["u@h::www"]
password_file = "/etc/pw"
[[sync.target]]
url = "ssh://d@web2/var/www"
identity_file = "/root/.ssh/id"
""",
        )
    )
    (sync,) = cfg.syncs
    assert cfg.state_dir == f"{tmp_path}/state"
    assert sync.source == str(src) and sync.delay == 1.5 and sync.excludes == ("*.tmp",)
    assert [t.url for t in sync.targets] == ["u@h::www", "ssh://d@web2/var/www"]
    assert sync.targets[0].password_file == "/etc/pw"
    assert sync.targets[1].identity_file == "/root/.ssh/id"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[sync]]\nsorce = '/tmp'\n", r"unknown key sync\[0\].sorce; did you mean 'source'\?"),
        ("[[sync]]\nsource = '/nonexistent-dir'\ntargets=['/tmp/x']\n", "is not a directory"),
        ("[[sync]]\nsource = '/tmp'\n", "has no target"),
        ("[[sync]]\nsource = '/tmp'\ntargets = ['rsync://h/']\n", r"targets\[0\]\.url.*module"),
        ("[[sync]]\nsource = '/tmp'\ntargets = ['/tmp/x']\ndelay = 'soon'\n", "delay must be"),
        ("[[sync]]\nsource = '/tmp'\ntargets = ['/tmp/inside']\n", "lies inside source"),
        (
            "[[sync]]\nsource = '/tmp'\ntargets = ['/tmp/x']\nwatch_backend = 'kqueue'\n",
            r"sync\[0\]\.watch_backend is 'kqueue'; use \"auto\", \"fanotify\" or \"inotify\"",
        ),
        ("sync = 3\n", "must be of type list"),
        ("[[sync\n", "not valid TOML"),
        ("", r"no \[\[sync\]\] block"),
    ],
)
def test_bad_config_names_file_key_and_fix(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        config.load(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "nope.toml")


def test_from_args(tmp_path: Path) -> None:
    cfg = config.from_args(str(tmp_path), ["/backup"], excludes=["*.swp"], state_dir="/s")
    assert cfg.syncs[0].targets[0].url == "/backup" and cfg.state_dir == "/s"


def test_sersync_keys_regex_excludes_retry_cap_and_command_hooks(tmp_path: Path) -> None:
    from trigsync.syncjob import SyncJob

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    path = write(
        tmp_path,
        f"""
[[sync]]
source = "{src}"
targets = ["{dst}"]
exclude_regex = ['(.*)\\.gz', '(.*)\\.(swp|swx)']
retry_max = 300

[[sync.command_hook]]
argv = ["/usr/local/bin/purge"]
include_regex = ['(.*)\\.php']
""",
    )
    (sync,) = config.load(path).syncs
    assert sync.exclude_regex == (r"(.*)\.gz", r"(.*)\.(swp|swx)")
    assert sync.command_hooks == (
        config.CommandHook(argv=("/usr/local/bin/purge",), include_regex=(r"(.*)\.php",)),
    )
    job = SyncJob(sync, state_dir=tmp_path / "state")
    assert job.dispatchers[0].settings.backoff_max == 300
    assert job.excludes.rsync_patterns == ("/**.gz", "/**.swp", "/**.swx")


@pytest.mark.parametrize(
    "block, message",
    [
        ("exclude_regex = ['(oops']", r"sync\[0\]: exclude regex '\(oops' is not a valid"),
        ("retry_max = 0", "retry_max must be a positive number"),
        ("[[sync.command_hook]]\nargv = []", r"command_hook\[0\]\.argv is empty"),
        ("[[sync.command_hook]]\nargv = ['x']\nshell = true", "unknown key"),
    ],
)
def test_bad_sersync_keys(tmp_path: Path, block: str, message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path = write(tmp_path, f'[[sync]]\nsource = "{src}"\ntargets = ["/tmp/x"]\n{block}\n')
    with pytest.raises(ConfigError, match=message):
        config.load(path)


def test_service_settings(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cfg = config.load(
        write(
            tmp_path,
            f"""
canary_every = 300
canary_name = ".probe"
metrics = "127.0.0.1:9108"
log_format = "json"
log_file = "/var/log/trigsync.log"
[[sync]]
source = "{src}"
on_failure = ["/usr/local/bin/page", "ops"]
hook_timeout = 5
webhook = "https://hooks.example/trigsync"
[[sync.target]]
url = "/backup"
on_success = ["/bin/true"]
""",
        )
    )
    assert (cfg.canary_every, cfg.canary_name, cfg.canary_timeout) == (300.0, ".probe", 30.0)
    assert (cfg.metrics, cfg.log_format, cfg.log_file) == (
        "127.0.0.1:9108",
        "json",
        "/var/log/trigsync.log",
    )
    (sync,) = cfg.syncs
    assert sync.on_failure == ("/usr/local/bin/page", "ops") and sync.on_success == ()
    assert (sync.hook_timeout, sync.webhook) == (5.0, "https://hooks.example/trigsync")
    assert sync.targets[0].on_success == ("/bin/true",)
    assert config_values.metrics_address("[::1]:9108") == ("::1", 9108)


@pytest.mark.parametrize(
    ("top", "sync", "message"),
    [
        ('metrics = "9108"', "", "metrics = '9108' is not HOST:PORT"),
        ('log_format = "xml"', "", 'log_format must be "text" or "json"'),
        ('canary_name = "a/b"', "", "must be a plain file name"),
        ("canary_every = -1", "", "canary_every must be 0 or a positive"),
        ("", "on_success = []", "sync[0].on_success is empty; give an argv list"),
        ("", 'on_failure = "notify"', "sync[0].on_failure must be of type list"),
        ("", 'webhook = "ftp://x"', "sync[0].webhook must be an http:// or https:// URL"),
        ("", "hook_timeout = 0", "sync[0].hook_timeout must be a positive number"),
    ],
)
def test_bad_service_settings(tmp_path: Path, top: str, sync: str, message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    text = f'{top}\n[[sync]]\nsource = "{src}"\ntargets = ["/backup"]\n{sync}\n'
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load(write(tmp_path, text))
