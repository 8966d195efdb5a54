"""The standby pool's policy (spares.Pool), driven by a hand-held clock."""

from __future__ import annotations

import pytest

from trigsync.spares import (
    BUSY_MAX,
    HEDGES,
    LIMIT_KEPT,
    SLOT_FREED,
    SLOT_FREED_MAX,
    SLOT_FREED_SHRINK,
    SLOW_MIN,
    Pool,
    Recycle,
)


def pool_with_logins(*seconds: float) -> Pool[str]:
    """A pool that has seen logins of these lengths (and holds none now)."""
    pool: Pool[str] = Pool(max_depth=4)
    for i, length in enumerate(seconds):
        pool.add(f"seen{i}", 0.0)
        pool.mark_ready(f"seen{i}", length)
        pool.remove(f"seen{i}")
    return pool


def test_a_list_goes_to_a_ready_standby_never_to_an_older_one_still_logging_in() -> None:
    pool = pool_with_logins(0.008, 0.009)
    pool.add("stalled", 10.000)
    pool.add("quick", 10.005)
    pool.mark_ready("quick", 10.012)
    assert pool.pick() == "quick"
    pool.take("quick", 10.013)
    assert pool.pick() is None, "a standby still logging in is not ready"
    assert pool.oldest() == "stalled"  # only the fallback once none gets ready


def test_the_ready_standby_that_waited_longest_goes_first() -> None:
    pool: Pool[str] = Pool()
    for name, born, ready in (("a", 0.0, 0.050), ("b", 0.001, 0.008), ("c", 0.002, 0.009)):
        pool.add(name, born)
        pool.mark_ready(name, ready)
    assert pool.ready() == ["b", "c", "a"]
    assert pool.pick() == "b"


def test_a_stalled_login_gets_another_started_beside_it() -> None:
    pool = pool_with_logins(0.008, 0.008, 0.009, 0.010)  # fast logins: slow after 18 ms
    pool.depth = 2
    pool.add("a", 0.0)
    pool.add("b", 0.0)
    assert pool.to_start(0.005, starting=0) == 0
    assert pool.slow(0.030) == ["a", "b"]
    assert (
        pool.to_start(0.030, starting=0) == HEDGES
    )  # both stalled: as many more as HEDGES allows, no more
    assert pool.to_start(0.030, starting=1) == HEDGES - 1
    pool.mark_ready("a", 0.050)  # the stalled one logs in after all: it counts again
    assert pool.to_start(0.050, starting=0) == 1


def test_a_hedge_and_its_stalled_twin_both_ready_are_one_too_many() -> None:
    """Both logged in: the second held a connection for nothing until its recycle, and at
    max connections = 2 another client was refused for 5 s (test_attack6b, 1 run in 11)."""
    pool = pool_with_logins(0.008, 0.008, 0.009, 0.010)
    pool.add("slow", 0.0)
    assert pool.to_start(0.030, starting=0) == HEDGES
    pool.add("hedge", 0.030)
    pool.mark_ready("hedge", 0.040)
    assert not pool.surplus(), "the one the pool needs"
    pool.mark_ready("slow", 0.060)
    assert pool.surplus(), "its stalled twin got through too: one is enough"
    assert not pool.surplus(alive=lambda h: h != "hedge"), "its twin exited: no surplus"
    pool.deepen()
    assert not pool.surplus(), "a pool two deep wants both"


def test_hedges_are_bounded_whatever_stalls() -> None:
    pool = pool_with_logins(0.008)
    pool.depth = 3
    for i in range(3 + HEDGES):
        pool.add(f"s{i}", 0.0)
    assert pool.to_start(1.0, starting=0) == 0, "each standby holds a connection"


