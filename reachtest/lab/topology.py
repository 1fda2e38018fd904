"""The lab's topology as data: nodes, links, addresses and the routes that follow from them."""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from reachtest.errors import UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Every lab link is a /24 of this block (third octet = link number).
LINK_BLOCK_V4 = ipaddress.IPv4Network("198.18.0.0/16")
#: Extra target addresses of the server (``--targets K``).
TARGET_PREFIX_V4 = ipaddress.IPv4Network("198.19.0.0/16")
TARGET_PREFIX_V6 = ipaddress.IPv6Network("2001:db8:ff::/64")
#: The whole lab, as the client's routes cover it (no default route).
LAB_PREFIXES = (ipaddress.IPv4Network("198.18.0.0/15"), ipaddress.IPv6Network("2001:db8::/32"))

MIN_HOPS = 1
MAX_HOPS = 20
MAX_TARGETS = 65534
#: Links of the second ECMP branch are numbered from here (main chain: 1 .. hops+1).
ECMP_LINK_BASE = 100
#: The two links of a longer last branch (``ecmp_long``): LONG_LINK_BASE + hop.
LONG_LINK_BASE = 230
LAB_ID_PATTERN = re.compile(r"[a-z0-9]{1,12}")
NETNS_PREFIX = "rt-"


class Role(StrEnum):
    """What a node does in the lab."""

    CLIENT = "client"
    ROUTER = "router"
    SERVER = "server"


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One network namespace: its short name, role and distance from the client in hops."""

    name: str
    role: Role
    hop: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Interface:
    """One end of a link, named inside its node after the peer (``to-r2``)."""

    node: str
    name: str
    mac: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """A veth pair; ``left`` is the end nearer the client."""

    number: int
    left: Interface
    right: Interface

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
        return self.left.ipv4.network, self.left.ipv6.network


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A route in one node: a prefix and one gateway, or several for ECMP."""

    prefix: IPNetwork
    gateways: tuple[tuple[IPAddress, str], ...]  # (next-hop address, device)


