"""Whole-directory entries in rsync's list: every change still reaches rsync, once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trigsync.changes import Change, Kind
from trigsync.listing import Counter, entries


def counts(sizes: dict[bytes, int]) -> Counter:
    """A directory counter over fixed sizes that, like the real one, may stop early."""
    return lambda d, limit: None if d not in sizes else min(sizes[d], limit + 1)


def files(directory: bytes, n: int, kind: Kind = Kind.NEW) -> list[Change]:
    return [Change(directory + b"/f%03d" % i, kind) for i in range(n)]


def test_a_directory_whose_entries_mostly_changed_is_listed_whole() -> None:
    changes = [Change(b"new", Kind.NEW), *files(b"new", 20)]
    out, whole = entries(changes, counts({b"new": 25}), least=16)
    assert out == [b"new/"]
    assert whole == [b"new"]


def test_few_changes_or_a_big_directory_stay_listed_one_by_one() -> None:
    few = files(b"d", 15)
    assert entries(few, counts({b"d": 15}), least=16) == ([c.path for c in few], [])
    many = files(b"big", 20)
    assert entries(many, counts({b"big": 41}), least=16) == ([c.path for c in many], [])


def test_deleted_entries_are_listed_on_their_own_so_they_are_removed() -> None:
    changes = [*files(b"d", 20), Change(b"d/gone", Kind.DELETED)]
    out, _ = entries(changes, counts({b"d": 20}), least=16)
    assert out == [b"d/", b"d/gone"]


def test_no_longer_a_directory_means_one_by_one() -> None:
    changes = files(b"d", 20)
    out, whole = entries(changes, lambda _d, _n: None, least=16)
    assert out == [c.path for c in changes] and whole == []


def test_the_root_is_never_listed_whole() -> None:
    changes = [Change(b"f%03d" % i, Kind.NEW) for i in range(40)]
    out, whole = entries(changes, lambda _d, _n: 40, least=16)
    assert out == [c.path for c in changes] and whole == []


def test_subdirectories_keep_their_own_entries() -> None:
    changes = [*files(b"a", 20), Change(b"a/sub", Kind.NEW), *files(b"a/sub", 3)]
    out, whole = entries(changes, counts({b"a": 21, b"a/sub": 3}), least=16)
    assert whole == [b"a"]
    assert sorted(out) == [b"a/", *sorted(c.path for c in files(b"a/sub", 3))]


paths = st.lists(
    st.tuples(
        st.sampled_from([b"a", b"b", b"a/s", b"b/t/u"]),
        st.integers(0, 30),
        st.sampled_from(list(Kind)),
    ),
    max_size=120,
    unique_by=lambda t: (t[0], t[1]),
)


@given(paths, st.integers(1, 8), st.integers(0, 200))
def test_every_change_is_covered_and_every_deletion_listed(
    spec: list[tuple[bytes, int, Kind]], least: int, extra: int
) -> None:
    changes = [Change(d + b"/f%02d" % i, k) for d, i, k in spec]
    per_dir: dict[bytes, int] = {}
    for c in changes:
        parent = c.path.rpartition(b"/")[0]
        per_dir[parent] = per_dir.get(parent, 0) + 1
    sizes = {d: n + extra % 7 for d, n in per_dir.items()}  # some unchanged entries too
    out, whole = entries(changes, counts(sizes), least=least)
    listed = set(out)
    assert len(listed) == len(out), "no entry twice"
    for c in changes:
        parent = c.path.rpartition(b"/")[0]
        if c.kind is Kind.DELETED:
            assert c.path in listed
        else:
            assert c.path in listed or (parent in whole and parent + b"/" in listed)
    for d in whole:
        changed = sum(
            1 for c in changes if c.kind is not Kind.DELETED and c.path.rpartition(b"/")[0] == d
        )
        assert changed >= least and 2 * changed >= sizes[d]