def test_slow_follows_the_recent_fast_logins() -> None:
    assert pool_with_logins(0.008, 0.009, 0.050, 0.010).slow_after() == 2 * 0.009
    assert pool_with_logins(0.001, 0.001).slow_after() == SLOW_MIN
    ssh = pool_with_logins(0.150, 0.160, 0.155, 0.400)  # a remote shell slow to start
    assert ssh.slow_after() == 2 * 0.155
    pool = pool_with_logins(0.150, 0.160, 0.155)
    pool.add("x", 0.0)
    assert pool.slow(0.200) == [], "a login as slow as the usual ones is not stalled"


def test_the_pool_deepens_while_changes_find_none_ready_and_shrinks_when_idle() -> None:
    pool: Pool[str] = Pool(max_depth=3)
    for i in range(5):
        pool.add(f"s{i}", float(i))
        pool.mark_ready(f"s{i}", i + 0.01)
        pool.take(f"s{i}", i + 0.012)  # none left ready after each, 1 s apart
    assert pool.depth == 1, "one change a second: one standby keeps up"
    for i in range(5):
        pool.add(f"b{i}", 5 + i * 0.01)
        pool.mark_ready(f"b{i}", 5 + i * 0.01 + 0.005)
        pool.take(f"b{i}", 5 + i * 0.01 + 0.006)  # back to back: 10 ms apart
    assert pool.depth == 3, "capped at max_depth"
    pool.add("a", 10.0)
    pool.mark_ready("a", 10.01)
    pool.add("b", 10.0)
    pool.mark_ready("b", 10.01)
    pool.take("a", 10.02)  # "b" still ready: no sign of demand outrunning the logins
    assert pool.depth == 3
    assert pool.retire("b") is Recycle.REPLACE, "none else waits: replaced before it goes"
    assert pool.depth == 2, "it waited unused: one fewer"


def test_a_recycled_standby_serves_until_its_replacement_is_ready() -> None:
    pool: Pool[str] = Pool()
    pool.add("old", 0.0)
    pool.mark_ready("old", 0.01)
    assert pool.retire("old") is Recycle.REPLACE, "the pool would be empty: replaced first"
    assert pool.depth == 1
    assert pool.to_start(30.0, starting=0) == 1, "the retiring one does not count"
    assert pool.pick() == "old", "still connected: it takes a change that comes meanwhile"
    pool.add("new", 30.0)
    assert pool.retiring() == ["old"]
    assert pool.to_start(30.001, starting=0) == 0


def test_a_recycled_standby_with_others_waiting_needs_no_replacement() -> None:
    pool: Pool[str] = Pool()
    pool.depth = 2
    for name in ("a", "b"):
        pool.add(name, 0.0)
        pool.mark_ready(name, 0.01)
    assert pool.retire("a") is Recycle.STOP  # depth 1, and "b" waits
    assert pool.depth == 1


def test_a_refused_standby_keeps_the_pool_to_what_the_daemon_allows() -> None:
    pool: Pool[str] = Pool()
    pool.depth = 4
    pool.add("a", 0.0)
    pool.mark_ready("a", 0.01)
    pool.refused(0.0, 3)
    assert pool.depth == 1, "no more than the one waiting"
    assert pool.to_start(10.0, starting=0) == 0


def ready_pool(*names: str, at: float = 0.0) -> Pool[str]:
    pool: Pool[str] = Pool()
    for name in names:
        pool.add(name, at)
        pool.mark_ready(name, at + 0.01)
    return pool


def test_an_unlimited_daemon_sees_no_connection_counting() -> None:
    """Until a refusal, runs and stops change nothing: the normal path is as it was."""
    pool = ready_pool("z", "a")
    pool.take("z", 0.9)
    pool.take("a", 0.905)  # a run holds a connection, none is left ready, 5 ms apart: depth 2
    assert pool.to_start(1.0, starting=0) == 2, "the next ones start beside the run"
    pool.ran(1.5)
    pool.add("b", 1.5)
    pool.mark_ready("b", 1.51)
    assert pool.retire("b") is Recycle.REPLACE
    assert pool.to_start(2.0, starting=0) == 1, "its replacement starts beside it"
    assert pool.blocked_for(2.0, starting=0) is None
    assert pool.limit is None


