"""The sshd fixture removes the test user it created."""

from __future__ import annotations

import os
import pwd

import pytest

from tests.support.sshd import SshServer, sshd_unavailable_reason


def test_the_test_user_is_removed_when_the_server_closes() -> None:
    reason = sshd_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    user = f"trigsync-u{os.getpid()}"
    with SshServer(user=user) as server:
        home = pwd.getpwnam(user).pw_dir
        assert server.running
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    assert not os.path.exists(home)
