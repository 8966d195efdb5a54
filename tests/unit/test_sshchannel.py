"""The ssh fast path's rsync -e wrapper, run by the real /bin/sh against a stand-in ssh."""

from __future__ import annotations

import subprocess
from pathlib import Path

from trigsync.targets.sshchannel import WRAPPER, Channel

# Stands in for ssh: prints its argv (one per line) to stderr and echoes its stdin.
FAKE_SSH = "#!/bin/sh\nprintf '%s\\n' \"$@\" >&2\nexec cat\n"


def run(tmp_path: Path, chan: Path, *words: str, stdin: bytes = b"DATA") -> tuple[bytes, str]:
    ssh = tmp_path / "ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    channel = Channel("t", chan)
    argv = [*channel.rsh([str(ssh), "-p", "22", "-l", "u", "--"]), "host", *words]
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=10, check=True)  # noqa: S603
    return done.stdout, done.stderr.decode()


def test_without_a_channel_file_it_runs_ssh_as_rsync_asked(tmp_path: Path) -> None:
    out, args = run(tmp_path, tmp_path / "none", "rsync", "--server", "-logDtpre.iLsfxCIvu", ".")
    assert out == b"DATA"
    assert args.splitlines() == [
        "-p", "22", "-l", "u", "--", "host", "rsync", "--server", "-logDtpre.iLsfxCIvu", ".",
    ]  # fmt: skip


def test_with_a_channel_the_command_travels_after_the_secret(tmp_path: Path) -> None:
    chan = tmp_path / "chan"
    chan.write_text("4242 s3cret --no-msgs2stderr\n")
    out, args = run(tmp_path, chan, "sudo", "rsync", "--server", "-a", ".", "/r/a\\ b/")
    # the server's options gain --no-msgs2stderr; the words are joined as ssh joins them
    assert out == b"s3cret\0sudo rsync --server --no-msgs2stderr -a . /r/a\\ b/\0DATA"
    assert args.splitlines() == [
        "-o", "ControlMaster=no", "-W", "127.0.0.1:4242", "-p", "22", "-l", "u", "--", "host",
    ]  # fmt: skip


def test_an_older_remote_rsync_gets_its_command_unchanged(tmp_path: Path) -> None:
    chan = tmp_path / "chan"
    chan.write_text("4242 s3cret\n")
    out, _ = run(tmp_path, chan, "rsync", "--server", ".", "/r/")
    assert out == b"s3cret\0rsync --server . /r/\0DATA"


def test_the_wrapper_survives_rsync_splitting_of_e() -> None:
    # rsync splits -e on spaces, honouring quotes: single-quoted, the script is one word.
    assert "'" not in WRAPPER
