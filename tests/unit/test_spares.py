"""The standby pool's policy (spares.Pool), driven by a hand-held clock."""

from __future__ import annotations

from trigsync.spares import HEDGES, SLOW_MIN, Pool


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
    assert pool.retire("b"), "none else waits: it is replaced before it goes"
    assert pool.depth == 2, "it waited unused: one fewer"


def test_a_recycled_standby_serves_until_its_replacement_is_ready() -> None:
    pool: Pool[str] = Pool()
    pool.add("old", 0.0)
    pool.mark_ready("old", 0.01)
    assert pool.retire("old"), "the pool would be empty: a replacement is needed first"
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
    assert not pool.retire("a")  # depth 1, and "b" waits
    assert pool.depth == 1


def test_a_refused_standby_keeps_the_pool_to_what_the_daemon_allows() -> None:
    pool: Pool[str] = Pool()
    pool.depth = 4
    pool.add("a", 0.0)
    assert pool.refused()
    assert pool.depth == 1
    pool.remove("a")
    assert not pool.refused(), "none waits: the refused one is to be started again"