def link_networks(number: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """Link ``number`` is 198.18.<number>.0/24 and 2001:db8:0:<number>::/64 (digits as written)."""
    v4 = ipaddress.IPv4Network(f"198.18.{number}.0/24")
    v6 = ipaddress.IPv6Network(f"2001:db8:0:{number}::/64")
    return v4, v6


def link_mac(number: int, side: int) -> str:
    """A locally administered MAC, unique per link end (neighbours are static: no ARP/ND)."""
    return f"02:72:74:00:{number:02x}:{side:02x}"


def target_addresses(
    count: int,
) -> tuple[tuple[ipaddress.IPv4Address, ...], tuple[ipaddress.IPv6Address, ...]]:
    """The first ``count`` extra target addresses, IPv4 and IPv6."""
    base4 = TARGET_PREFIX_V4.network_address
    base6 = TARGET_PREFIX_V6.network_address
    return (
        tuple(base4 + i for i in range(1, count + 1)),
        tuple(base6 + i for i in range(1, count + 1)),
    )


def check_lab_id(lab_id: str) -> str:
    """Return ``lab_id`` if it is a valid lab name, else raise a UsageError."""
    if not LAB_ID_PATTERN.fullmatch(lab_id):
        raise UsageError(f"bad lab name {lab_id!r}: use 1 to 12 lower-case letters and digits")
    return lab_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology:
    """client -- r1 .. rN -- server, optionally ``ecmp_width`` (2 or 3) parallel routers
    at ``ecmp_hop``; with ``ecmp_long`` the last of them reaches the next hop through one
    more router (``r3bx``): branches of different lengths."""

    lab_id: str
    hops: int
    targets: int = 0
    ecmp_hop: int | None = None
    ecmp_width: int = 2
    ecmp_long: bool = False
    nodes: tuple[Node, ...] = field(default=())
    links: tuple[Link, ...] = field(default=())

    # -- names -----------------------------------------------------------------
    def netns(self, node: str) -> str:
        """The network namespace that holds ``node``."""
        return f"{NETNS_PREFIX}{self.lab_id}-{node}"

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def interfaces(self, node: str) -> tuple[Interface, ...]:
        """The interfaces of ``node``, in link order."""
        out: list[Interface] = []
        for link in self.links:
            out.extend(end for end in (link.left, link.right) if end.node == node)
        return tuple(out)

    def peers(self, node: str) -> tuple[tuple[Interface, Interface], ...]:
        """(own interface, the peer's interface on that link) for every link of ``node``."""
        out: list[tuple[Interface, Interface]] = []
        for link in self.links:
            if link.left.node == node:
                out.append((link.left, link.right))
            elif link.right.node == node:
                out.append((link.right, link.left))
        return tuple(out)

    # -- addresses ---------------------------------------------------------------
    @property
    def server(self) -> Node:
        return self.nodes[-1]

    @property
    def client(self) -> Node:
        return self.nodes[0]

    def routers_at(self, hop: int) -> tuple[Node, ...]:
        """The router(s) ``hop`` hops from the client (two at the ECMP hop)."""
        return tuple(n for n in self.nodes if n.role is Role.ROUTER and n.hop == hop)

    def router(self, hop: int) -> Node:
        """The single router at ``hop`` (the first branch at the ECMP hop)."""
        found = self.routers_at(hop)
        if not found:
            raise UsageError(f"the lab has no router at hop {hop} (it has {self.hops} hops)")
        return found[0]

    def facing_client(self, node: str) -> Interface:
        """The interface of ``node`` nearest the client: routers answer from it."""
        for link in self.links:
            if link.right.node == node:
                return link.right
        raise KeyError(node)

    def paths(self) -> tuple[tuple[Interface, ...], ...]:
        """Every way from the client to the server, as the interfaces a probe enters,
        hop by hop (index 0: hop 1): one path per ECMP branch."""
        forward: dict[str, list[Link]] = {}
        for link in self.links:
            forward.setdefault(link.left.node, []).append(link)
        found: list[tuple[Interface, ...]] = []

        def walk(node: str, so_far: tuple[Interface, ...]) -> None:
            if node == self.server.name:
                found.append(so_far)
                return
            for link in forward.get(node, []):
                walk(link.right.node, (*so_far, link.right))

        walk(self.client.name, ())
        return tuple(found)

    def hop_addresses(self, hop: int, *, v6: bool = False) -> tuple[IPAddress, ...]:
        """The addresses that may answer a probe expiring at ``hop`` (server: hops + 1,
        and hops + 2 over a longer branch), in link order.

        Routers answer from the interface the probe came in on (IPv6 does so by itself;
        IPv4 is set to with ``icmp_errors_use_inbound_ifaddr``), so the node after the
        ECMP hop answers from two addresses, one per branch.
        """
        order = {link.right: i for i, link in enumerate(self.links)}
        ends = {path[hop - 1] for path in self.paths() if 1 <= hop <= len(path)}
        return tuple(e.ipv6.ip if v6 else e.ipv4.ip for e in sorted(ends, key=order.__getitem__))

    def client_address(self, *, v6: bool = False) -> IPAddress:
        end = self.interfaces(self.client.name)[0]
        return end.ipv6.ip if v6 else end.ipv4.ip

    def server_address(self, *, v6: bool = False) -> IPAddress:
        end = self.facing_client(self.server.name)
        return end.ipv6.ip if v6 else end.ipv4.ip

    def extra_targets(
        self,
    ) -> tuple[tuple[ipaddress.IPv4Address, ...], tuple[ipaddress.IPv6Address, ...]]:
        """The server's extra target addresses (``--targets K``), IPv4 and IPv6."""
        return target_addresses(self.targets)

    # -- routing -------------------------------------------------------------------
    def _neighbours(self) -> dict[str, list[tuple[str, Interface, Interface]]]:
        """node -> [(peer, own interface, peer interface)], peers in name order."""
        out: dict[str, list[tuple[str, Interface, Interface]]] = {n.name: [] for n in self.nodes}
        for link in self.links:
            out[link.left.node].append((link.right.node, link.left, link.right))
            out[link.right.node].append((link.left.node, link.right, link.left))
        for peers in out.values():
            peers.sort(key=lambda p: p[0])
        return out

    def _distances(self, start: str) -> dict[str, int]:
        neighbours = self._neighbours()
        dist = {start: 0}
        queue = deque([start])
        while queue:
            here = queue.popleft()
            for peer, _, _ in neighbours[here]:
                if peer not in dist:
                    dist[peer] = dist[here] + 1
                    queue.append(peer)
        return dist

    def routes(self, node: str) -> tuple[Route, ...]:
        """Routes of ``node`` to every lab prefix it is not attached to.

        Shortest paths over the link graph. Where several neighbours are equally
        near, only the ECMP fork (the node just before ``ecmp_hop``) routes over
        all of them, and only towards the server; everyone else takes the first
        (the ``a`` branch), so replies come back one way and hops answer from one
        address. There is never a default route.
        """
        neighbours = self._neighbours()
        dist_from = {peer: self._distances(peer) for peer, _, _ in neighbours[node]}
        own = self._distances(node)
        me = self.node(node)
        fork = self.ecmp_hop is not None and me.hop == self.ecmp_hop - 1

        destinations: list[tuple[IPNetwork, tuple[str, ...]]] = []
        for link in self.links:
            for net in link.networks:
                destinations.append((net, (link.left.node, link.right.node)))
        if self.targets:
            destinations.append((TARGET_PREFIX_V4, (self.server.name,)))
            destinations.append((TARGET_PREFIX_V6, (self.server.name,)))

        routes: list[Route] = []
        for net, owners in destinations:
            if node in owners:
                continue
            here = min(own[o] for o in owners)
            nexts = [
                (peer, mine, theirs)
                for peer, mine, theirs in neighbours[node]
                if min(dist_from[peer][o] for o in owners) == here - 1
            ]
            towards_server = own[self.server.name] > min(
                dist_from[p][self.server.name] for p, _, _ in nexts
            )
            if fork and towards_server and self.ecmp_long and self._beyond_rejoin(node, owners):
                # The longer branch is no shortest path, yet the fork balances over it.
                nexts = [n for n in neighbours[node] if self.node(n[0]).hop == self.ecmp_hop]
            if not (fork and towards_server):
                nexts = nexts[:1]
            gateways = tuple(
                (theirs.ipv4.ip if net.version == 4 else theirs.ipv6.ip, mine.name)
                for _, mine, theirs in nexts
            )
            routes.append(Route(prefix=net, gateways=gateways))
        return tuple(routes)

    def rejoin(self) -> str:
        """Where the branches of different lengths meet again (the router after the
        ECMP hop, or the server)."""
        assert self.ecmp_hop is not None
        last = LONG_LINK_BASE + self.ecmp_hop + 1
        return next(link.right.node for link in self.links if link.number == last)

    def _beyond_rejoin(self, node: str, owners: tuple[str, ...]) -> bool:
        """Is the network of ``owners`` the rejoin's own, or reached from ``node``
        through it (the server's address, on the link from the short branch)?"""
        rejoin = self.rejoin()
        own, there = self._distances(node), self._distances(rejoin)
        return rejoin in owners or min(own[o] for o in owners) == own[rejoin] + min(
            there[o] for o in owners
        )


def _link(number: int, left: str, right: str) -> Link:
    """The veth pair ``number`` between ``left`` (nearer the client) and ``right``."""
    v4, v6 = link_networks(number)

    def end(node: str, peer: str, side: int) -> Interface:
        return Interface(
            node=node,
            name=f"to-{peer}",
            mac=link_mac(number, side),
            ipv4=ipaddress.IPv4Interface(f"{v4.network_address + side}/{v4.prefixlen}"),
            ipv6=ipaddress.IPv6Interface(f"{v6.network_address + side}/{v6.prefixlen}"),
        )

    return Link(number=number, left=end(left, right, 1), right=end(right, left, 2))


def build_topology(
    lab_id: str,
    hops: int,
    *,
    targets: int = 0,
    ecmp_hop: int | None = None,
    ecmp_width: int = 2,
    ecmp_long: bool = False,
) -> Topology:
    """Lay out the chain client -- r1 .. r<hops> -- server with its links and addresses."""
    check_lab_id(lab_id)
    if not MIN_HOPS <= hops <= MAX_HOPS:
        raise UsageError(f"--hops must be from {MIN_HOPS} to {MAX_HOPS}, not {hops}")
    if not 0 <= targets <= MAX_TARGETS:
        raise UsageError(f"--targets must be from 0 to {MAX_TARGETS}, not {targets}")
    if ecmp_hop is not None and not 1 <= ecmp_hop <= hops:
        raise UsageError(f"the ECMP hop must be a router hop, 1 to {hops}, not {ecmp_hop}")
    if ecmp_width not in (2, 3):
        raise UsageError(f"an ECMP hop has 2 or 3 parallel routers, not {ecmp_width}")

    nodes: list[Node] = [Node(name="client", role=Role.CLIENT, hop=0)]
    columns: list[list[str]] = [["client"]]
    for hop in range(1, hops + 1):
        names = [f"r{hop}{b}" for b in "abc"[:ecmp_width]] if hop == ecmp_hop else [f"r{hop}"]
        nodes.extend(Node(name=n, role=Role.ROUTER, hop=hop) for n in names)
        columns.append(names)
    nodes.append(Node(name="server", role=Role.SERVER, hop=hops + 1))
    columns.append(["server"])

    links: list[Link] = []
    for hop in range(1, hops + 2):
        for left in columns[hop - 1]:
            for right in columns[hop]:
                # Branch b's links are numbered from 100, c's from 200 (a: the main chain).
                branch = max("abc".find(n[-1]) if n[:1] == "r" else 0 for n in (left, right))
                links.append(_link(ECMP_LINK_BASE * max(branch, 0) + hop, left, right))
    if ecmp_long and ecmp_hop is not None:
        # The last branch reaches the next hop through one more router: cut its link to
        # the next hop, put the extra router between.
        last, after = columns[ecmp_hop][-1], columns[ecmp_hop + 1][0]
        extra = f"{last}x"
        links = [link for link in links if (link.left.node, link.right.node) != (last, after)]
        links += [
            _link(LONG_LINK_BASE + ecmp_hop, last, extra),
            _link(LONG_LINK_BASE + ecmp_hop + 1, extra, after),
        ]
        nodes.insert(
            nodes.index(next(n for n in nodes if n.name == last)) + 1,
            Node(name=extra, role=Role.ROUTER, hop=ecmp_hop + 1),
        )
    return Topology(
        lab_id=lab_id,
        hops=hops,
        targets=targets,
        ecmp_hop=ecmp_hop,
        ecmp_width=ecmp_width,
        ecmp_long=ecmp_long and ecmp_hop is not None,
        nodes=tuple(nodes),
        links=tuple(links),
    )
