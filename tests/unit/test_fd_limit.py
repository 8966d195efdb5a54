"""trigsync raises its soft open-files limit towards the hard one, as daemons do."""

from __future__ import annotations

import resource
import subprocess
import sys

CHILD = "from trigsync import spawnfds; print(*spawnfds.raise_fd_limit())"


def _limits(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one_within_reason() -> None:
    out = subprocess.run(  # noqa: S603 - our own interpreter, fixed text
        [sys.executable, "-c", CHILD],
        preexec_fn=lambda: _limits(256, 4096),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["256", "4096"]


def test_a_soft_limit_at_the_hard_one_is_left_as_it_is() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = subprocess.run(  # noqa: S603 - our own interpreter, fixed text
        [sys.executable, "-c", CHILD],
        preexec_fn=lambda: _limits(hard, hard),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(hard), str(hard)]
