"""Installing trigsync the ways a sysadmin does: the README's setup, a wheel, /opt, the demo.

These run the project's own scripts against Debian's system Python, with PATH reset to the
system directories, so a second Python on the developer's PATH cannot hide a PEP 668 failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.proc import wait_for

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_ENV = {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}

needs_system_python = pytest.mark.skipif(
    not SYSTEM_PYTHON.exists(), reason="no Debian system python at /usr/bin/python3"
)


def run(argv: list[str], *, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(  # noqa: S603 - argv list, no shell
        argv, cwd=cwd, env=SYSTEM_ENV, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def clone(tmp_path: Path) -> Path:
    """A fresh clone of this checkout's HEAD, as CI and a new user get it."""
    dest = tmp_path / "checkout"
    run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(dest)], cwd=tmp_path)
    return dest


@needs_system_python
def test_system_python_refuses_pip_outside_a_venv() -> None:
    """The premise: Debian's python3 is externally managed, so setup must not pip install."""
    result = subprocess.run(  # noqa: S603 - fixed argv
        [str(SYSTEM_PYTHON), "-m", "pip", "install", "--dry-run", "trigsync-not-a-package"],
        env=SYSTEM_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "externally-managed-environment" in result.stderr or "No module named pip" in (
        result.stderr
    )


@needs_system_python
def test_setup_in_a_fresh_clone_uses_a_venv_and_is_idempotent(tmp_path: Path) -> None:
    checkout = clone(tmp_path)
    run(["./scripts/setup"], cwd=checkout)
    venv_python = checkout / ".venv" / "bin" / "python"
    version = run([str(venv_python), "-m", "trigsync", "--version"], cwd=checkout)
    assert version.stdout.startswith("trigsync ")
    base = run([str(venv_python), "-c", "import sys; print(sys.base_prefix)"], cwd=checkout)
    assert base.stdout.strip() == "/usr", "the venv must be built on Debian's python3"
    started = time.monotonic()
    again = run(["./scripts/setup"], cwd=checkout)
    assert time.monotonic() - started < 5, "a second setup must be quick"
    assert "installing" not in again.stderr


@needs_system_python
def test_setup_repairs_a_venv_left_without_pip(tmp_path: Path) -> None:
    """An interrupted first setup (or a missing ensurepip) leaves a venv with no pip."""
    checkout = clone(tmp_path)
    run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", ".venv"], cwd=checkout)
    run(["./scripts/setup"], cwd=checkout)
    version = run([str(checkout / ".venv/bin/python"), "-m", "trigsync", "--version"], cwd=checkout)
    assert version.stdout.startswith("trigsync ")


@pytest.mark.long
def test_wheel_and_sdist_install_and_run_in_a_clean_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    wheels = list(dist.glob("trigsync-*.whl"))
    sdists = list(dist.glob("trigsync-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    python = str(SYSTEM_PYTHON) if SYSTEM_PYTHON.exists() else sys.executable
    for artifact in (wheels[0], sdists[0]):
        venv = tmp_path / f"venv-{artifact.suffix}"
        run([python, "-m", "venv", str(venv)], cwd=tmp_path)
        # As a user would: pip builds the sdist with the build backend it fetches.
        run([str(venv / "bin/pip"), "install", "-q", str(artifact)], cwd=tmp_path)
        version = run([str(venv / "bin/trigsync"), "--version"], cwd=tmp_path)
        assert version.stdout.strip().startswith("trigsync ")
        typed = list((venv / "lib").glob("python3*/site-packages/trigsync/py.typed"))
        assert typed, "py.typed must ship in the package"


@needs_system_python
@pytest.mark.root
@pytest.mark.long
def test_install_script_puts_trigsync_on_path_for_root_and_others(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the /opt install needs root")
    checkout = clone(tmp_path)
    # Another user must be able to reach the install, as with /opt: pytest's tmp is 0700.
    base = Path(tempfile.mkdtemp(prefix="trigsync-install-", dir="/var/tmp"))
    try:
        _install_and_run(checkout, base)
    finally:
        shutil.rmtree(base)


def _install_and_run(checkout: Path, base: Path) -> None:
    base.chmod(0o755)
    prefix, bindir = base / "opt-trigsync", base / "bin"
    env = {**SYSTEM_ENV, "PREFIX": str(prefix), "BINDIR": str(bindir)}
    result = subprocess.run(
        ["./scripts/install"], cwd=checkout, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    # A rebuilt wheel of the same version, named relative to another directory, replaces
    # the files (pip would call an equal version satisfied and keep the old ones).
    wheel_dir = base / "dist"
    subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(wheel_dir), str(checkout)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    marker = next(prefix.glob("lib/python3*/site-packages/trigsync/__init__.py"))
    marker.write_text(marker.read_text() + "# stale\n")
    wheel = next(wheel_dir.glob("trigsync-*.whl"))
    result = subprocess.run(  # noqa: S603 - fixed argv
        [str(checkout / "scripts/install"), f"dist/{wheel.name}"],
        cwd=base, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "# stale" not in marker.read_text()
    shutil.rmtree(checkout)  # a regular install does not need the checkout any more
    as_root = run([str(bindir / "trigsync"), "--version"], cwd=base)
    assert as_root.stdout.startswith("trigsync ")
    as_nobody = subprocess.run(  # noqa: S603 - fixed argv
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         str(bindir / "trigsync"), "--version"],
        cwd="/", env=SYSTEM_ENV, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert as_nobody.returncode == 0, as_nobody.stderr
    assert as_nobody.stdout.startswith("trigsync ")


def _demo_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("trigsync-demo-*")}


def _rsync_daemons() -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--daemon" in cmd and any(b"trigsync-demo-" in c for c in cmd):
                found.add(int(proc.name))
    return found


@pytest.mark.serial  # it looks for any demo dir or daemon on the machine, not only its own
def test_demo_ends_cleanly_on_ctrl_c_leaving_nothing_behind() -> None:
    if shutil.which("rsync") is None:
        pytest.skip("rsync not installed (apt-get install -y rsync)")
    before_dirs, before_daemons = _demo_dirs(), _rsync_daemons()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trigsync", "demo", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    stdout = proc.stdout
    assert stdout is not None
    out = b""
    try:
        os.set_blocking(stdout.fileno(), False)

        def ready() -> bool:
            nonlocal out
            out += stdout.read() or b""
            return b"Ctrl-C to stop" in out or proc.poll() is not None

        wait_for(ready, timeout=60, what="the demo to reach its Ctrl-C prompt")
        assert b"demo passed" not in out and b"FAILED" not in out, out.decode(errors="replace")
        assert _rsync_daemons() - before_daemons, "the demo's rsync daemon should be running"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out += stdout.read() or b""
    stdout.close()
    assert code == 0, out.decode(errors="replace")
    assert b"demo passed: every change arrived" in out
    assert _demo_dirs() == before_dirs, "the demo left its temporary directory behind"
    assert _rsync_daemons() == before_daemons, "the demo left its rsync daemon running"


@pytest.mark.serial  # it looks for any demo dir or daemon on the machine, not only its own
def test_demo_cleans_up_on_sigterm_during_its_initial_sync() -> None:
    if shutil.which("rsync") is None:
        pytest.skip("rsync not installed (apt-get install -y rsync)")
    before_dirs, before_daemons = _demo_dirs(), _rsync_daemons()
    with subprocess.Popen(
        [sys.executable, "-m", "trigsync", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        assert proc.stdout is not None
        assert b"rsync daemon on" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        out = proc.stdout.read()
    assert code in (0, 130), out.decode(errors="replace")
    assert _demo_dirs() == before_dirs, "the demo left its temporary directory behind"
    assert _rsync_daemons() == before_daemons, "the demo left its rsync daemon running"


@pytest.mark.serial  # its demo dir and daemon would show up in the two tests above
@pytest.mark.root
def test_demo_runs_as_an_unprivileged_user_whose_group_is_not_named_after_it() -> None:
    """Debian's nobody has group nogroup: the daemon's gid must be the group's name."""
    if os.geteuid() != 0:
        pytest.skip("switching to nobody needs root")
    if shutil.which("rsync") is None or shutil.which("setpriv") is None:
        pytest.skip("rsync or setpriv not installed")
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-m", "trigsync", "demo"],
        cwd="/tmp", capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOME": "/tmp", "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo passed: every change arrived" in result.stdout
