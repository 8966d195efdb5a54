"""rsync's argv, built from data: the options of every run, the NUL-separated path list.

Pure functions of plain data (no process is started here): ``rsync.py`` runs them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .excludes import rebase

Arg = str | bytes


@dataclass(frozen=True, slots=True)
class Transport:
    """How one target is reached: its rsync destination, options and environment."""

    destination: str  # e.g. rsync://user@host:873/module/dir/ or /backup/www/
    options: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None


def child_environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """A child's environment: ours without RSYNC_PASSWORD, plus the target's own.

    A password in trigsync's environment belongs to the daemon targets configured to use
    it (TargetSpec.password, in their Transport.env); no other child may inherit it.
    """
    base = {k: v for k, v in os.environ.items() if k != "RSYNC_PASSWORD"}
    return {**base, **(env or {})}


@dataclass(frozen=True, slots=True)
class Options:
    """rsync settings shared by every run of one target."""

    rsync_path: str = "rsync"
    timeout: int = 60
    excludes: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    # Exclude regexes with no rsync pattern: a full sync lists what they match (fullsync.py).
    regex_excludes: tuple[str, ...] = ()


def _common(opts: Options, transport: Transport, *, timeout: bool = True) -> list[Arg]:
    # --modify-window=-1 compares mtimes to the nanosecond: a file rewritten with the same
    # size within the same second would otherwise be skipped by rsync's quick check.
    argv: list[Arg] = [opts.rsync_path, "-a", "--modify-window=-1"]
    if timeout:
        # Long runs keep it: with it the receiver sends keepalives through its silent
        # phases (a deletion scan), which the progress watchdog (finish) then sees as I/O.
        argv.append(f"--timeout={opts.timeout}")
    argv += transport.options
    argv += [f"--exclude={p}" for p in opts.excludes]
    argv += opts.extra
    return argv


def batch_argv(
    source: bytes, opts: Options, transport: Transport, *, recursive: bool = False
) -> list[Arg]:
    """argv for sending a list of paths: present ones are copied, missing ones deleted.

    ``recursive`` makes each listed directory equal to the source below it, extras deleted.
    A plain list run has no ``--timeout``: against a daemon without ``socket options =
    TCP_NODELAY`` it costs a fresh run about 40 ms (Nagle), and it does not catch a silent
    peer anyway; the progress watchdog in ``finish`` does.

    A plain list run prints "created directory DEST" on stdout when the receiver had to
    make the destination itself (someone deleted the replica), and nothing else but one
    empty line per item it sent (an empty ``--out-format``: no name can fake the line).
    """
    return [
        *_common(opts, transport, timeout=recursive),
        *(("-r", "--delete") if recursive else ("--info=name1", "--out-format=")),
        "--files-from=-",
        "--from0",
        "--delete-missing-args",
        "--force",
        _as_dir(source),
        transport.destination,
    ]


def full_argv(
    source: bytes, opts: Options, transport: Transport, *, exclude_from_stdin: bool = False
) -> list[Arg]:
    """argv for reconciling the whole tree: only differences travel, extras are deleted.

    ``exclude_from_stdin``: more excludes, NUL-separated on stdin (see fullsync.py).
    """
    return [
        *_common(opts, transport),
        "--delete",
        "--force",
        # --from0 first: rsync reads an --exclude-from file while it parses its options.
        *(("--from0", "--exclude-from=-") if exclude_from_stdin else ()),
        _as_dir(source),
        transport.destination,
    ]


def link_dest_argv(
    source: bytes, old: bytes, new: bytes, opts: Options, transport: Transport
) -> list[Arg] | None:
    """argv that builds directory ``new`` on the receiver from its copy of ``old``, or None
    if the excludes cannot be expressed for a run rooted at ``new``.

    ``--link-dest`` is relative to the destination directory, and rsync looks files up
    there by their path below it: unchanged files become hard links, so the bytes of a
    renamed directory never cross the wire again. The run is rooted at ``new``, so the
    excludes are rebased onto it: ``/site/.env`` becomes ``/.env`` for ``site``.
    """
    excludes = rebase(opts.excludes, new)
    if excludes is None:
        return None
    rel = os.path.relpath(old, new)
    destination = os.fsencode(transport.destination)
    return [
        *_common(replace(opts, excludes=excludes), transport),
        "-r",
        "--delete",
        b"--link-dest=" + rel,
        _as_dir(source) + new + b"/",
        _as_dir(destination) + new + b"/",
    ]


def list_argv(path: bytes, opts: Options, transport: Transport) -> list[Arg]:
    """argv that lists what the receiver holds at ``path`` (and below), one entry a line,
    its type first (``d``, ``l``, ``-``...): rsync's ``--list-only`` from the target."""
    destination = os.fsencode(transport.destination)
    return [
        opts.rsync_path,
        "--list-only",
        "-r",
        f"--timeout={opts.timeout}",
        *transport.options,
        _as_dir(destination) + path,
    ]


def verify_argv(
    source: bytes, opts: Options, transport: Transport, *, exclude_from_stdin: bool = False
) -> list[Arg]:
    """argv for a dry run that itemizes every difference, directory times aside."""
    return [
        *full_argv(source, opts, transport, exclude_from_stdin=exclude_from_stdin)[:-2],
        "--dry-run",
        "--itemize-changes",
        "--omit-dir-times",
        _as_dir(source),
        transport.destination,
    ]


def _as_dir(path: bytes) -> bytes:
    return path if path.endswith(b"/") else path + b"/"


def path_list(paths: Iterable[bytes]) -> bytes:
    """The NUL-separated list rsync reads with ``--files-from=- --from0``.

    rsync skips entries starting with ``#`` or ``;`` as comments even with --from0; a
    leading ``./`` (which --relative strips again) keeps them names.
    """
    return b"".join((b"./" + p if p[:1] in b"#;" else p) + b"\0" for p in paths)
