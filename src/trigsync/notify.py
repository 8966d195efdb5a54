"""systemd's sd_notify, written directly: one datagram per message on $NOTIFY_SOCKET.

The protocol is newline-separated ``KEY=value`` lines in one datagram to the Unix socket
named by ``$NOTIFY_SOCKET`` (a leading '@' names an abstract socket). Without the
variable every call is a no-op, so the daemon runs the same with or without systemd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; remembers the last STATUS= so it is sent only on change."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog = watchdog_interval(env)
        self._status = ""
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram; False (and a debug line) if nobody listens."""
        if self.address is None:
            return False
        if self._sock is None:
            # Non-blocking: this runs in the event loop, and a listener whose queue is
            # full (a busy PID 1) must cost a dropped message, never a frozen daemon.
            self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except BlockingIOError:
            log.debug("sd_notify to %r: its queue is full; %s dropped", self.address, lines)
            return False
        except OSError as exc:
            # systemd gone or the socket removed: the daemon's work matters more.
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def status(self, text: str) -> None:
        if text != self._status and self.send(f"STATUS={text}"):
            self._status = text  # a dropped one goes again at the next tick

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _address(name: str) -> str | bytes | None:
    if not name:
        return None
    if name.startswith("@"):
        return b"\0" + name[1:].encode()  # Linux abstract namespace
    if not name.startswith("/"):
        log.warning("NOTIFY_SOCKET=%r is neither a path nor an @abstract name; ignored", name)
        return None
    return name


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds within which WATCHDOG=1 must come, or None when no watchdog is asked for
    (sd_watchdog_enabled: $WATCHDOG_USEC, and $WATCHDOG_PID when set must be us)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0") or 0)
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 1_000_000
