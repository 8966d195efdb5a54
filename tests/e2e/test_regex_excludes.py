"""Exclude regexes with no rsync pattern (sersync's <filter>) hold on full syncs too.

The watcher always honoured them; the initial and reconciling full syncs ran rsync with
only the translatable patterns, so every start sent what such a regex excludes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.e2e.conftest import Start
from tests.e2e.harness import Replica, run_cli
from tests.support.trees import wait_trees_equal

# Neither has an rsync pattern: the "+" and the optional group (checked below).
SECRET = r"(.*/)?[^/]*secret[0-9]+\.txt"
CACHE = r"(.*/)?cache[0-9]+"


def test_untranslatable_regex_excludes_hold_on_the_initial_full_sync(
    source: Path, replica: Replica, start_trigsync: Start
) -> None:
    from trigsync.excludes import regex_to_rsync_all

    assert regex_to_rsync_all(SECRET) is None and regex_to_rsync_all(CACHE) is None
    (source / "dir" / "cache12").mkdir(parents=True)
    (source / "dir" / "cache12" / "blob").write_bytes(b"cached")
    (source / "secret1.txt").write_bytes(b"top secret")
    (source / "dir" / "secret22.txt").write_bytes(b"secret")
    (source / "dir" / "secretary.txt").write_bytes(b"not matched")
    (source / "dir" / "[x]secret3.txt").write_bytes(b"a wildcard in the name")
    (source / "page.html").write_bytes(b"<p>")
    (replica.path / "dir").mkdir(parents=True, exist_ok=True)
    (replica.path / "dir" / "secret22.txt").write_bytes(b"the receiver's own")
    (replica.path / "stale").write_bytes(b"deleted on the source")
    owner = replica.path.stat()  # over ssh, the receiver's user must own what it holds
    for made in (
        replica.path / "dir",
        replica.path / "dir" / "secret22.txt",
        replica.path / "stale",
    ):
        os.chown(made, owner.st_uid, owner.st_gid)

    trig = start_trigsync(replica, extra={"exclude_regex": [SECRET, CACHE]})
    (source / "later.txt").write_bytes(b"after the start")

    matched = re.compile(rb"(.*/)?([^/]*secret[0-9]+\.txt|cache[0-9]+)(/.*)?")
    wait_trees_equal(source, replica.path, exclude=lambda p: bool(matched.fullmatch(p)))
    on_replica = {str(p.relative_to(replica.path)) for p in replica.path.rglob("*")}
    assert not on_replica & {"secret1.txt", "dir/cache12", "dir/[x]secret3.txt"}, on_replica
    assert (replica.path / "dir" / "secret22.txt").read_bytes() == b"the receiver's own"
    # verify's dry run agrees: what the regexes exclude is no drift
    result = run_cli("verify", "--config", str(trig.config))
    assert result.returncode == 0, result.stdout + result.stderr
