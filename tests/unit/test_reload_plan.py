"""reload.plan: what a SIGHUP does, from two configs alone."""

from __future__ import annotations

import dataclasses

from trigsync.config import Config, SyncConfig
from trigsync.reload import ADD, CHANGE, KEEP, REMOVE, REPLACE, SyncPlan, TargetPlan, describe, plan
from trigsync.targets import TargetSpec

A, B, C = TargetSpec("/a"), TargetSpec("/b"), TargetSpec("/c")


def cfg(*syncs: SyncConfig) -> Config:
    return Config(syncs=syncs, state_dir="/state")


def test_nothing_changed() -> None:
    sync = SyncConfig("/src", (A,))
    assert plan(cfg(sync), cfg(sync)) == [SyncPlan("/src", KEEP)]
    assert describe(plan(cfg(sync), cfg(sync))) == "nothing changed"


def test_targets_added_removed_replaced_kept() -> None:
    old = SyncConfig("/src", (A, B, C))
    new = SyncConfig(
        "/src",
        (A, dataclasses.replace(B, extra_rsync_args=("--bwlimit=1m",)), TargetSpec("/d")),
    )
    (p,) = plan(cfg(old), cfg(new))
    assert p.action == CHANGE and not p.rewatch
    assert p.targets == (
        TargetPlan("/a", KEEP),
        TargetPlan("/b", REPLACE),
        TargetPlan("/d", ADD),
        TargetPlan("/c", REMOVE),
    )
    assert describe([p]) == "/src: replace /b, add /d, remove /c"


def test_hooks_alone_keep_the_worker() -> None:
    old = SyncConfig("/src", (A,))
    new = SyncConfig("/src", (dataclasses.replace(A, on_success=("/bin/true",)),))
    (p,) = plan(cfg(old), cfg(new))
    assert p.targets == (TargetPlan("/a", KEEP),)
    assert describe([p]) == "/src: hooks or settings"


def test_excludes_rewatch_and_replace_every_worker() -> None:
    old = SyncConfig("/src", (A, B))
    (p,) = plan(cfg(old), cfg(dataclasses.replace(old, excludes=("*.tmp",))))
    assert p.rewatch
    assert {t.action for t in p.targets} == {REPLACE}


def test_syncs_added_and_removed() -> None:
    one, two = SyncConfig("/one", (A,)), SyncConfig("/two", (B,))
    assert plan(cfg(one), cfg(two)) == [SyncPlan("/one", REMOVE), SyncPlan("/two", ADD)]
