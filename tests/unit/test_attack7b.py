"""Attacks on this session's pure changes: doctor's route fix from real ``ip route get``
shapes, and the pool's forgotten daemon limit."""

from __future__ import annotations

import pytest

from trigsync.doctor_findings import quickack_route
from trigsync.spares import LIMIT_KEPT, SLOT_FREED, Pool

# Printed by iproute2 6.1 on Linux 6.x for routes set up in a network namespace.
ONLINK = "8.8.8.8 via 172.31.1.1 dev eth0 src 1.2.3.4 uid 0 \n    cache \n"
TABLE = "10.7.0.7 via 172.31.1.1 dev eth0 table 100 src 1.2.3.4 uid 0 \n    cache \n"
MTU_LOCK = "10.8.0.7 via 10.0.0.1 dev eth0 src 10.0.0.5 uid 0 \n    cache mtu lock 1300 \n"
V6_MTU = (
    "2001:db8:9::7 from :: via fe80::1 dev eth0 src 2001:db8::5 metric 1024 mtu 1300 pref medium"
)
SECOND_SRC = "10.5.0.7 via 10.0.0.1 dev eth0 src 10.0.0.6 uid 0 \n    cache \n"
V6_GATEWAY = "10.3.0.7 via inet6 fe80::1 dev eth0 src 1.2.3.4 uid 0 \n    cache \n"


@pytest.mark.parametrize(
    ("ip", "got", "fix"),
    [
        # A cloud host's gateway outside its /32 (Hetzner: default via 172.31.1.1 onlink):
        # without onlink, ip refuses the route ("Nexthop has invalid gateway").
        ("8.8.8.8", ONLINK, "ip route add 8.8.8.8/32 via 172.31.1.1 dev eth0 onlink src 1.2.3.4"),
        # Policy routing: the address is looked up in table 100; a route in main is unused.
        (
            "10.7.0.7",
            TABLE,
            "ip route add 10.7.0.7/32 via 172.31.1.1 dev eth0 onlink table 100 src 1.2.3.4",
        ),
        # The route's mtu: the host route without it sends segments the path cannot carry.
        (
            "10.8.0.7",
            MTU_LOCK,
            "ip route add 10.8.0.7/32 via 10.0.0.1 dev eth0 onlink src 10.0.0.5 mtu lock 1300",
        ),
        (
            "2001:db8:9::7",
            V6_MTU,
            "ip route add 2001:db8:9::7/128 via fe80::1 dev eth0 onlink src 2001:db8::5 mtu 1300",
        ),
        # The route's source address (a second address of the host, the one the daemon's
        # hosts allow names): the host route without it would leave from the first.
        (
            "10.5.0.7",
            SECOND_SRC,
            "ip route add 10.5.0.7/32 via 10.0.0.1 dev eth0 onlink src 10.0.0.6",
        ),
        # An IPv4 route through an IPv6 gateway (RFC 5549, BGP unnumbered): "via inet6 ADDR".
        (
            "10.3.0.7",
            V6_GATEWAY,
            "ip route add 10.3.0.7/32 via inet6 fe80::1 dev eth0 onlink src 1.2.3.4",
        ),
    ],
)
def test_the_route_fix_keeps_what_the_route_it_overrides_gives(ip: str, got: str, fix: str) -> None:
    assert quickack_route(ip, got) == fix + " quickack 1"


@pytest.mark.parametrize("kind", ["blackhole", "prohibit", "throw", "multicast"])
def test_no_route_fix_for_a_route_that_is_not_unicast(kind: str) -> None:
    assert quickack_route("10.0.0.9", f"{kind} 10.0.0.9 dev eth0 table main") is None


def test_a_limit_forgotten_after_refusals_in_a_row_is_learned_again_as_at_first() -> None:
    """Refusals in a row with no connection let in after them (the target paused, say),
    then LIMIT_KEPT of quiet: the limit is forgotten, and the next refusal is the first
    of its kind again. The streak's count was kept, so its pause was the third refusal's
    (4 x SLOT_FREED) and no standby started for that long."""
    pool: Pool[str] = Pool(max_depth=4)
    pool.refused(0.0, 1)
    pool.refused(0.2, 1)
    later = 0.2 + LIMIT_KEPT + 1.0
    assert pool.to_start(later, starting=0) == 1
    assert pool.limit is None, "forgotten"
    pool.refused(later, 1)
    assert pool.to_start(later + SLOT_FREED, starting=0) == 1, "paused as after a first refusal"