def test_the_refusal_names_the_daemons_limit_or_the_pool_counts_what_it_held() -> None:
    pool = ready_pool("a")
    pool.refused(1.0, 2)
    assert pool.limit == 2
    counted = ready_pool("a", "b")
    counted.take("a", 0.5)
    counted.refused(1.0, None)  # no number in the message: what it held then (b and a's run)
    assert counted.limit == 2


def test_at_the_limit_a_recycled_standby_goes_before_its_replacement_starts() -> None:
    pool = ready_pool("old")
    pool.refused(0.5, 1)  # a replacement asked beside it was refused: one connection
    assert pool.retire("old") is Recycle.STOP_FIRST
    assert pool.stopping("old")
    assert pool.to_start(2.0, starting=0) == 0, "it still holds the daemon's only slot"
    assert pool.blocked_for(2.0, starting=0) is None, "its exit says when (gone)"
    pool.gone(2.0)
    assert pool.to_start(2.0, starting=0) == 0, "the daemon has not seen it go yet"
    assert pool.blocked_for(2.0, starting=0) == pytest.approx(SLOT_FREED)
    assert pool.to_start(2.0 + SLOT_FREED, starting=0) == 1
    assert pool.to_start(2.0 + SLOT_FREED, starting=1) == 0, "one at a time"


def test_below_the_limit_a_recycled_standby_serves_until_its_replacement_is_ready() -> None:
    pool = ready_pool("old")
    pool.refused(0.5, 2)
    assert pool.retire("old") is Recycle.REPLACE, "two connections fit"
    assert pool.to_start(2.0, starting=0) == 1


def test_a_slot_that_is_only_freeing_delays_the_replacement_and_no_more() -> None:
    pool = ready_pool("a", "b")
    pool.refused(0.0, 2)
    pool.take("a", 1.0)
    pool.ran(5.0)  # its run just ended: the daemon frees its slot a little later
    assert pool.retire("b") is Recycle.REPLACE, "b still serves meanwhile"
    assert pool.to_start(5.0, starting=0) == 0
    assert pool.blocked_for(5.0, starting=0) == pytest.approx(SLOT_FREED)
    assert pool.to_start(5.0 + SLOT_FREED, starting=0) == 1


def test_a_learned_limit_is_forgotten_after_a_quiet_spell_and_learned_again() -> None:
    """An operator who raises `max connections` (rsyncd reads it per connection) gets the
    deeper pool without restarting trigsync; a limit that still holds is learned again."""
    pool = ready_pool("a")
    pool.refused(0.0, 1)
    pool.take("a", 0.5)
    pool.ran(1.0)
    pool.depth = 3
    assert pool.to_start(2.0, starting=0) == 1, "kept to the limit of 1"
    assert pool.to_start(LIMIT_KEPT - 1.0, starting=0) == 1
    assert pool.limit == 1
    assert pool.to_start(LIMIT_KEPT + 1.0, starting=0) == 3, "no refusal for LIMIT_KEPT"
    assert pool.limit is None
    assert pool.free_in(LIMIT_KEPT + 1.0) == 0.0
    pool.refused(LIMIT_KEPT + 2.0, 2)  # it still holds, now at 2: learned again
    assert pool.limit == 2
    assert pool.to_start(LIMIT_KEPT + 10.0, starting=0) <= 2


def test_at_the_limit_no_standby_starts_beside_a_run_and_one_follows_its_end() -> None:
    pool = ready_pool("a")
    pool.refused(0.0, 1)
    pool.take("a", 0.5)
    assert pool.depth == 1, "none left ready, but a deeper pool would pass the limit"
    assert pool.to_start(1.0, starting=0) == 0, "the run holds the only slot"
    assert pool.blocked_for(1.0, starting=0) is None, "its end says when (ran)"
    pool.ran(3.0)
    assert pool.to_start(3.0, starting=0) == 0
    assert pool.to_start(3.0 + SLOT_FREED, starting=0) == 1
    pool.run_fresh()  # a change came first and runs fresh: no standby beside it
    assert pool.to_start(3.0 + SLOT_FREED, starting=0) == 0


