"""Builders for test trees: random bulk trees and hostile file names."""

from __future__ import annotations

import os
import random
from pathlib import Path

# Names that break anything building shell strings or assuming UTF-8 / no newlines.
WEIRD_NAMES: list[bytes] = [
    b"with space",
    b" leading and trailing ",
    b"new\nline",
    b"tab\there",
    b"single'quote",
    b'double"quote',
    b"$(touch PWNED)",
    b"x`touch PWNED`y",
    b"semi;colon&amp|pipe>gt",
    b"-rf",
    b"--delete",
    b"caf\xe9",
    b"\xff\xfe",
    b"n" * 200,
    b"back\\slash",
    b"star*quest?[br]",
    b".hidden",
    b"#hash",  # rsync --files-from skips lines starting with '#' or ';' (see nul_list)
    b";semicolon",
    b"~tilde",
    b"caf\xc3\xa9-utf8",
]


def _write(path: bytes, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def make_tree(
    root: Path | str | bytes,
    *,
    dirs: int = 5,
    files_per_dir: int = 5,
    size: tuple[int, int] = (0, 4096),
    seed: int = 0,
) -> list[bytes]:
    """Create `dirs` nested directories holding `files_per_dir` random files each (plus root).

    Deterministic for a seed. Returns the created paths relative to `root`, parents first.
    """
    rng = random.Random(seed)
    base = os.fsencode(root)
    os.makedirs(base, exist_ok=True)
    created: list[bytes] = []
    parents: list[bytes] = [b""]
    for index in range(dirs):
        parent = rng.choice(parents)
        rel = os.path.join(parent, b"d%03d" % index) if parent else b"d%03d" % index
        os.mkdir(os.path.join(base, rel))
        created.append(rel)
        parents.append(rel)
    for parent in parents:
        for index in range(files_per_dir):
            name = b"f%03d.bin" % index
            rel = os.path.join(parent, name) if parent else name
            _write(os.path.join(base, rel), rng.randbytes(rng.randint(*size)))
            created.append(rel)
    return created


def write_burst(root: Path, *, dirs: int, files: int, size: int) -> None:
    """A burst as fast as Python writes it: ``dirs`` new directories ``dNN`` under
    ``root``, each with ``files`` files ``fNNN`` of ``size`` random bytes."""
    for d in range(dirs):
        base = root / f"d{d:02d}"
        base.mkdir()
        for f in range(files):
            (base / f"f{f:03d}").write_bytes(os.urandom(size))


def make_weird_tree(root: Path | str | bytes, *, subdir: bytes = b"weird dir") -> list[bytes]:
    """A file for each of WEIRD_NAMES at the top and inside `subdir`; returns relative paths."""
    base = os.fsencode(root)
    os.makedirs(os.path.join(base, subdir), exist_ok=True)
    created: list[bytes] = [subdir]
    for parent in (b"", subdir):
        for name in WEIRD_NAMES:
            rel = os.path.join(parent, name) if parent else name
            _write(os.path.join(base, rel), b"content of " + rel + b"\n")
            created.append(rel)
    return created


def list_tree(root: Path | str | bytes) -> list[bytes]:
    """Every path under `root` (not following symlinks), relative, parents before children."""
    base = os.fsencode(root)
    out: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        for name in sorted(dirnames) + sorted(filenames):
            out.append(name if rel_dir == b"." else os.path.join(rel_dir, name))
    return out


def nul_list(paths: list[bytes], *, dot_slash: bool = True) -> bytes:
    """The NUL-separated list that `rsync --files-from=- --from0` reads.

    rsync treats entries starting with '#' or ';' as comments even with --from0 and silently
    skips them (exit 0); a leading "./" (which --relative strips) keeps them as names.
    """
    prefix = b"./" if dot_slash else b""
    return b"".join(prefix + p + b"\0" for p in paths)
