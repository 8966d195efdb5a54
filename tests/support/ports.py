"""Free loopback TCP ports for test servers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (callers retry on a bind race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_greeting(
    port: int,
    prefix: bytes,
    *,
    alive: Callable[[], str | None],
    timeout: float,
    probe_timeout: float = 0.5,
    host: str = LOOPBACK,
) -> str | None:
    """Poll-connect until the server on ``host``:``port`` greets with ``prefix``.

    ``alive()`` returns None while the server process runs, else why it died; that reason
    is returned at once. Returns None when greeted; raises TimeoutError after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        dead = alive()
        if dead is not None:
            return dead
        try:
            with socket.create_connection((host, port), timeout=probe_timeout) as sock:
                greeting = sock.recv(64)
            if greeting.startswith(prefix):
                return None
            last = f"unexpected greeting {greeting!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.01)
    raise TimeoutError(f"no {prefix!r} greeting on port {port} after {timeout}s ({last})")
