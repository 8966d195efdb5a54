"""Deterministic source trees and changes: the storm tree, churn, a big file, the startup tree.

Everything is seeded, so every tool (and plain rsync) gets byte-identical input.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import struct
from collections import Counter
from pathlib import Path

SEED = 20240611


def _pool(rng: random.Random) -> bytes:
    return rng.randbytes(64 * 1024)


def _put(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_storm(root: Path, *, files: int, dirs: int, seed: int = SEED) -> None:
    """``files`` files of 1-8 KiB spread over ``dirs`` directories, written directory by directory."""
    rng = random.Random(seed)
    pool = _pool(rng)
    per_dir = [files // dirs + (1 if d < files % dirs else 0) for d in range(dirs)]
    n = 0
    for d, count in enumerate(per_dir):
        sub = root / f"d{d:03d}"
        sub.mkdir()
        for _ in range(count):
            size = rng.randint(1024, 8192)
            off = rng.randrange(0, len(pool) - size)
            _put(sub / f"f{n:05d}.dat", pool[off : off + size])
            n += 1


def churn(root: Path, *, ops: int, seed: int = SEED) -> Counter[str]:
    """Apply ``ops`` mixed changes to a storm tree; returns how many of each kind were made."""
    rng = random.Random(seed + 1)
    pool = _pool(rng)
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    files: dict[str, list[str]] = {
        d: sorted(p.name for p in (root / d).iterdir() if p.is_file() and not p.is_symlink())
        for d in dirs
    }
    kinds = ["append", "chmod", "delete", "symlink", "tempfile", "create", "rename_dir"]
    weights = [30, 15, 13, 10, 15, 15, 2]
    done: Counter[str] = Counter()
    for n in range(ops):
        kind = rng.choices(kinds, weights)[0]
        d = rng.choice(dirs)
        names = files[d]
        if kind in ("append", "chmod", "delete") and not names:
            kind = "create"
        if kind == "append":
            with open(root / d / rng.choice(names), "ab") as f:
                f.write(pool[: rng.randint(100, 2048)])
        elif kind == "chmod":
            os.chmod(root / d / rng.choice(names), rng.choice([0o600, 0o640, 0o664, 0o755]))
        elif kind == "delete":
            name = names.pop(rng.randrange(len(names)))
            os.unlink(root / d / name)
        elif kind == "symlink":
            other = rng.choice(dirs)
            target = f"../{other}/{rng.choice(files[other])}" if files[other] else "../gone"
            os.symlink(target, root / d / f"l{n:05d}")
        elif kind == "tempfile":
            tmp = root / d / f".tmp{n:05d}"
            _put(tmp, pool[: rng.randint(512, 4096)])
            os.unlink(tmp)
        elif kind == "create":
            size = rng.randint(1024, 8192)
            name = f"n{n:05d}.dat"
            _put(root / d / name, pool[:size])
            names.append(name)
        else:
            new = f"{d}r{n:05d}"
            os.rename(root / d, root / new)
            dirs[dirs.index(d)] = new
            files[new] = files.pop(d)
        done[kind] += 1
    return done


def write_big(path: Path, *, mib: int, seed: int = SEED) -> None:
    """A file of ``mib`` MiB; 4 MiB random blocks, each stamped with its index so none repeat."""
    block = bytearray(random.Random(seed).randbytes(4 << 20))
    with open(path, "wb") as f:
        left = mib << 20
        index = 0
        while left > 0:
            struct.pack_into("<Q", block, 0, index)
            chunk = memoryview(block)[: min(left, len(block))]
            f.write(chunk)
            left -= len(chunk)
            index += 1


def startup_tree(cache: Path, *, dirs: int, files: int) -> Path:
    """A tree of ``dirs`` directories and ``files`` small files, built once and kept in ``cache``."""
    home = cache / f"startup-{dirs}d-{files}f"
    tree, done = home / "tree", home / "complete"
    if done.exists():
        return tree
    shutil.rmtree(home, ignore_errors=True)
    tree.mkdir(parents=True)
    fanout = max(1, math.isqrt(dirs))
    top = [tree / f"t{i:04d}" for i in range(min(fanout, dirs))]
    all_dirs = list(top)
    for p in top:
        p.mkdir()
    i = 0
    while len(all_dirs) < dirs:
        sub = top[i % len(top)] / f"s{i:06d}"
        sub.mkdir()
        all_dirs.append(sub)
        i += 1
    data = b"x" * 64
    for n in range(files):
        _put(all_dirs[n % len(all_dirs)] / f"f{n:06d}", data)
    done.write_text(f"{dirs} {files}\n")
    return tree
