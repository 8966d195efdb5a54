"""on_success / on_failure hooks and the webhook, run by a real daemon: the environment,
the NUL-separated path list on stdin, the time limit, the JSON body."""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Start, daemon_replica
from tests.e2e.harness import Replica
from tests.support.proc import wait_for
from tests.support.rsyncd import RsyncDaemonFactory
from tests.support.trees import wait_trees_equal

# Records what it was given: one JSON file per call, in the directory named by argv[1].
RECORDER = """
import json, os, sys, time
out = os.path.join(sys.argv[1], f"{time.monotonic_ns()}-{os.getpid()}.json")
env = {k: v for k, v in os.environ.items() if k.startswith("TRIGSYNC_")}
data = {"env": env, "stdin": sys.stdin.buffer.read().hex(), "argv": sys.argv[2:]}
with open(out + ".tmp", "w") as fh:
    json.dump(data, fh)
os.rename(out + ".tmp", out)
"""


def calls(directory: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def hook(directory: Path, *args: str) -> list[str]:
    directory.mkdir(exist_ok=True)
    return [sys.executable, "-c", RECORDER, str(directory), *args]


@pytest.fixture
def local(tmp_path: Path) -> Replica:
    path = tmp_path / "replica"
    path.mkdir()
    return Replica("local", str(path), path)


def test_on_success_gets_the_environment_and_the_nul_list(
    start_trigsync: Start, source: Path, local: Replica, tmp_path: Path
) -> None:
    done = tmp_path / "done"
    start_trigsync(local, initial_sync=False, extra={"on_success": hook(done, "a b", "$(x)")})
    names = [b"plain.txt", b"with\nnewline", b"sp ace", b"\xff-not-utf8"]
    for name in names:
        (source / os.fsdecode(name)).write_bytes(b"x")
    wait_trees_equal(source, local.path)
    wait_for(lambda: calls(done), 10, 0.05, "the hook to run")
    time.sleep(0.5)  # any later batch's hook
    seen: set[bytes] = set()
    for call in calls(done):
        env = call["env"]
        assert isinstance(env, dict)
        assert env["TRIGSYNC_EVENT"] == "success"
        assert env["TRIGSYNC_SOURCE"] == str(source)
        assert env["TRIGSYNC_TARGET"] == local.url
        assert env["TRIGSYNC_FULL"] == "0"
        assert env["TRIGSYNC_ERROR"] == ""
        assert env["TRIGSYNC_EXIT_CODE"] == "0"
        assert "RSYNC_PASSWORD" not in env
        assert call["argv"] == ["a b", "$(x)"]  # argv travels as is: no shell
        paths = bytes.fromhex(str(call["stdin"])).split(b"\0")
        assert paths[-1] == b""  # every path ends with a NUL
        assert int(env["TRIGSYNC_PATHS"]) == len(paths) - 1
        seen.update(paths[:-1])
    assert seen == set(names)


def test_on_failure_names_the_error_and_a_target_hook_wins(
    start_trigsync: Start,
    source: Path,
    rsync_daemon_factory: RsyncDaemonFactory,
    tmp_path: Path,
) -> None:
    replica = daemon_replica(rsync_daemon_factory)
    ok, failed, sync_level = tmp_path / "ok", tmp_path / "failed", tmp_path / "sync"
    replica.options.update(on_success=hook(ok), on_failure=hook(failed))
    start_trigsync(replica, extra={"on_success": hook(sync_level)})
    wait_trees_equal(source, replica.path)
    wait_for(lambda: calls(ok), 10, 0.05, "the success hook (initial sync)")
    assert calls(ok)[0]["env"]["TRIGSYNC_FULL"] == "1"  # type: ignore[index]
    assert replica.daemon is not None
    replica.daemon.stop()
    (source / "queued.txt").write_text("q\n")
    wait_for(lambda: calls(failed), 15, 0.05, "the failure hook")
    env = calls(failed)[0]["env"]
    assert isinstance(env, dict)
    assert env["TRIGSYNC_EVENT"] == "failure"
    assert env["TRIGSYNC_KIND"] == "transient"
    assert env["TRIGSYNC_EXIT_CODE"] == "10"
    assert replica.url in env["TRIGSYNC_ERROR"]
    assert bytes.fromhex(str(calls(failed)[0]["stdin"])) == b"queued.txt\0"
    assert not sync_level.exists() or not calls(sync_level)  # the target's own hook wins


def test_a_hanging_hook_is_killed_and_never_blocks_replication(
    start_trigsync: Start, source: Path, local: Replica, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    hang = [
        sys.executable,
        "-c",
        "import os, sys, time; open(os.path.join(sys.argv[1], str(os.getpid())), 'w').close(); "
        "time.sleep(60)",
        str(pids),
    ]
    ts = start_trigsync(local, initial_sync=False, extra={"on_success": hang, "hook_timeout": 1.5})
    (source / "first").write_text("1\n")
    wait_for(lambda: list(pids.iterdir()), 10, 0.05, "the hook to start")
    started = time.monotonic()
    for i in range(5):  # replication goes on while the hook hangs
        (source / f"later{i}").write_text(f"{i}\n")
        wait_trees_equal(source, local.path, timeout=5)
    pid = int(next(iter(pids.iterdir())).name)
    wait_for(lambda: not _alive(pid), 10, 0.05, "the hook to be killed")
    assert time.monotonic() - started < 8
    wait_for(lambda: "killed after its time limit of 1.5 s" in ts.log(), 5, 0.05, "the log line")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its reaper counts as gone; so does one reaped meanwhile.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(
                {"type": self.headers["Content-Type"], "body": json.loads(self.rfile.read(length))}
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_receives_a_json_body(
    start_trigsync: Start,
    source: Path,
    local: Replica,
    webhook_server: tuple[str, list[dict[str, object]]],
) -> None:
    url, received = webhook_server
    start_trigsync(local, initial_sync=False, extra={"webhook": url})
    (source / "w.txt").write_text("w\n")
    wait_trees_equal(source, local.path)
    wait_for(lambda: received, 10, 0.05, "the webhook")
    (call,) = received
    assert call["type"] == "application/json"
    body = call["body"]
    assert isinstance(body, dict)
    assert (body["event"], body["kind"], body["target"]) == ("success", "ok", local.url)
    assert body["source"] == str(source)
    assert body["paths"] == ["w.txt"]
    assert body["full"] is False
    assert body["error"] is None


def test_sersync_command_hook_runs_once_per_matching_file_with_the_path_as_one_word(
    start_trigsync: Start, source: Path, local: Replica, tmp_path: Path
) -> None:
    done = tmp_path / "commands"
    second = Replica("local", str(tmp_path / "replica2"), tmp_path / "replica2")
    second.path.mkdir()
    argv = hook(done)
    start_trigsync(
        local,
        second,
        initial_sync=False,
        extra={"command_hook": [{"argv": argv, "include_regex": [r"(.*)\.php"]}]},
    )
    names = [b"index.php", b"notes.txt", b"$(touch PWNED).php", b"line\nbreak.php"]
    for name in names:
        (source / os.fsdecode(name)).write_bytes(b"<?php")
    wait_trees_equal(source, local.path)
    wait_trees_equal(source, second.path)
    wanted = {os.fsencode(source) + b"/" + n for n in names if n.endswith(b".php")}
    wait_for(lambda: len(calls(done)) >= len(wanted), 10, 0.05, "a command per .php file")
    time.sleep(0.3)
    got = [os.fsencode(c["argv"][0]) for c in calls(done)]  # type: ignore[index]
    assert sorted(got) == sorted(wanted), got  # once each, though two targets took them
    assert not (source / "PWNED").exists() and not Path("PWNED").exists()