def test_refusals_at_a_known_limit_wait_longer_and_a_login_ends_the_backoff() -> None:
    pool = ready_pool("old")
    pool.refused(0.0, 1)  # learning the limit is no sign of asking too soon
    assert pool.slot_freed == SLOT_FREED
    pool.add("new", 0.5)
    pool.mark_ready("new", 0.51)  # let in
    pool.stopping("old")
    pool.stopping("new")
    pool.gone(1.0)
    pool.gone(1.0)
    pool.refused(1.0 + SLOT_FREED, 1)  # asked once the slot should be free: it was not
    assert pool.slot_freed == 2 * SLOT_FREED, "the daemon takes longer here: learned"
    assert pool.to_start(1.0 + 2 * SLOT_FREED, starting=0) == 0
    assert pool.blocked_for(1.0 + SLOT_FREED, starting=0) == pytest.approx(2 * SLOT_FREED)
    pool.refused(2.0, 1)  # refused again in a row: backs off, learns no more
    assert pool.slot_freed == 2 * SLOT_FREED
    assert pool.blocked_for(2.0, starting=0) == pytest.approx(4 * SLOT_FREED)
    for i in range(10):
        pool.refused(3.0 + i, 1)
    assert pool.blocked_for(12.0, starting=0) == pytest.approx(BUSY_MAX)
    pool.add("new", 20.0)
    pool.mark_ready("new", 20.01)  # let in: the next refusal starts a new streak
    learned = 2 * SLOT_FREED * SLOT_FREED_SHRINK  # and the wait shrinks a little
    assert pool.slot_freed == pytest.approx(learned)
    pool.stopping("new")
    pool.gone(21.0)
    pool.refused(21.0 + 2 * SLOT_FREED, 1)
    assert pool.slot_freed == pytest.approx(2 * learned)
    assert pool.blocked_for(21.0 + 2 * SLOT_FREED, starting=0) == pytest.approx(2 * learned)
    for i in range(10):  # each a new streak, after a login
        pool.add(f"s{i}", 30.0 + i)
        pool.mark_ready(f"s{i}", 30.0 + i)
        pool.refused(30.5 + i, 1)
    assert pool.slot_freed == SLOT_FREED_MAX, "capped"


def test_the_wait_for_a_slot_shrinks_back_as_connections_are_let_in() -> None:
    """Refusals another client caused (or a halving's quick tries) must not leave every
    later change at a limit of 1 waiting SLOT_FREED_MAX for good (seen: ~1 s a change)."""
    pool = ready_pool("old")
    pool.refused(0.0, 1)
    pool.slot_freed = SLOT_FREED_MAX  # as refusals left it
    for i in range(20):
        pool.add(f"s{i}", 10.0 + i)
        pool.mark_ready(f"s{i}", 10.01 + i)  # a standby logged in
        pool.let_in()  # and fresh runs got in
    assert pool.slot_freed == SLOT_FREED


def test_a_fresh_run_at_the_limit_waits_only_for_a_slot_of_ours_that_is_freeing() -> None:
    pool = ready_pool("old")
    assert pool.free_in(0.0) == 0.0, "no limit known: it never waits"
    pool.refused(0.0, 1)
    pool.stopping("old")
    pool.gone(1.0)  # recycled at the limit: a change comes before the slot is free
    assert pool.free_in(1.05) == pytest.approx(SLOT_FREED - 0.05)
    assert pool.free_in(1.0 + SLOT_FREED) == 0.0
    pool.run_fresh()
    pool.run_fresh()  # a second lane: a run holds the slot, waiting frees nothing
    assert pool.free_in(2.0) == 0.0
    two = ready_pool("a", "b")
    two.refused(0.0, 2)
    two.take("a", 1.0)
    two.ran(5.0)
    assert two.free_in(5.0) == 0.0, "b takes the list: no new connection, no wait"
