"""Measure finding 9 and 10 by hand: ``python -m tests.e2e.deploy deploy|bigfile [local|rsyncd]``.

deploy: ``rsync -a --delete release/ live/`` into a watched tree of about 3,600 files
(the shape of a Django upgrade: most files rewritten, a few added and removed); prints
the seconds from rsync's exit until the replica equals the source.
bigfile: ``mkdir big; write big/big.bin (200 MB); close``; prints the seconds from the
close until the replica has it, beside one plain ``rsync -a`` of the same file.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.harness import Replica, Trigsync, write_config
from tests.support.proc import ProcGroup
from tests.support.rsyncd import RsyncDaemon
from tests.support.trees import wait_trees_equal


def release(root: Path, version: int, *, files: int = 3600, seed: int = 1) -> None:
    """A package tree: ~12 files a directory, three levels deep; ``version`` rewrites
    90 % of the files and adds or drops a few."""
    rng = random.Random(seed)
    for i in range(files + 40 * version):
        if version and rng.random() < 0.02:
            continue  # dropped in this version
        d = root / f"pkg{i // 480}" / f"mod{i // 60}" / f"sub{i // 12}"
        d.mkdir(parents=True, exist_ok=True)
        changed = version and rng.random() < 0.9
        size = rng.randint(200, 12000)
        data = rng.randbytes(size) if not changed else rng.randbytes(size + version)
        (d / f"file{i}.py").write_bytes(data)


def start(procs: ProcGroup, base: Path, source: Path, kind: str) -> tuple[Replica, Trigsync]:
    if kind == "rsyncd":
        daemon = RsyncDaemon(base / "daemon", use_chroot=True)
        daemon.start()
        procs.procs.append(daemon._proc)  # type: ignore[arg-type]
        replica = Replica(
            "rsyncd", daemon.url, daemon.module_path, {"password_file": str(daemon.password_file)}
        )
    else:
        (base / "replica").mkdir()
        replica = Replica("local", str(base / "replica"), base / "replica")
    config = write_config(
        base / "t.toml", source=source, replicas=[replica], state_dir=base / "state"
    )
    trig = Trigsync(procs, config, "-v").start()
    wait_trees_equal(source, replica.path, timeout=120)
    time.sleep(1.5)
    return replica, trig


def deploy(base: Path, kind: str) -> None:
    live = base / "live"
    release(base / "r1", 0)
    release(base / "r2", 1)
    subprocess.run(["rsync", "-a", f"{base / 'r1'}/", f"{live}/"], check=True)  # noqa: S603
    procs = ProcGroup(base / "logs")
    try:
        replica, trig = start(procs, base, live, kind)
        t0 = time.monotonic()
        argv = ["rsync", "-a", "--delete", f"{base / 'r2'}/", f"{live}/"]
        subprocess.run(argv, check=True)  # noqa: S603
        wrote = time.monotonic() - t0
        lag = wait_trees_equal(live, replica.path, timeout=120, interval=0.05)
        print(f"deploy {kind}: rsync took {wrote:.2f} s; replica equal {lag:.2f} s after it")
        for line in trig.log().splitlines():
            if "sent" in line or "moved" in line or "full sync" in line:
                print("   ", line[-110:])
    finally:
        procs.stop_all()


def bigfile(base: Path, kind: str, mb: int = 200) -> None:
    live = base / "live"
    live.mkdir()
    data = os.urandom(1 << 20)
    procs = ProcGroup(base / "logs")
    try:
        replica, trig = start(procs, base, live, kind)
        os.mkdir(live / "big")
        with open(live / "big" / "big.bin", "wb") as f:
            for _ in range(mb):
                f.write(data)
        closed = time.monotonic()
        src, dst = os.stat(live / "big" / "big.bin"), replica.path / "big" / "big.bin"

        def arrived() -> bool:
            try:
                st = os.stat(dst)
            except OSError:
                return False
            return st.st_size == src.st_size and st.st_mtime_ns == src.st_mtime_ns

        while not arrived():
            time.sleep(0.002)
        lag = time.monotonic() - closed
        wait_trees_equal(live, replica.path, timeout=60)
        for line in trig.log().splitlines():
            if "sent" in line or "moved" in line:
                print("   ", line[-110:])
        dest = f"{replica.url}plain/" if kind == "rsyncd" else str(replica.path / "plain")
        env = {**os.environ}
        argv = ["rsync", "-a", str(live / "big" / "big.bin"), dest]
        if kind == "rsyncd":
            argv[1:1] = [f"--password-file={replica.options['password_file']}"]
        t0 = time.monotonic()
        subprocess.run(argv, check=True, env=env)  # noqa: S603
        plain = time.monotonic() - t0
        print(f"bigfile {kind}: arrived {lag:.2f} s after close; plain rsync -a {plain:.2f} s")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    what, kind = sys.argv[1], sys.argv[2]
    base = Path(tempfile.mkdtemp(prefix="trigsync-measure-", dir=os.environ.get("TMPDIR")))
    try:
        {"deploy": deploy, "bigfile": bigfile}[what](base, kind)
    finally:
        shutil.rmtree(base, ignore_errors=True)
