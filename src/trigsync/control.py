"""The control socket: one JSON request and one JSON reply per connection.

The daemon listens on ``control.sock`` in its state directory (mode 600, no network
listener); ``trigsync status``, ``check``, ``pause``, ``resume`` and ``sync-now`` connect
to it. A request is one JSON object such as ``{"command": "pause", "target": URL}``; the
reply is one JSON object with ``"ok": true`` and the command's data, or ``"ok": false``
and ``"error"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import ControlError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024
SERVER_TIMEOUT = 5.0  # a client that sends nothing is dropped after this long
CLIENT_TIMEOUT = 10.0

# A command that takes time (the canary) answers with a coroutine, awaited before replying.
Handler = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]


def socket_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """A name bind/connect accept for ``path``: sun_path holds 107 bytes, so a longer
    path is reached through its directory's descriptor in /proc/self/fd."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class Server:
    """Serves the control socket from the running event loop."""

    def __init__(self, path: Path, handle: Handler) -> None:
        self.path = path
        self.handle = handle
        self._server: asyncio.AbstractServer | None = None
        self._inode = 0

    async def start(self) -> None:
        # The state directory is locked by this process: a socket file left there is stale.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _address(self.path) as address:
                sock.bind(address)
            # Before listen(): nobody can connect while the mode is still the umask's.
            os.chmod(self.path, 0o600)
            self._inode = os.stat(self.path).st_ino
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        except BaseException:
            sock.close()
            raise
        log.debug("control socket at %s", self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # Unlink only our own socket: a successor may already have bound a new one.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                raw = await asyncio.wait_for(_read_request(reader), SERVER_TIMEOUT)
                reply = await self._reply(raw)
            except TimeoutError:
                reply = {"ok": False, "error": f"no request within {SERVER_TIMEOUT:.0f} s"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), SERVER_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.debug("control client went away: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), SERVER_TIMEOUT)

    async def _reply(self, raw: bytes) -> dict[str, Any]:
        if len(raw) > MAX_REQUEST:
            return {"ok": False, "error": f"request over {MAX_REQUEST} bytes"}
        try:
            request = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # '[[[[...' fits in MAX_REQUEST
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'request must be a JSON object with a "command"'}
        try:
            reply = self.handle(request)
            return await reply if inspect.isawaitable(reply) else reply
        except LookupError as exc:
            return {"ok": False, "error": str(exc.args[0]) if exc.args else repr(exc)}
        except Exception as exc:  # a bug in one command must not take the daemon down
            log.exception("control command %r failed", request.get("command"))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Up to the first newline or the client's half-close, whichever comes first
    (`nc -U` users send a line and wait; our client half-closes)."""
    raw = b""
    while b"\n" not in raw and len(raw) <= MAX_REQUEST:
        chunk = await reader.read(65536)
        if not chunk:
            break
        raw += chunk
    return raw.partition(b"\n")[0]  # one request per connection; the rest is ignored


def request(
    path: Path, command: str, timeout: float = CLIENT_TIMEOUT, **args: Any
) -> dict[str, Any]:
    """Send one command to the daemon and return its reply's data (raises ControlError)."""
    body = json.dumps({"command": command, **args}).encode() + b"\n"
    chunks: list[bytes] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            with _address(path) as address:
                sock.connect(address)
            sock.sendall(body)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        raise ControlError(
            f"no trigsync daemon answers on {path}; is `trigsync run` running with this "
            "state directory? (pass --state-dir or --config)"
        ) from None
    except TimeoutError:
        raise ControlError(
            f"the trigsync daemon on {path} did not answer within {timeout:.0f} s; "
            "its event loop may be stuck"
        ) from None
    except OSError as exc:
        raise ControlError(f"cannot reach the trigsync daemon on {path}: {exc.strerror}") from exc
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"the trigsync daemon on {path} sent a reply that is not JSON") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else None
        raise ControlError(f"trigsync {command}: {error or 'refused'}")
    return reply
