"""The control socket's protocol, over a real Unix socket served by a real event loop."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from trigsync import control
from trigsync.errors import ControlError


def handle(request: dict[str, Any]) -> dict[str, Any]:
    if request["command"] == "echo":
        return {"ok": True, "got": request}
    if request["command"] == "boom":
        raise RuntimeError("a bug")
    raise LookupError(f"unknown command {request['command']!r}")


def raw_exchange(path: Path, chunks: list[bytes], *, half_close: bool) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        with control._address(path) as address:
            sock.connect(address)
        for chunk in chunks:
            sock.sendall(chunk)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while part := sock.recv(4096):
            data += part
    reply: dict[str, Any] = json.loads(data)
    return reply


def serve_while(state_dir: Path, client: Any) -> Any:
    """Run a Server in an event loop while ``client(path)`` runs in a thread."""

    async def main() -> Any:
        server = control.Server(control.socket_path(state_dir), handle)
        await server.start()
        try:
            return await asyncio.to_thread(client, server.path)
        finally:
            await server.close()

    return asyncio.run(main())


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


def test_request_and_reply(state_dir: Path) -> None:
    def client(path: Path) -> dict[str, Any]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        return control.request(path, "echo", target="x")

    reply = serve_while(state_dir, client)
    assert reply == {"ok": True, "got": {"command": "echo", "target": "x"}}
    assert not control.socket_path(state_dir).exists()  # removed at close


@pytest.mark.parametrize(
    ("chunks", "half_close", "error"),
    [
        ([b'{"comm', b'and": "echo"}\n'], False, None),  # split, newline-terminated, no EOF
        ([b'{"command": "echo"}\n{"command": "boom"}\n'], False, None),  # one request only
        ([b'{"command": "echo"}'], True, None),
        ([b"not json"], True, "request is not JSON"),
        ([b"[1, 2]"], True, 'request must be a JSON object with a "command"'),
        ([b'{"command": "nope"}'], True, "unknown command 'nope'"),
        ([b'{"command": "boom"}'], True, "RuntimeError: a bug"),
    ],
)
def test_bad_requests_get_an_error_reply(
    state_dir: Path, chunks: list[bytes], half_close: bool, error: str | None
) -> None:
    reply = serve_while(state_dir, lambda path: raw_exchange(path, chunks, half_close=half_close))
    if error is None:
        assert reply["ok"] is True
    else:
        assert reply["ok"] is False
        assert reply["error"].startswith(error)


def test_a_long_state_dir_path_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(control.socket_path(deep))) > 108  # past sun_path's limit
    reply = serve_while(deep, lambda path: control.request(path, "echo"))
    assert reply["ok"] is True


def test_a_stale_socket_file_is_replaced(state_dir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(control.socket_path(state_dir)))
    stale.close()  # the file stays, nobody listens: a crashed daemon's leftover
    reply = serve_while(state_dir, lambda path: control.request(path, "echo"))
    assert reply["ok"] is True


def test_refusal_and_absence_are_control_errors(state_dir: Path) -> None:
    with pytest.raises(ControlError, match="no trigsync daemon answers on"):
        control.request(control.socket_path(state_dir), "status")

    def client(path: Path) -> str:
        with pytest.raises(ControlError) as info:
            control.request(path, "nope")
        return str(info.value)

    assert serve_while(state_dir, client) == "trigsync nope: unknown command 'nope'"
