"""One sersync ``<remote ip name>`` as a trigsync target URL, refusing what is not a
host, a module or an absolute path: a leading dash would reach ssh or rsync as an
option, ".." would leave the module, and "ip:port" is a port in the wrong place.
"""

from __future__ import annotations

import ipaddress
import re

_HOST = re.compile(r"[A-Za-z0-9._:%-]+")
_USER = re.compile(r"[^\s@/:]+")


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def url(ip: str, name: str, *, user: str, port: str, ssh: bool) -> str:
    """The target URL of one <remote>; ValueError(element, text) names what is wrong."""
    if not ip or not name:
        raise ValueError("remote", 'needs ip="host" and name="module" (or a path with ssh)')
    if not _HOST.fullmatch(ip) or ip.startswith("-"):
        raise ValueError("remote", f"ip={ip!r} is not a host name or address")
    if ":" in ip and not _ipv6(ip):
        raise ValueError(
            "remote", f"ip={ip!r} is not a host: put the port in <userDefinedPort port=...>"
        )
    # A leading dash would reach ssh or rsync as an option; ".." leaves the module.
    parts = name.strip("/").split("/")
    if parts[0].startswith("-") or "://" in name or {".", ".."} & set(parts):
        raise ValueError(
            "remote",
            f"name={name!r} must be a module (or, with ssh, an absolute path) "
            "without '..', a leading '-' or a URL",
        )
    if user and not _USER.fullmatch(user):
        raise ValueError("auth", f"users={user!r} must be one user name, as in rsync_backup")
    host = f"[{ip}]" if ":" in ip else ip
    login = f"{user}@" if user else ""
    at = f":{port}" if port else ""
    if not ssh:
        return f"rsync://{login}{host}{at}/{name.strip('/')}"
    if not name.startswith("/"):
        raise ValueError(
            "remote",
            f"name={name!r} is relative; over ssh trigsync needs the absolute path on "
            f"{ip}, e.g. /home/user/{name}",
        )
    return f"ssh://{login}{host}{at}{name}"
