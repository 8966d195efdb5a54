from __future__ import annotations

import pytest

from trigsync import rsync
from trigsync.errors import BusySyncError, PermanentSyncError, TransientSyncError
from trigsync.rsync import Options, Outcome, Transport, classify

T = Transport("rsync://u@h:873/www/", ("--sockopts=TCP_NODELAY",))


def test_batch_argv_lists_paths_on_stdin_never_in_argv() -> None:
    argv = rsync.batch_argv(b"/src", Options(excludes=("*.tmp",)), T)
    assert argv[0] == "rsync"
    assert "--files-from=-" in argv and "--from0" in argv
    assert "--delete-missing-args" in argv and "--force" in argv
    assert "--exclude=*.tmp" in argv
    assert argv[-2:] == [b"/src/", "rsync://u@h:873/www/"]
    assert "-r" not in argv and "--delete" not in argv


def test_recursive_batch_reconciles_listed_directories() -> None:
    argv = rsync.batch_argv(b"/src", Options(), T, recursive=True)
    assert "-r" in argv and "--delete" in argv and "--files-from=-" in argv


def test_full_argv_deletes_extras() -> None:
    argv = rsync.full_argv(b"/src/", Options(timeout=7), T)
    assert "--delete" in argv and "--timeout=7" in argv
    assert argv[-2:] == [b"/src/", "rsync://u@h:873/www/"]


def test_path_list_is_nul_separated_and_keeps_bytes() -> None:
    names = [b"a\nb", b"-rf", b"caf\xe9", b"x`touch PWNED`y", b"#c", b";d"]
    assert rsync.path_list(names) == b"a\nb\0-rf\0caf\xe9\0x`touch PWNED`y\0./#c\0./;d\0"


@pytest.mark.parametrize(
    ("code", "stderr", "outcome"),
    [
        (0, b"", Outcome.OK),
        (24, b"", Outcome.OK),
        (23, b"", Outcome.RETRY),
        (10, b"", Outcome.RETRY),
        (12, b"", Outcome.RETRY),
        (30, b"", Outcome.RETRY),
        (35, b"", Outcome.RETRY),
        (255, b"", Outcome.RETRY),
        (5, b"@ERROR: auth failed on module www", Outcome.FATAL),
        (5, b"@ERROR: max connections (1) reached -- try again later", Outcome.RETRY),
        (1, b"", Outcome.FATAL),
        (77, b"", Outcome.RETRY),
        (-9, b"", Outcome.RETRY),
    ],
)
def test_exit_code_table(code: int, stderr: bytes, outcome: Outcome) -> None:
    assert classify(code, stderr) is outcome


def test_raise_for_picks_the_error_class_and_says_why() -> None:
    with pytest.raises(TransientSyncError, match="exit 10"):
        rsync.raise_for(
            rsync.Result(10, b"rsync: failed to connect: Connection refused\n", 0.1), "t"
        )
    with pytest.raises(PermanentSyncError, match="auth failed"):
        rsync.raise_for(rsync.Result(5, b"@ERROR: auth failed on module www\n", 0.1), "t")
    rsync.raise_for(rsync.Result(24, b"file has vanished", 0.1), "t")


def test_busy_daemon_is_its_own_error_and_names_the_daemon_message() -> None:
    stderr = (
        b"@ERROR: max connections (1) reached -- try again later\n"
        b"rsync error: error starting client-server protocol (code 5) at main.c(1954)\n"
    )
    with pytest.raises(BusySyncError, match=r"max connections \(1\) reached"):
        rsync.raise_for(rsync.Result(5, stderr, 0.1), "t")


@pytest.mark.parametrize(
    ("code", "stderr", "partial"),
    [
        (10, b"rsync: [sender] write error: Broken pipe (32)", True),
        (10, b"rsync: [sender] failed to connect to 127.0.0.1: Connection refused (111)", False),
        (12, b"rsync: connection unexpectedly closed", True),
        (30, b"[sender] io timeout after 2 seconds -- exiting", True),
        (35, b"timeout waiting for daemon connection", False),
        (5, b"@ERROR: max connections (1) reached", False),
        (-9, b"", True),
    ],
)
def test_cut_short_tells_a_receiver_that_died_mid_run(
    code: int, stderr: bytes, partial: bool
) -> None:
    assert rsync.cut_short(rsync.Result(code, stderr, 0.1)) is partial


def test_reason_prefers_the_receivers_own_error() -> None:
    stderr = (
        b"ERROR: module is read only\n"
        b"rsync error: syntax or usage error (code 1) at main.c(1185) [Receiver=3.5.0]\n"
        b"rsync: [sender] read error: Connection reset by peer (104)\n"
    )
    assert rsync.reason(stderr) == "ERROR: module is read only"
    assert rsync.reason(b"@ERROR: auth failed on module www\nrsync error: x\n") == (
        "@ERROR: auth failed on module www"
    )
