"""Where the ssh target keeps its control socket."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import ssh_replica
from tests.e2e.harness import Trigsync, write_config
from tests.support.proc import ProcGroup
from tests.support.sshd import SshServer
from tests.support.trees import wait_trees_equal


def test_ssh_with_a_state_dir_too_deep_for_a_socket_path(
    source: Path, ssh_target: SshServer, tmp_path: Path, procs: ProcGroup
) -> None:
    """ssh's ControlPath is a Unix socket (108 bytes with ssh's temporary suffix): under
    a deep state_dir every run failed with exit 255 and no word why. The socket goes to
    a private runtime directory instead."""
    state = tmp_path / ("deep-" + "d" * 60) / ("state-" + "s" * 60)
    config = write_config(
        tmp_path / "t.toml", source=source, replicas=[ssh_replica(ssh_target)], state_dir=state
    )
    (source / "f").write_text("through a short control path\n")
    trig = Trigsync(procs, config, "-v").start()
    wait_trees_equal(source, ssh_target.replica, owners=False)
    (source / "g").write_text("and a change after the start\n")
    wait_trees_equal(source, ssh_target.replica, owners=False)
    assert trig.stop() == 0
