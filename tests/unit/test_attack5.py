"""Attacks on starting and waiting for children at the process's fd limit.

With many targets a trigsync under systemd's default soft limit (1024 fds) meets
EMFILE; the README promises that a target whose rsync cannot start (EAGAIN, EMFILE)
retries and recovers. Each case runs in a child Python with a low limit of its own, so
that the test process's fds are never at stake.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)

# Fills the fd table up to FREE free slots, calls the case, and reports fds afterwards.
PRELUDE = """
import asyncio, fcntl, json, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

def open_fds():
    n = 0
    for fd in range(128):
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
            n += 1
        except OSError:
            pass
    return n

def fill(free):
    hold = []
    try:
        while True:
            hold.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    for fd in hold[len(hold) - free:]:
        os.close(fd)
    return hold[:len(hold) - free]

def release(hold):
    for fd in hold:
        os.close(fd)
"""


def run_case(body: str) -> object:
    script = PRELUDE + textwrap.dedent(body)
    done = subprocess.run(  # noqa: S603 - fixed argv, our own script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_an_rsync_refused_for_want_of_fds_leaves_no_fd_open() -> None:
    # Popen makes a child's pipes one by one, unguarded: the ones made before the pipe
    # that failed stayed open, 2-4 fds a try, until trigsync held nothing but leaked
    # pipes and no rsync could ever start again (30 targets under a 1024 limit).
    leaked = run_case(
        """
        from trigsync import rsync
        from trigsync.errors import SetupError

        async def main():
            out = {}
            for free in range(1, 8):
                hold = fill(free)
                before = open_fds() - len(hold)
                try:
                    proc = await rsync.spawn(["true"], stdin=True, stdout=True)
                    await proc.wait()
                except SetupError:
                    pass
                release(hold)
                out[free] = open_fds() - before
            return out

        print(json.dumps(asyncio.run(main())))
        """
    )
    assert leaked == {str(free): 0 for free in range(1, 8)}
