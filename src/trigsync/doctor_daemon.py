"""``doctor``'s probes of one rsync daemon target, with the real rsync binary.

In order: the port answers with an rsync greeting; a listing of the module tells an
unknown module from failed auth; a probe file is written (then removed) to test write
permission and to time a small transfer; its mtime, stamped by the receiver, gives the
clock skew; a probe symlink shows whether the module rewrites link targets; held
connections show a low ``max connections``. Nothing is left in the module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from .config_data import SyncConfig
from .doctor_findings import (
    Finding,
    Level,
    Rewrite,
    latency_finding,
    munged_link_findings,
    quickack_route,
    skew_finding,
)
from .targets.rsyncd import DaemonTarget

CONNECT_TIMEOUT = 5.0
RUN_TIMEOUT = 30.0
BUSY_WAIT = 3.0  # seconds to keep asking a daemon at max connections
TIMING_RUNS = 7  # the fastest of these is the transfer's cost, free of this machine's load
HELD_CONNECTIONS = 3  # a standby plus two parallel runs: what one trigsync target may use
PROBE = ".trigsync-doctor"
LINK_TARGET = "/trigsync-doctor/probe"
_LISTING = re.compile(r"^\S+\s+([\d,.]+)\s+(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) (.*)$")
_MAX_CONN = re.compile(r"max connections \((\d+)\) reached")
_DENIED = re.compile(r"@ERROR: access denied to \S+ from \S+ \(([^)]*)\)")


class _Daemon:
    """One target's rsync invocations: argv lists only, never a shell."""

    def __init__(self, target: DaemonTarget, sync: SyncConfig) -> None:
        self.target = target
        self.address = target.address
        self.base = [sync.rsync_path, *target.transport().options]
        self.dest = target.transport().destination
        self.timeout = sync.timeout
        self.name = f"{PROBE}.{os.getpid()}"

    def run(self, *args: str, wait_busy: bool = True) -> tuple[int, str]:
        """One rsync run; a daemon at max connections is asked again for a while.

        A finished run's slot frees only when the daemon's child has exited, a few hundred
        ms later; the probes (and the clean-up above all) must not fail on that.
        """
        deadline = time.monotonic() + BUSY_WAIT
        while True:
            code, out = self._run_once(*args)
            if not (wait_busy and _MAX_CONN.search(out)) or time.monotonic() > deadline:
                return code, out
            time.sleep(0.05)

    def _run_once(self, *args: str) -> tuple[int, str]:
        try:
            proc = subprocess.run(  # noqa: S603 - argv list, no shell
                [*self.base, *args], capture_output=True, timeout=RUN_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            return -1, f"no answer within {RUN_TIMEOUT:.0f} s"
        except FileNotFoundError:
            return -1, f"{self.base[0]} not found: install rsync"
        out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
        return proc.returncode, out

    def modules(self) -> list[str]:
        argv = [self.base[0], f"--contimeout={int(CONNECT_TIMEOUT)}", "--list-only"]
        host = f"rsync://{self.address.host}:{self.address.port}/"
        try:
            proc = subprocess.run(  # noqa: S603 - argv list, no shell
                [*argv, host], capture_output=True, timeout=RUN_TIMEOUT, check=False
            )
        except (subprocess.TimeoutExpired, FileNotFoundError):
            return []
        lines = proc.stdout.decode(errors="replace").splitlines()
        return [line.split()[0] for line in lines if line.strip() and not line.startswith("@")]


def _reach(d: _Daemon) -> Finding | None:
    host, port = d.address.host.strip("[]"), d.address.port
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock:
            greeting = sock.recv(64)
    except socket.gaierror:
        return Finding(Level.ERROR, d.target.name, f"cannot resolve {host}: fix the host name")
    except ConnectionRefusedError:
        return Finding(
            Level.ERROR,
            d.target.name,
            f"nothing listens on {where}: start the daemon on the receiver "
            "(systemctl enable --now rsync, or rsync --daemon) or fix the port",
        )
    except OSError as exc:
        return Finding(
            Level.ERROR,
            d.target.name,
            f"no connection to {where} ({exc.strerror or 'timed out'}): a firewall may "
            f"drop it; open tcp port {port} on the receiver",
        )
    if not greeting.startswith(b"@RSYNCD:"):
        return Finding(
            Level.ERROR, d.target.name, f"{where} answers, but not as an rsync daemon: fix the port"
        )
    return None


def _access(d: _Daemon) -> Finding:
    module, user = d.address.module, d.address.user
    code, out = d.run("--list-only", d.dest)
    if code == 0:
        return Finding(Level.OK, d.target.name, f"module {module} open to user {user or '-'}")
    opened = _open_but_unlisted(d, out)
    if opened:
        return opened
    if "Unknown module" in out:
        offered = ", ".join(d.modules()) or "none listed"
        hint = " (that is the user name: the module comes after the host)" if module == user else ""
        return Finding(
            Level.ERROR,
            d.target.name,
            f"unknown module {module!r}{hint}; the daemon offers: {offered}; "
            "write rsync://USER@HOST/MODULE or USER@HOST::MODULE",
        )
    if "auth failed" in out:
        if not user:
            fix = "no user given: write rsync://USER@host/module"
        else:
            fix = (
                f"the password file must hold the password of {user}:PASSWORD in the "
                f"daemon's secrets file, and 'auth users' of [{module}] must list {user}"
            )
        return Finding(
            Level.ERROR, d.target.name, f"auth failed for user {user!r} on module {module!r}: {fix}"
        )
    why = _refused(out, module)
    if why is not None:
        return Finding(Level.ERROR, d.target.name, why)
    return Finding(Level.ERROR, d.target.name, f"cannot list module {module}: {_last(out)}")


def _refused(out: str, module: str) -> str | None:
    """The daemon's refusal of this host or of one more connection, with its fix."""
    denied = _DENIED.search(out)
    if denied:
        return (
            f"the daemon denies this host ({denied[1]}) access to [{module}]: add it to "
            f"'hosts allow' (and keep it out of 'hosts deny') of [{module}] in its rsyncd.conf"
        )
    busy = _MAX_CONN.search(out)
    if busy:
        return (
            f"the daemon refuses: max connections ({busy[1]}) reached; raise max connections "
            f"in [{module}] or stop what holds the slots"
        )
    return None


def _open_but_unlisted(d: _Daemon, out: str) -> Finding | None:
    """A listing that fails on what trigsync does not need: a write only module, or a
    target directory not made yet (rsync creates it; the probes then go to the module)."""
    opened = f"module {d.address.module} open to user {d.address.user or '-'}"
    if "module is write only" in out:
        return Finding(
            Level.OK, d.target.name, f"{opened} (write only: links and clocks are not checked)"
        )
    if d.address.subdir and "change_dir" in out and "No such file" in out:
        module_root = dataclasses.replace(d.address, subdir="").destination
        if d.run("--list-only", module_root)[0] == 0:
            d.dest = module_root
            return Finding(
                Level.OK,
                d.target.name,
                f"{opened}; {d.address.subdir}/ does not exist yet, trigsync creates it",
            )
    return None


def _last(out: str) -> str:
    """The daemon's own @ERROR line if it sent one, else rsync's last line."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("@ERROR", "ERROR:"))]
    return (errors or lines or ["no message"])[-1]


def _write(d: _Daemon, probe: Path) -> Finding:
    code, out = d.run("-a", "--modify-window=-1", str(probe), d.dest)
    module = d.address.module
    if code == 0:
        return Finding(Level.OK, d.target.name, f"module {module} is writable")
    if "read only" in out:
        fix = f"module {module} is read only: set 'read only = no' in [{module}] of rsyncd.conf"
    elif "Permission denied" in out:
        fix = (
            f"the daemon cannot write in module {module}'s path: give its 'uid'/'gid' "
            "(rsyncd.conf; default nobody) write permission there, e.g. chown -R"
        )
    else:
        fix = f"cannot write in module {module}: {_last(out)}"
    return Finding(Level.ERROR, d.target.name, fix)


def _latency(d: _Daemon, probe: Path) -> Finding:
    best = float("inf")
    argv = ["-a", "--modify-window=-1", f"--timeout={d.timeout}", "-I", str(probe), d.dest]
    for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        code, _out = d.run(*argv)
        if code == 0:
            best = min(best, time.perf_counter() - start)
    finding = latency_finding(d.target.name, best)
    if finding.level is Level.WARNING and (fix := _route_fix(d)) is not None:
        finding = latency_finding(d.target.name, best, route_fix=fix)
    return finding


def _route_fix(d: _Daemon) -> str | None:
    """``quickack 1`` on this host's route to the daemon, if ``ip`` can tell the route."""
    host = d.address.host.strip("[]")
    try:
        ip = str(socket.getaddrinfo(host, d.address.port, type=socket.SOCK_STREAM)[0][4][0])
        done = subprocess.run(  # noqa: S603 - argv list, no shell
            ["ip", "route", "get", ip],
            capture_output=True,
            text=True,
            timeout=CONNECT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):  # no iproute2, or the name went away
        return None
    return quickack_route(ip, done.stdout) if done.returncode == 0 else None


def _listing(d: _Daemon, name: str) -> tuple[int, datetime] | None:
    """The size and mtime the daemon lists for one name (a symlink's size: its target's)."""
    code, out = d.run("--list-only", d.dest + name)
    for line in out.splitlines():
        m = _LISTING.match(line)
        if code == 0 and m:
            size = int(re.sub(r"[,.]", "", m[1]))
            return size, datetime.strptime(m[2], "%Y/%m/%d %H:%M:%S")
    return None


def _skew(d: _Daemon, probe: Path) -> Finding | None:
    before = time.time()
    code, _ = d.run("--no-times", "-I", str(probe), d.dest)  # the receiver stamps its own time
    after = time.time()
    seen = _listing(d, probe.name) if code == 0 else None
    if seen is None:
        return None
    stamp = seen[1].timestamp()
    skew = 0.0 if before - 1 <= stamp <= after + 1 else stamp - (before + after) / 2
    return skew_finding(d.target.name, skew)


def _link_rewrite(d: _Daemon, tmp: Path) -> Rewrite | None:
    """How the module rewrites symlink targets, from the length it lists for a probe link:
    longer with munge symlinks (rsync's default under use chroot = no: a /rsyncd-munged/
    prefix on every link), shorter when it only sanitizes (leading '/' and '..' dropped)."""
    link = tmp / f"{d.name}.link"
    link.symlink_to(LINK_TARGET)
    code, _ = d.run("-l", str(link), d.dest)
    seen = _listing(d, link.name) if code == 0 else None
    if seen is None or seen[0] == len(LINK_TARGET):
        return None
    return Rewrite.MUNGE if seen[0] > len(LINK_TARGET) else Rewrite.SANITIZE


@contextlib.contextmanager
def _held(d: _Daemon, count: int) -> Iterator[int]:
    """Hold up to ``count`` connections at the module's door; yields how many it holds."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(
                (d.address.host.strip("[]"), d.address.port), timeout=CONNECT_TIMEOUT
            )
            socks.append(sock)
            sock.recv(64)
            sock.sendall(b"@RSYNCD: 31.0\n" + d.address.module.encode() + b"\n")
            reply = sock.recv(256)
            if b"max connections" in reply:
                socks.pop().close()
                break
        yield len(socks)
    finally:
        for sock in socks:
            sock.close()


def _max_connections(d: _Daemon) -> Finding | None:
    for held in range(HELD_CONNECTIONS):
        with _held(d, held) as holding:
            if holding < held:
                break
            code, out = d.run("--list-only", d.dest, wait_busy=False)
        busy = _MAX_CONN.search(out)
        # The daemon states its limit; a slot still held by an earlier probe's exiting
        # child can trip it early, so only a limit below what a target uses counts.
        if code != 0 and busy and int(busy[1]) < HELD_CONNECTIONS:
            return Finding(
                Level.WARNING,
                d.target.name,
                f"max connections = {busy[1]} in [{d.address.module}]: a trigsync target "
                f"keeps a standby connection and runs up to 2 rsyncs at once, so it will work "
                f"one run at a time; set max connections = 0 (no limit) or at least "
                f"{HELD_CONNECTIONS} per sender",
            )
    return None


def _clean(d: _Daemon, tmp: Path) -> Finding | None:
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    code, out = d.run("-r", "--delete", f"--include=/{d.name}*", "--exclude=*", f"{empty}/", d.dest)
    if code == 0:
        return None
    return Finding(
        Level.WARNING,
        d.target.name,
        f"could not remove the probe files {d.name}* from module {d.address.module} "
        f"({_last(out)}): delete them on the receiver",
    )


def _in_module(d: _Daemon, tmp: Path, links: Sequence[tuple[bytes, bytes]]) -> list[Finding]:
    """The probes that write in the module; what they wrote is removed again."""
    probe_file = tmp / d.name
    probe_file.write_bytes(b"trigsync doctor probe\n")
    written = _write(d, probe_file)
    if written.level != Level.OK:
        return [written]  # nothing was written, so nothing to clean up
    found = [written]
    try:
        found.append(_latency(d, probe_file))
        skew = _skew(d, probe_file)
        if skew:
            found.append(skew)
        rewrite = _link_rewrite(d, tmp)
        if rewrite:
            found += munged_link_findings(d.target.name, d.address.module, links, rewrite)
    finally:
        left = _clean(d, tmp)
        if left:
            found.append(left)
    return found


def probe(
    target: DaemonTarget,
    sync: SyncConfig,
    links: Sequence[tuple[bytes, bytes]],
    *,
    reach_only: bool = False,
) -> list[Finding]:
    d = _Daemon(target, sync)
    unreachable = _reach(d)
    if unreachable or reach_only:
        return [unreachable] if unreachable else []
    access = _access(d)
    if access.level == Level.ERROR:
        return [access]
    found = [access]
    with tempfile.TemporaryDirectory(prefix="trigsync-doctor-") as tmp_name:
        found += _in_module(d, Path(tmp_name), links)
    busy = _max_connections(d)
    if busy:
        found.append(busy)
    return found
