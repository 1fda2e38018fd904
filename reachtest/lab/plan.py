"""Render a topology and a scenario into what each namespace gets: sysctls, ip lines, nft rules."""

from __future__ import annotations

from dataclasses import dataclass

from reachtest.errors import UsageError
from reachtest.lab.scenarios import (
    AckRewrite,
    Action,
    AppFilter,
    Delay,
    Filter,
    LinkLoss,
    Mtu,
    Nat,
    NatKind,
    RateLimit,
    Rewrite,
    Rule,
    Scenario,
    Services,
    Silent,
)
from reachtest.lab.topology import Role, Topology, build_topology
from reachtest.model import Protocol

DNS_DOMAIN = "reachtest.test"
#: Lifted ICMP limits, so every probe gets its answer (lab-notes.md: "How routers answer").
LIFTED_ICMP_LIMITS = (
    ("net.ipv4.icmp_ratelimit", "0"),
    ("net.ipv6.icmp.ratelimit", "0"),
    ("net.ipv4.icmp_msgs_per_sec", "1000000"),
    ("net.ipv4.icmp_msgs_burst", "100000"),
)
COMMON_SYSCTLS = (
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.accept_ra", "0"),
    ("net.ipv6.conf.default.accept_ra", "0"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
)
ROUTER_SYSCTLS = (
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.default.forwarding", "1"),
    # ECMP by the 5-tuple as the packet says it (policy 3 with the fields: addresses,
    # protocol, ports), never by the flow hash a veth carries over from the sender's
    # socket (policy 1 uses it, and a socket draws a new one on each retransmission:
    # a flow would change branches, lab-notes.md).
    ("net.ipv4.fib_multipath_hash_policy", "3"),
    ("net.ipv4.fib_multipath_hash_fields", "0x37"),
    ("net.ipv4.icmp_errors_use_inbound_ifaddr", "1"),  # answer from the ingress, as IPv6 does
    ("net.ipv6.fib_multipath_hash_policy", "3"),
    ("net.ipv6.fib_multipath_hash_fields", "0x37"),
)
#: Unprivileged ICMP (ping) sockets for everyone in the client namespace (v4 and v6).
CLIENT_SYSCTLS = (("net.ipv4.ping_group_range", "0 2147483647"),)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePlan:
    """Everything one namespace gets, in the order it is applied."""

    node: str
    role: Role
    netns: str
    sysctls: tuple[tuple[str, str], ...]
    addresses: tuple[str, ...]  # ip -batch lines: addresses, links up
    routes: tuple[str, ...]  # ip -batch lines: routes (after every link is up)
    nft: str | None  # an nft ruleset, or None when the node has no rules
    #: iptables arguments, each applied with iptables and ip6tables (application
    #: filters: a string match, which nftables does not have)
    iptables: tuple[tuple[str, ...], ...] = ()


#: A delay namespace's kernel stays out of the way: no IPv6 (no router solicitations).
DELAY_SYSCTLS = (
    ("net.ipv6.conf.all.disable_ipv6", "1"),
    ("net.ipv6.conf.default.disable_ipv6", "1"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DelayPlan:
    """A delayed link: in namespace ``netns``, a forwarder copies frames between
    ``client_side`` and ``server_side`` (veths to the link's two nodes) ``ms`` later."""

    node: str  # the node the delayed link leads into
    netns: str
    client_side: str
    server_side: str
    ms: float
    jitter_ms: float
    addresses: tuple[str, ...]  # ip -batch lines in ``netns``: interfaces up


@dataclass(frozen=True, slots=True, kw_only=True)
class LabPlan:
    """A whole lab: the topology, the scenario on it, and each node's plan."""

    topology: Topology
    scenario: Scenario
    services: Services
    links: tuple[str, ...]  # ip -batch lines in the root namespace: veth pairs
    nodes: tuple[NodePlan, ...]
    delays: tuple[DelayPlan, ...] = ()

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the lab: its nodes' and its delayed links'."""
        return tuple(n.netns for n in self.nodes) + tuple(d.netns for d in self.delays)

    def node(self, name: str) -> NodePlan:
        for plan in self.nodes:
            if plan.node == name:
                return plan
        raise KeyError(name)

    def names(self) -> dict[str, tuple[str, ...]]:
        """Host name -> addresses of every lab node and extra target (for hosts and DNS)."""
        out: dict[str, tuple[str, ...]] = {}
        topo = self.topology
        for node in topo.nodes:
            ends = topo.interfaces(node.name)
            if node.role is not Role.CLIENT:
                first = topo.facing_client(node.name)
                ends = (first, *(e for e in ends if e != first))
            out[node.name] = tuple(str(a) for e in ends for a in (e.ipv4.ip, e.ipv6.ip))
        v4s, v6s = topo.extra_targets()
        for i, (a4, a6) in enumerate(zip(v4s, v6s, strict=True), start=1):
            out[f"t{i}"] = (str(a4), str(a6))
        return out

    def fqdn(self, name: str) -> str:
        return f"{name}.{self.topology.lab_id}.{DNS_DOMAIN}"

    def owners(self) -> dict[str, tuple[int, str, str]]:
        """Address -> (AS, prefix, AS name) of every lab node's interface: each node is its
        own AS from the documentation ranges (RFC 5398: 64496-64511, then 65536-65551),
        its interfaces' networks its prefixes. The lab's DNS serves them in Team Cymru's
        zones, so ``-z`` is tested without leaving the lab (the ground truth of ``-z``)."""
        topo = self.topology
        out: dict[str, tuple[int, str, str]] = {}
        for index, node in enumerate(topo.nodes):
            asn = 64496 + index if index < 16 else 65536 + index - 16
            name = f"LAB-{node.name.upper()} - reachtest lab {node.role} {node.name}, ZZ"
            for end in topo.interfaces(node.name):
                for interface in (end.ipv4, end.ipv6):
                    out[str(interface.ip)] = (asn, str(interface.network), name)
        return out

    def as_zone(self) -> dict[str, list[str]]:
        """TXT records (name -> strings) of the lab's owners, as Team Cymru answers them:
        ``<reversed address>.origin[6].asn.cymru.com`` and ``AS<n>.asn.cymru.com``."""
        from reachtest.asn import NAME_ZONE, origin_name

        out: dict[str, list[str]] = {}
        for address, (asn, prefix, name) in self.owners().items():
            out[origin_name(address) + "."] = [f"{asn} | {prefix} | ZZ | lab | 2026-12-05"]
            out[f"AS{asn}.{NAME_ZONE}."] = [f"{asn} | ZZ | lab | 2026-12-05 | {name}"]
        return out


def _match(rule: Filter) -> list[str]:
    """nft match expressions (one per line to emit) for a filter's flow."""
    flow = rule.flow
    if flow.protocol is Protocol.ICMP:
        return ["icmp type echo-request", "icmpv6 type echo-request"]
    return [f"meta l4proto {flow.protocol} th dport {flow.port}"]


def _verdict(rule: Filter) -> str:
    if rule.action is Action.DROP:
        return "drop"
    if rule.action is Action.TCP_RESET:
        if rule.flow.protocol is not Protocol.TCP:
            raise UsageError(f"{rule.node}: tcp-reset can only reject TCP, not {rule.flow}")
        return "reject with tcp reset"
    return f"reject with icmpx type {rule.action}"


#: The chains of a node's table and their hooks: filters first; NAT at the edges.
CHAINS = {
    "forward": "type filter hook forward priority 0",
    "input": "type filter hook input priority 0",
    "output": "type filter hook output priority 0",
    "nat_masquerade": "type nat hook postrouting priority srcnat",
    "nat_in": "type filter hook prerouting priority raw",
    "nat_out": "type filter hook postrouting priority srcnat",
}
#: The ack-rewrite rule changes the acknowledgment number of SYN-ACKs by this xor.
ACK_XOR = 0x10000
#: The stateless NAT turns the source port (echo identifier) by this xor: its own inverse.
NAT_PORT_XOR = 0x4000


def _nat_rules(topology: Topology, rule: Nat) -> dict[str, list[str]]:
    """nft rules for a NAT at ``rule.node`` on its link to ``rule.towards``."""
    device = f"to-{rule.towards}"
    outside = next((i for i in topology.interfaces(rule.node) if i.name == device), None)
    if outside is None:
        raise UsageError(f"{rule.node} has no link to {rule.towards}")
    if rule.kind is NatKind.MASQUERADE:
        return {"nat_masquerade": [f'oifname "{device}" masquerade random']}
    out: list[str] = []
    back: list[str] = []
    k = NAT_PORT_XOR
    for v6 in (False, True):
        ip, icmp = ("ip6", "icmpv6") if v6 else ("ip", "icmp")
        client = topology.client_address(v6=v6)
        ours = outside.ipv6.ip if v6 else outside.ipv4.ip
        leaving = f'oifname "{device}" {ip} saddr {client}'
        arriving = f'iifname "{device}" {ip} daddr {ours}'
        if v6:  # neighbour discovery to the router's own address stays its own
            back.append(
                f"{arriving} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept"
            )
        for proto in ("tcp", "udp"):
            out.append(f"{leaving} {proto} sport set {proto} sport ^ {k}")
            back.append(f"{arriving} {proto} dport set {proto} dport ^ {k}")
        out.append(f"{leaving} {icmp} type echo-request {icmp} id set {icmp} id ^ {k}")
        back.append(f"{arriving} {icmp} type echo-reply {icmp} id set {icmp} id ^ {k}")
        out.append(f"{leaving} {ip} saddr set {ours}")
        back.append(f"{arriving} {ip} daddr set {client}")
    return {"nat_out": out, "nat_in": back}


def iptables_rules(
    topology: Topology, node: str, rules: tuple[Rule, ...]
) -> tuple[tuple[str, ...], ...]:
    """iptables arguments for ``node``'s application filters (forwarded segments on a
    router, arriving ones on the server)."""
    chain = "INPUT" if topology.node(node).role is Role.SERVER else "FORWARD"
    out = []
    for rule in rules:
        if isinstance(rule, AppFilter) and rule.node == node:
            verdict = (
                ("-j", "REJECT", "--reject-with", "tcp-reset")
                if rule.action is Action.TCP_RESET
                else ("-j", "DROP")
            )
            out.append(
                ("-A", chain, "-p", rule.protocol, "--dport", str(rule.port), "-m", "string",
                 "--algo", "bm", *rule.wire_pattern, "--icase", *verdict)
            )  # fmt: skip
    return tuple(out)


def nft_ruleset(topology: Topology, node: str, rules: tuple[Rule, ...]) -> str | None:
    """The nft ruleset for ``node``: one ``inet reachtest`` table, stateless rules."""
    role = topology.node(node).role
    chains: dict[str, list[str]] = {name: [] for name in CHAINS}
    for rule in rules:
        if rule.node != node:
            continue
        if isinstance(rule, Filter):
            chain = {Role.ROUTER: "forward", Role.SERVER: "input", Role.CLIENT: "output"}[role]
            chains[chain] += [f"{m} {_verdict(rule)}" for m in _match(rule)]
        elif isinstance(rule, Silent):
            chains["output"] += ["icmp type time-exceeded drop", "icmpv6 type time-exceeded drop"]
        elif isinstance(rule, LinkLoss):
            device = f"to-{rule.towards}"
            if device not in {i.name for i in topology.interfaces(node)}:
                raise UsageError(f"{node} has no link to {rule.towards}")
            if rule.flow is not None and rule.flow.protocol is Protocol.ICMP:
                raise UsageError(f"{node}: a policer takes a TCP or UDP flow, not {rule.flow}")
            match = "" if rule.flow is None else (
                f"meta l4proto {rule.flow.protocol} th dport {rule.flow.port} "
            )  # fmt: skip
            chains["forward"].append(
                f'oifname "{device}" {match}numgen random mod 100 < {rule.loss_pct} drop'
            )
        elif isinstance(rule, AckRewrite):
            # And the client kernel's RST to such a SYN-ACK (its sequence number is the
            # rewritten ack) back, so that the server's half-open connection closes.
            toward = topology.facing_client(node).name
            chains["forward"] += [
                f'oifname "{toward}" tcp flags & (syn | ack) == syn | ack '
                f"tcp ackseq set tcp ackseq ^ {ACK_XOR}",
                f'iifname "{toward}" tcp flags & rst == rst '
                f"tcp sequence set tcp sequence ^ {ACK_XOR}",
            ]
        elif isinstance(rule, Nat):
            for chain, body in _nat_rules(topology, rule).items():
                chains[chain] += body
        elif isinstance(rule, Rewrite) and rule.field == "mss":
            chains["forward"].append(f"tcp flags syn tcp option maxseg size set {rule.value}")
        elif isinstance(rule, Rewrite):
            chains["forward"] += [
                f"meta nfproto ipv4 ip dscp set {rule.value}",
                f"meta nfproto ipv6 ip6 dscp set {rule.value}",
            ]
    for rule in rules:  # a black hole's two ends keep quiet about the small link
        if isinstance(rule, Mtu) and rule.black_hole and node in (rule.node, rule.towards):
            chains["output"] += [
                "icmp type destination-unreachable icmp code frag-needed drop",
                "icmpv6 type packet-too-big drop",
            ]
    if not any(chains.values()):
        return None
    lines = ["table inet reachtest {"]
    for chain, body in chains.items():
        if body:
            lines.append(f"  chain {chain} {{")
            lines.append(f"    {CHAINS[chain]}; policy accept;")
            lines += [f"    {rule}" for rule in body]
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _small_links(node: str, rules: tuple[Rule, ...]) -> dict[str, int]:
    """Interface -> MTU of ``node``'s ends of the small links (``Mtu`` rules)."""
    small = {}
    for rule in rules:
        if isinstance(rule, Mtu) and rule.node == node:
            small[f"to-{rule.towards}"] = rule.mtu
        elif isinstance(rule, Mtu) and rule.towards == node:
            small[f"to-{rule.node}"] = rule.mtu
    return small


def _sysctls(role: Role, limits: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    extra = {Role.ROUTER: ROUTER_SYSCTLS, Role.CLIENT: CLIENT_SYSCTLS, Role.SERVER: ()}[role]
    return COMMON_SYSCTLS + limits + extra


def _limits(node: str, rules: tuple[Rule, ...]) -> tuple[tuple[str, str], ...]:
    for rule in rules:
        if isinstance(rule, RateLimit) and rule.node == node:
            if rule.ratelimit_ms is None:
                return ()  # kernel defaults
            ms = str(rule.ratelimit_ms)
            return (("net.ipv4.icmp_ratelimit", ms), ("net.ipv6.icmp.ratelimit", ms))
    return LIFTED_ICMP_LIMITS


def build_plan(
    lab_id: str, scenario: Scenario, *, targets: int = 0, services: Services | None = None
) -> LabPlan:
    """Lay out ``scenario`` as lab ``lab_id``: pure data, nothing is touched."""
    services = services or Services()
    topo = build_topology(
        lab_id, scenario.hops, targets=targets, ecmp_hop=scenario.ecmp_hop,
        ecmp_width=scenario.ecmp_width, ecmp_long=scenario.ecmp_long,
    )  # fmt: skip
    known = {n.name for n in topo.nodes}
    for rule in scenario.rules:
        if rule.node not in known:
            raise UsageError(f"scenario {scenario.name}: the lab has no node {rule.node}")

    delayed: dict[str, Delay] = {r.node: r for r in scenario.rules if isinstance(r, Delay)}
    links: list[str] = []
    delays: list[DelayPlan] = []
    for link in topo.links:
        left, right = link.left, link.right
        nsl, nsr = topo.netns(left.node), topo.netns(right.node)
        slow = delayed.get(right.node)
        if slow is None:
            links.append(
                f"link add {left.name} address {left.mac} netns {nsl} "
                f"type veth peer name {right.name} address {right.mac} netns {nsr}"
            )
            continue
        # Two veth pairs through the delay namespace; the forwarder there copies frames
        # unchanged, so the two nodes see one link (their static neighbours included).
        nsd = topo.netns(f"d{link.number}")
        a, b = f"d{link.number}-{left.node}", f"d{link.number}-{right.node}"
        links += [
            f"link add {left.name} address {left.mac} netns {nsl} type veth peer name {a} "
            f"netns {nsd}",
            f"link add {b} netns {nsd} type veth peer name {right.name} address {right.mac} "
            f"netns {nsr}",
        ]
        delays.append(
            DelayPlan(
                node=right.node,
                netns=nsd,
                client_side=a,
                server_side=b,
                ms=slow.ms,
                jitter_ms=slow.jitter_ms,
                addresses=(
                    "link set lo up",
                    f"link set {a} up promisc on",
                    f"link set {b} up promisc on",
                ),
            )
        )
    missing = set(delayed) - {d.node for d in delays}
    if missing:
        raise UsageError(f"scenario {scenario.name}: no link leads into {sorted(missing)[0]}")
    if len(delays) != len(delayed):
        raise UsageError(f"scenario {scenario.name}: a delay needs a node with one link in")
    nodes: list[NodePlan] = []
    v4s, v6s = topo.extra_targets()
    for node in topo.nodes:
        addresses = ["link set lo up"]
        small = _small_links(node.name, scenario.rules)
        for end in topo.interfaces(node.name):
            addresses += [
                f"addr add {end.ipv4} dev {end.name}",
                f"addr add {end.ipv6} dev {end.name} nodad",
                f"link set {end.name} up",
            ]
            if end.name in small:
                addresses.append(f"link set {end.name} mtu {small[end.name]}")
        if node.role is Role.SERVER:
            addresses += [f"addr add {a}/32 dev lo" for a in v4s]
            addresses += [f"addr add {a}/128 dev lo nodad" for a in v6s]
        # Static neighbours: a new interface answers neighbour solicitations only after
        # about a second, which would delay the first IPv6 packets of a fresh lab.
        routes = [
            f"neigh replace {addr} lladdr {peer.mac} dev {own.name} nud permanent"
            for own, peer in topo.peers(node.name)
            for addr in (peer.ipv4.ip, peer.ipv6.ip)
        ]
        for route in topo.routes(node.name):
            if len(route.gateways) == 1:
                ((via, dev),) = route.gateways
                routes.append(f"route add {route.prefix} via {via} dev {dev}")
            else:
                hops = " ".join(f"nexthop via {via} dev {dev}" for via, dev in route.gateways)
                routes.append(f"route add {route.prefix} {hops}")
        nodes.append(
            NodePlan(
                node=node.name,
                role=node.role,
                netns=topo.netns(node.name),
                sysctls=_sysctls(node.role, _limits(node.name, scenario.rules)),
                addresses=tuple(addresses),
                routes=tuple(routes),
                nft=nft_ruleset(topo, node.name, scenario.rules),
                iptables=iptables_rules(topo, node.name, scenario.rules),
            )
        )
    return LabPlan(
        topology=topo,
        scenario=scenario,
        services=services,
        links=tuple(links),
        nodes=tuple(nodes),
        delays=tuple(delays),
    )
