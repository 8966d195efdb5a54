"""``trigsync service install``: a systemd unit that starts trigsync at boot and restarts it.

The unit is Type=notify (trigsync sends READY=1 once its watches are placed) with a
watchdog (WATCHDOG=1 only while every part is alive), so systemd restarts a daemon that
died or hung: sersync's rc.local line and its `ps | grep` cron script in one file.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .errors import ConfigError, SetupError

STABLE_BINARY = "/opt/trigsync/bin/trigsync"  # the production install's fixed path
UNIT_NAME = "trigsync.service"


def binary() -> list[str]:
    """The command that runs trigsync, by a path that survives upgrades where possible."""
    if os.access(STABLE_BINARY, os.X_OK):
        return [STABLE_BINARY]
    # The running interpreter's own script: a venv's bin/, not the python it links to.
    beside = Path(os.path.abspath(sys.executable)).parent / "trigsync"
    if os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("trigsync")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "trigsync"]


def quote(arg: str) -> str:
    """One ExecStart= word: systemd splits on spaces and expands % and $."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c in arg for c in " \t\"'\\;"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit(config: Path, *, user: bool, argv: list[str], watchdog: int = 30) -> str:
    """The unit file's text."""
    for word in (*argv, str(config)):
        # A unit file is UTF-8 lines: a newline in a path would end the setting and
        # start another; bytes that are not UTF-8 cannot be written at all.
        if not word.isprintable():
            raise ConfigError(
                f"{word!r} holds a newline, a control character or bytes that are not "
                "UTF-8, which a systemd unit cannot hold; use a path without them"
            )
    exec_start = " ".join(quote(a) for a in [*argv, "run", "--config", str(config)])
    return f"""\
[Unit]
Description=trigsync: real-time replication with rsync ({str(config).replace("%", "%%")})
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
Restart=on-failure
RestartSec=5
# 2: bad config, 3: this machine needs fixing; restarting fixes neither.
RestartPreventExitStatus=2 3
# WATCHDOG=1 comes only while the watcher, every target's worker and the journal run.
WatchdogSec={watchdog}
# SIGTERM to trigsync alone: it finishes the rsync runs in flight, then exits 0.
KillMode=mixed
TimeoutStopSec=120

[Install]
WantedBy={"default.target" if user else "multi-user.target"}
"""


def unit_dir(*, user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


def install(config: Path, *, user: bool, directory: Path | None, watchdog: int) -> Path:
    """Write the unit file; returns its path."""
    target = (directory or unit_dir(user=user)) / UNIT_NAME
    text = unit(config, user=user, argv=binary(), watchdog=watchdog)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{UNIT_NAME}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(target)
    except OSError as exc:
        hint = "run as root, or pass --user" if not user else "check the directory"
        raise SetupError(f"cannot write {target}: {exc.strerror}; {hint}") from exc
    return target


def enable_line(*, user: bool) -> str:
    flag = " --user" if user else ""
    return f"systemctl{flag} daemon-reload && systemctl{flag} enable --now {UNIT_NAME}"
