"""Topology as data: addressing, names, routes (no root needed)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reachtest.errors import UsageError
from reachtest.lab.topology import LAB_PREFIXES, Role, Topology, build_topology


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    hops = draw(st.integers(1, 20))
    ecmp = draw(st.one_of(st.none(), st.integers(1, hops)))
    targets = draw(st.integers(0, 3))
    return build_topology("x1", hops, targets=targets, ecmp_hop=ecmp)


def forward(
    topo: Topology, start: str, dst: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> list[str]:
    """Follow the routes (first gateway) from ``start`` until a node owns ``dst``."""
    owner = {}
    for link in topo.links:
        for end in (link.left, link.right):
            owner[end.ipv4.ip] = end.node
            owner[end.ipv6.ip] = end.node
    v4s, v6s = topo.extra_targets()
    owner.update({a: topo.server.name for a in (*v4s, *v6s)})
    by_gateway = {}
    for link in topo.links:
        for end in (link.left, link.right):
            by_gateway[end.ipv4.ip] = end.node
            by_gateway[end.ipv6.ip] = end.node
    path = [start]
    while owner.get(dst) != path[-1]:
        here = path[-1]
        attached = [
            e for e in topo.interfaces(here) if dst in e.ipv4.network or dst in e.ipv6.network
        ]
        if attached:
            path.append(owner[dst])
            continue
        routes = [r for r in topo.routes(here) if dst in r.prefix]
        assert len(routes) == 1, (here, dst, routes)
        path.append(by_gateway[routes[0].gateways[0][0]])
        assert len(path) <= 2 * len(topo.nodes), path
    return path


@given(topologies())
def test_every_address_is_unique_and_inside_the_lab_blocks(topo: Topology) -> None:
    addresses = [
        a for link in topo.links for e in (link.left, link.right) for a in (e.ipv4.ip, e.ipv6.ip)
    ]
    assert len(addresses) == len(set(addresses))
    assert all(any(a in p for p in LAB_PREFIXES if p.version == a.version) for a in addresses)
    nets = [n for link in topo.links for n in link.networks]
    assert len(nets) == len(set(nets)), "every link has its own /24 and /64"
    assert {n.prefixlen for n in nets} == {24, 64}


@given(topologies())
def test_routes_reach_every_node_and_target_from_the_client(topo: Topology) -> None:
    destinations = [topo.server_address(), topo.server_address(v6=True)]
    destinations += [e.ipv4.ip for n in topo.nodes for e in topo.interfaces(n.name)]
    v4s, v6s = topo.extra_targets()
    destinations += [*v4s[:1], *v6s[:1]]
    for dst in destinations:
        path = forward(topo, "client", dst)
        assert len(path) - 1 <= topo.hops + 1


@given(topologies())
def test_no_node_has_a_default_route_and_only_the_fork_multipaths(topo: Topology) -> None:
    for node in topo.nodes:
        for route in topo.routes(node.name):
            assert route.prefix.prefixlen > 0
            if len(route.gateways) > 1:
                assert topo.ecmp_hop is not None and node.hop == topo.ecmp_hop - 1
                assert len(route.gateways) == 2


@given(topologies())
def test_hop_addresses_are_the_ingress_of_the_nodes_at_that_hop(topo: Topology) -> None:
    for hop in range(1, topo.hops + 2):
        addresses = topo.hop_addresses(hop)
        expected = (
            2 if topo.ecmp_hop is not None and hop in (topo.ecmp_hop, topo.ecmp_hop + 1) else 1
        )
        assert len(addresses) == expected
    assert topo.hop_addresses(topo.hops + 1)[0] == topo.server_address()


def test_default_chain_addressing_reads_like_the_hop_number() -> None:
    topo = build_topology("lab", 5)
    assert [n.name for n in topo.nodes] == ["client", "r1", "r2", "r3", "r4", "r5", "server"]
    assert topo.netns("r3") == "rt-lab-r3"
    assert str(topo.hop_addresses(3)[0]) == "198.18.3.2"
    assert str(topo.hop_addresses(3, v6=True)[0]) == "2001:db8:0:3::2"
    assert str(topo.server_address()) == "198.18.6.2"
    assert str(topo.client_address()) == "198.18.1.1"
    assert [r.role for r in topo.nodes].count(Role.ROUTER) == 5


def test_ecmp_hop_has_two_routers_and_the_fork_routes_over_both() -> None:
    topo = build_topology("lab", 5, ecmp_hop=3)
    assert [n.name for n in topo.routers_at(3)] == ["r3a", "r3b"]
    to_server = [r for r in topo.routes("r2") if topo.server_address() in r.prefix]
    assert len(to_server) == 1 and len(to_server[0].gateways) == 2
    back = [r for r in topo.routes("r4") if topo.client_address() in r.prefix]
    assert len(back[0].gateways) == 1, "replies come back one way"


def test_extra_targets_come_from_their_own_prefixes() -> None:
    v4, v6 = build_topology("lab", 2, targets=1000).extra_targets()
    assert len(v4) == len(set(v4)) == 1000
    assert str(v4[0]) == "198.19.0.1" and str(v4[-1]) == "198.19.3.232"
    assert str(v6[0]) == "2001:db8:ff::1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lab", 0), "--hops must be from 1 to 20"),
        (("lab", 21), "--hops must be from 1 to 20"),
        (("Lab!", 5), "bad lab name"),
        (("a" * 13, 5), "bad lab name"),
    ],
)
def test_bad_topology_input_is_a_usage_error(args: tuple[str, int], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_topology(*args)


def test_targets_out_of_range_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--targets"):
        build_topology("lab", 5, targets=-1)
    with pytest.raises(UsageError, match="--targets"):
        build_topology("lab", 5, targets=70000)


def test_branches_of_different_lengths_the_fork_balances_over_both() -> None:
    topo = build_topology("lab", 5, ecmp_hop=3, ecmp_long=True)
    assert [n.name for n in topo.nodes][3:7] == ["r3a", "r3b", "r3bx", "r4"]
    assert topo.rejoin() == "r4"
    # The long branch is no shortest path, yet the fork sends the server's flows over it.
    (to_server,) = [r for r in topo.routes("r2") if topo.server_address() in r.prefix]
    heads = {str(topo.facing_client(n).ipv4.ip) for n in ("r3a", "r3b")}
    assert {str(g) for g, _ in to_server.gateways} == heads
    (onward,) = [r for r in topo.routes("r3b") if topo.server_address() in r.prefix]
    assert [str(g) for g, _ in onward.gateways] == [str(topo.facing_client("r3bx").ipv4.ip)]
    # Hop by hop, each branch's routers: the long one is a hop behind from hop 4 on, and
    # the server is at hop 6 over the short branch, 7 over the long one.
    paths = topo.paths()
    assert [[e.node for e in p] for p in paths] == [
        ["r1", "r2", "r3a", "r4", "r5", "server"],
        ["r1", "r2", "r3b", "r3bx", "r4", "r5", "server"],
    ]
    assert [str(a) for a in topo.hop_addresses(4)] == ["198.18.4.2", "198.18.233.2"]
    assert [str(a) for a in topo.hop_addresses(5)] == ["198.18.5.2", "198.18.234.2"]
    assert [str(a) for a in topo.hop_addresses(6)] == ["198.18.5.2", "198.18.6.2"]
    # Replies come back the short way.
    (back,) = [r for r in topo.routes("r4") if topo.client_address() in r.prefix]
    assert [str(g) for g, _ in back.gateways] == ["198.18.4.1"]
    # At the last hop, the server itself is where the branches meet.
    last = build_topology("lab", 2, ecmp_hop=2, ecmp_long=True)
    (direct,) = [r for r in last.routes("r1") if last.server_address() in r.prefix]
    assert len(direct.gateways) == 2


def test_equal_branches_hop_addresses_as_before() -> None:
    topo = build_topology("lab", 5, ecmp_hop=3)
    assert [str(a) for a in topo.hop_addresses(3)] == ["198.18.3.2", "198.18.103.2"]
    assert [str(a) for a in topo.hop_addresses(4)] == ["198.18.4.2", "198.18.104.2"]
    assert [str(a) for a in topo.hop_addresses(6)] == ["198.18.6.2"]
    assert topo.hop_addresses(7) == ()
