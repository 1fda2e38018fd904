"""Built-in lab scenarios as data: the rules each puts on the lab and its ground truth."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from reachtest.errors import UsageError
from reachtest.model import ICMP_FLOW, FlowSpec, Protocol, Reason, ServiceState, tcp, udp

DEFAULT_TCP_PORTS = (22, 80, 443, 8080)
DNS_PORT = 53
NTP_PORT = 123
#: The udp-quirks scenario's services that answer off the book: echo (RFC 862) and a
#: fixed banner whatever the request (like QOTD, RFC 865).
ECHO_PORT = 7
BANNER_PORT = 17
#: Nothing listens here: the ground truth's closed TCP and UDP flows.
CLOSED_PORT = 9
DEFAULT_LOSS_PCT = 20
MAX_DELAY_MS = 1000.0


class Action(StrEnum):
    """What a filter does to the packets it matches (the value is the CLI spelling)."""

    DROP = "drop"
    ADMIN_PROHIBITED = "admin-prohibited"
    PORT_UNREACHABLE = "port-unreachable"
    TCP_RESET = "tcp-reset"


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Filter one flow's probes at a node: forwarded ones on a router, arriving ones on the
    server. An ICMP filter matches echo requests."""

    node: str
    action: Action
    flow: FlowSpec

    def describe(self) -> str:
        what = "echo requests" if self.flow.protocol is Protocol.ICMP else str(self.flow)
        verb = "drops" if self.action is Action.DROP else f"rejects ({self.action})"
        return f"{self.node} {verb} {what}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Silent:
    """The node forwards but sends no ICMP time-exceeded."""

    node: str

    def describe(self) -> str:
        return f"{self.node} is silent (sends no time-exceeded)"


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """The node keeps ICMP rate limiting: kernel defaults, or ``ratelimit_ms`` per destination."""

    node: str
    ratelimit_ms: int | None = None

    def describe(self) -> str:
        how = "kernel defaults" if self.ratelimit_ms is None else f"{self.ratelimit_ms} ms"
        return f"{self.node} rate-limits ICMP errors ({how})"


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkLoss:
    """The node drops ``loss_pct`` % of the packets it forwards to ``towards`` (one
    direction); with ``flow``, of that flow's packets only (a policer)."""

    node: str
    towards: str
    loss_pct: int
    flow: FlowSpec | None = None

    def describe(self) -> str:
        what = "packets" if self.flow is None else f"{self.flow} packets"
        return f"{self.node} loses {self.loss_pct}% of {what} forwarded to {self.towards}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delay:
    """The link into ``node`` (from its neighbour nearer the client) delays every frame by
    ``ms`` each way, give or take ``jitter_ms``: a user-space forwarder between two veths in
    a namespace of its own (this kernel has no netem). Frames keep their order."""

    node: str
    ms: float
    jitter_ms: float = 0.0

    def describe(self) -> str:
        jitter = f" ± {self.jitter_ms:g}" if self.jitter_ms else ""
        return f"the link into {self.node} delays {self.ms:g}{jitter} ms each way"


class NatKind(StrEnum):
    """How a NAT rule translates (the value is the CLI spelling)."""

    #: nftables ``masquerade random``: conntrack, which also restores the headers quoted
    #: in ICMP errors (no packet the client receives shows the NAT).
    MASQUERADE = "masquerade"
    #: Stateless rewriting of the client's source address and port (echo identifier) on
    #: the way out and of the destination on the way in; ICMP payloads untouched.
    STATELESS = "stateless"


@dataclass(frozen=True, slots=True, kw_only=True)
class Nat:
    """The node translates the client's packets it forwards to ``towards`` (v4 and v6) to
    its own address on that link."""

    node: str
    towards: str
    kind: NatKind

    def describe(self) -> str:
        how = (
            "masquerades (conntrack, random ports)"
            if self.kind is NatKind.MASQUERADE
            else "rewrites source address and port statelessly (quotes of ICMP errors left as"
            " they are)"
        )
        return f"{self.node} {how} towards {self.towards}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mtu:
    """The link from the node to ``towards`` (both ends) has an MTU of ``mtu`` bytes (a
    tunnel, PPPoE, an overlay). ``black_hole``: the node and ``towards`` send no
    fragmentation-needed / packet-too-big about it (filtered, as so many firewalls do),
    so larger packets vanish silently in both directions."""

    node: str
    towards: str
    mtu: int
    black_hole: bool = False

    def describe(self) -> str:
        errors = (
            "; neither end sends frag-needed / packet-too-big (a PMTU black hole)"
            if self.black_hole
            else "; its router says so (frag-needed / packet-too-big)"
        )
        return f"the link {self.node} <-> {self.towards} has an MTU of {self.mtu}{errors}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rewrite:
    """The node rewrites a header field of what it forwards: the MSS option of TCP SYNs
    (``mss``: a clamp, as routers before a tunnel do) or the DSCP of every packet
    (``dscp``: a remarking router)."""

    node: str
    field: str  # mss | dscp
    value: int

    def describe(self) -> str:
        if self.field == "mss":
            return f"{self.node} clamps the MSS option of TCP SYNs it forwards to {self.value}"
        return f"{self.node} rewrites the DSCP of what it forwards to {self.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AckRewrite:
    """The node changes the acknowledgment number of the SYN-ACKs it forwards towards the
    client: a sequence randomiser that does not translate the answer back. (It turns the
    client kernel's RST to them back, so that the server's half-open connections close.)"""

    node: str

    def describe(self) -> str:
        return f"{self.node} rewrites the acknowledgment number of SYN-ACKs to the client"


class AppKind(StrEnum):
    """What an application filter reads in a request (the value is the CLI prefix)."""

    TLS = "sni"  # the server name of a TLS ClientHello, on tcp/443
    HTTP = "host"  # the Host header of an HTTP request, on tcp/80
    DNS = "qname"  # the name a DNS query asks for, on udp/53


#: How much later the server of ``tls-sni-inject`` answers a ClientHello (and that of
#: ``dns-qname-inject`` a query).
SLOW_TLS_MS = 20.0
#: The names the lab's application filters act on, and the control that passes.
TEST_NAME = "blocked.example"
CONTROL_NAME = "allowed.example"


@dataclass(frozen=True, slots=True, kw_only=True)
class _AppRule:
    """A rule on the requests that name ``name``: a TLS ClientHello with that server name
    (tcp/443) or an HTTP request with that Host (tcp/80), after the handshake; a DNS
    query for that name (udp/53)."""

    node: str
    kind: AppKind
    name: str

    @property
    def port(self) -> int:
        return {AppKind.TLS: 443, AppKind.HTTP: 80, AppKind.DNS: DNS_PORT}[self.kind]

    @property
    def protocol(self) -> str:
        return "udp" if self.kind is AppKind.DNS else "tcp"

    @property
    def pattern(self) -> str:
        """What a forwarded packet to the port is matched on: the server name anywhere in
        a segment, ``Host: NAME``, or (DNS) the name asked for."""
        return f"Host: {self.name}" if self.kind is AppKind.HTTP else self.name

    @property
    def wire_pattern(self) -> tuple[str, str]:
        """(iptables string-match option, its value) for ``pattern`` as it travels: a
        DNS name as its length-prefixed labels (``|07|blocked|07|example|00|``)."""
        if self.kind is not AppKind.DNS:
            return "--string", self.pattern
        labels = "".join(f"|{len(label):02x}|{label}" for label in self.name.split("."))
        return "--hex-string", f"{labels}|00|"

    @property
    def what(self) -> str:
        kind = {
            AppKind.TLS: "TLS ClientHellos naming",
            AppKind.HTTP: "HTTP requests for Host",
            AppKind.DNS: "DNS queries for",
        }[self.kind]
        return f"{kind} {self.name} ({self.protocol}/{self.port})"


@dataclass(frozen=True, slots=True, kw_only=True)
class AppFilter(_AppRule):
    """The node lets the TCP handshake through and then resets (a RST in the server's
    name) or drops the requests that carry the name (DNS: drops the queries). In-path:
    the request never reaches the server. (iptables' string match: nftables has no
    "payload contains".)"""

    action: Action  # DROP or TCP_RESET

    def describe(self) -> str:
        verb = "resets" if self.action is Action.TCP_RESET else "drops"
        return f"{self.node} {verb} {self.what}, after the handshake"


@dataclass(frozen=True, slots=True, kw_only=True)
class AppInjector(_AppRule):
    """An on-path box at the node: it sees a copy of every segment the node forwards to
    the server and, for a request that carries the name, injects a RST (DNS: a forged
    answer) in the server's name towards the client; the request itself travels on, and
    the server answers it (``lab/inject.py``)."""

    @property
    def forges(self) -> str:
        """What the injector sends (``lab/inject.py``'s kinds): a reset (TLS), a block
        page (HTTP), a DNS answer."""
        return {AppKind.TLS: "tcp", AppKind.HTTP: "page", AppKind.DNS: "dns"}[self.kind]

    def describe(self) -> str:
        forged = {AppKind.TLS: "a RST", AppKind.HTTP: "a block page", AppKind.DNS: "an answer"}[
            self.kind
        ]
        return (
            f"{self.node} sees copies of {self.what} and injects {forged} in the server's"
            " name; the request travels on (on-path)"
        )


Rule = (
    Filter | Silent | RateLimit | LinkLoss | Delay | Nat | AckRewrite | AppFilter | AppInjector
    | Mtu | Rewrite
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class MtuTruth:
    """The path MTU every flow must find: ``mtu`` bytes, limited by the link after hop
    ``hop`` (the router at ``hop`` cannot forward larger packets); ``black_hole``: no
    error says so, larger packets die silently after that hop."""

    mtu: int
    hop: int
    black_hole: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestTruth:
    """What a correct tool must conclude about a request sent after a completed
    handshake (DNS: a query): with ``name`` it is ``blocked`` (``reason``: reset, dropped
    or dns-injected) by the box at hop ``hop``, in-path (the server never sees it) or
    not; with the control name it is answered by the server. The SYN-level flow of the
    same port (DNS: its UDP flow) stays open."""

    kind: AppKind
    port: int
    name: str
    control: str
    blocked: bool
    reason: str  # reset | dropped | block-page | dns-injected
    hop: int | None
    in_path: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class BranchTruth:
    """One branch of the ECMP hop blocks ``flow``: the flows whose 5-tuple the fork hashes
    onto router ``node`` (at ``hop``) die there (``action``: drop or a reject), the others
    reach the server. Which branch one flow takes is the hash's choice: the truth of a
    single flow is either the clean one or the blocked one."""

    flow: FlowSpec
    node: str
    hop: int
    action: Action
    width: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowTruth:
    """What a correct tool must conclude about one flow.

    ``state`` is None for ICMP (a host, not a service). ``reason_hop`` is the hop of the
    node whose packet decides the flow (the server is ``hops + 1``; None when nothing
    answers). ``last_hop`` is the farthest hop that answers the flow's TTL-limited
    probes at all (time-exceeded, or the final answer). ``answer_ttl`` is the lowest TTL
    whose probes get the final answer (None when they get none): the server's distance
    for a reached flow, ``reason_hop + 1`` for a filter that answers (a router checks
    the TTL before its filter). ``reached`` is true when the target itself answered; a
    forged RST carries the server's address but does not count.
    """

    flow: FlowSpec
    state: ServiceState | None
    reason: Reason
    reason_hop: int | None
    last_hop: int
    answer_ttl: int | None
    reached: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class GroundTruth:
    """The expected result of tracing every flow through a scenario."""

    hops: int
    flows: tuple[FlowTruth, ...]
    silent_hops: tuple[int, ...] = ()
    ratelimited_hops: tuple[int, ...] = ()
    lossy_from_hop: int | None = None
    loss_pct: int = 0
    ecmp_hop: int | None = None
    #: Loss too light for every flow to show it (a few %): from this hop on forwarding-loss
    #: findings may appear, nowhere else, and none is required.
    light_loss_from_hop: int | None = None
    #: The server rate-limits its ICMP errors: port unreachable may go missing.
    ratelimited_server: bool = False
    #: One flow loses ``loss_pct`` % from this hop on (a policer); the others do not.
    policed: FlowSpec | None = None
    policed_from_hop: int | None = None
    #: A NAT at this router hop translates the client's packets going on; ``nat_seen``: it
    #: leaves quotes translated, so a NAT finding (hop ``nat_hop`` to ``nat_hop + 1``) is due.
    nat_hop: int | None = None
    nat_seen: bool = False
    #: SYN-ACKs reach the client acknowledging no SYN it sent (open all the same).
    ack_rewritten: bool = False
    #: Requests after the handshake (TLS, HTTP) that the scenario blocks by name.
    requests: tuple[RequestTruth, ...] = ()
    #: A link with a smaller MTU on the path (the interfaces' own is 1500).
    mtu: MtuTruth | None = None
    #: Header rewrites on the path: (the hop of the rewriting router, field, new value).
    rewrites: tuple[tuple[int, str, int], ...] = ()
    #: One branch of the ECMP hop blocks a flow (the others pass it).
    branch_block: BranchTruth | None = None
    #: Parallel routers at ``ecmp_hop``.
    ecmp_width: int = 2

    def loses(self, spec: FlowSpec, ttl: int) -> bool:
        """May a probe of ``spec`` at ``ttl`` be lost on purpose (a lossy link or policer)?"""
        lossy = self.lossy_from_hop or self.light_loss_from_hop
        if lossy is not None and ttl >= lossy:
            return True
        return (
            spec == self.policed and self.policed_from_hop is not None
            and ttl >= self.policed_from_hop
        )  # fmt: skip

    @property
    def noisy(self) -> bool:
        """Does chance decide some answers (loss, a policer, rate limits)? Then a test
        needs more rounds to conclude."""
        return (
            self.lossy_from_hop is not None
            or self.light_loss_from_hop is not None
            or self.policed is not None
            or bool(self.ratelimited_hops)
        )

    @property
    def server_hop(self) -> int:
        return self.hops + 1

    def flow(self, spec: FlowSpec) -> FlowTruth:
        for truth in self.flows:
            if truth.flow == spec:
                return truth
        raise KeyError(spec.label)

    def with_flow(self, spec: FlowSpec, **changes: object) -> GroundTruth:
        """A copy in which the truth of ``spec`` has ``changes``."""
        self.flow(spec)  # KeyError for a flow the truth does not cover
        flows = tuple(replace(t, **changes) if t.flow == spec else t for t in self.flows)  # type: ignore[arg-type]
        return replace(self, flows=flows)


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """What the server answers: TCP listeners, a DNS and an NTP responder."""

    tcp_ports: tuple[int, ...] = DEFAULT_TCP_PORTS
    dns_port: int = DNS_PORT
    ntp_port: int = NTP_PORT


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A named lab setting: rules on nodes, optional ECMP, and the truth to test against."""

    name: str
    description: str
    hops: int
    rules: tuple[Rule, ...]
    truth: GroundTruth
    ecmp_hop: int | None = None
    ecmp_width: int = 2
    #: The last branch reaches the next hop through one more router (``r3bx``).
    ecmp_long: bool = False
    #: Rules the user added with ``lab up --rule``: the truth does not cover them.
    extra_rules: tuple[str, ...] = ()
    #: The server's UDP services answer off the book (see ``_udp_quirks``).
    udp_quirks: bool = False
    #: The server waits this long before its TLS handshake answers: on a real path the
    #: server is milliseconds away and an on-path injector near the client wins the race
    #: with its reset; in the lab every link answers in microseconds.
    slow_tls_ms: float = 0.0
    #: The same for the server's HTTP and DNS answers.
    slow_http_ms: float = 0.0
    slow_dns_ms: float = 0.0


def clean_truth(hops: int, services: Services) -> GroundTruth:
    """Every flow reaches the server: open ports open, the closed port closed."""
    server = hops + 1

    def reached(flow: FlowSpec, state: ServiceState | None, reason: Reason) -> FlowTruth:
        return FlowTruth(
            flow=flow,
            state=state,
            reason=reason,
            reason_hop=server,
            last_hop=server,
            answer_ttl=server,
            reached=True,
        )

    flows = [reached(ICMP_FLOW, None, Reason.ECHO_REPLY)]
    flows += [reached(tcp(p), ServiceState.OPEN, Reason.SYN_ACK) for p in services.tcp_ports]
    flows += [
        reached(udp(services.dns_port), ServiceState.OPEN, Reason.UDP_RESPONSE),
        reached(udp(services.ntp_port), ServiceState.OPEN, Reason.UDP_RESPONSE),
        reached(tcp(CLOSED_PORT), ServiceState.CLOSED, Reason.RESET),
        reached(udp(CLOSED_PORT), ServiceState.CLOSED, Reason.PORT_UNREACH),
    ]
    return GroundTruth(hops=hops, flows=tuple(flows))


def middle(hops: int) -> int:
    """The router hop where single-fault scenarios act (3 of 5)."""
    return (hops + 1) // 2


def _silenced(state: ServiceState | None, last_hop: int) -> dict[str, object]:
    """The changes that make a flow's truth "nothing answers beyond ``last_hop``"."""
    return {
        "state": state,
        "reason": Reason.NO_RESPONSE,
        "reason_hop": None,
        "last_hop": last_hop,
        "answer_ttl": None,
        "reached": False,
    }


def _clean(hops: int, s: Services) -> Scenario:
    return Scenario(
        name="clean",
        description="no filters: every service answers, every router sends time-exceeded",
        hops=hops,
        rules=(),
        truth=clean_truth(hops, s),
    )


def _udp_quirks(hops: int, s: Services) -> Scenario:
    truth = clean_truth(hops, s)
    answered = truth.flow(udp(s.dns_port))  # open, a UDP answer from the server
    quirky = tuple(replace(answered, flow=udp(port)) for port in (ECHO_PORT, BANNER_PORT))
    return Scenario(
        name="udp-quirks",
        description=(
            f"clean paths; UDP services answer off the book: NTP on {s.ntp_port} leaves the"
            f" origin timestamp zero, udp/{ECHO_PORT} echoes, udp/{BANNER_PORT} sends a fixed"
            " banner: all open"
        ),
        hops=hops,
        rules=(),
        truth=replace(truth, flows=truth.flows + quirky),
        udp_quirks=True,
    )


def _tcp_drop(hops: int, s: Services) -> Scenario:
    m, flow = middle(hops), tcp(443)
    return Scenario(
        name="tcp-drop",
        description=f"r{m} silently drops tcp/443; ping and the other services pass",
        hops=hops,
        rules=(Filter(node=f"r{m}", action=Action.DROP, flow=flow),),
        truth=clean_truth(hops, s).with_flow(flow, **_silenced(ServiceState.FILTERED, m)),
    )


def _tcp_seq(hops: int, s: Services) -> Scenario:
    m = middle(hops)
    return Scenario(
        name="tcp-seq-rewrite",
        description=f"r{m} rewrites the acknowledgment number of SYN-ACKs to the client: the"
        " services answer, but not to any SYN the client sent",
        hops=hops,
        rules=(AckRewrite(node=f"r{m}"),),
        truth=replace(clean_truth(hops, s), ack_rewritten=True),
    )


def _tcp_admin(hops: int, s: Services) -> Scenario:
    m, flow = middle(hops), tcp(443)
    return Scenario(
        name="tcp-admin-prohibited",
        description=f"r{m} rejects tcp/443 with ICMP administratively prohibited",
        hops=hops,
        rules=(Filter(node=f"r{m}", action=Action.ADMIN_PROHIBITED, flow=flow),),
        truth=clean_truth(hops, s).with_flow(
            flow,
            state=ServiceState.FILTERED,
            reason=Reason.ADMIN_PROHIBITED,
            reason_hop=m,
            last_hop=m,
            answer_ttl=m + 1,
            reached=False,
        ),
    )


def _tcp_rst(hops: int, s: Services) -> Scenario:
    m, flow = middle(hops), tcp(443)
    return Scenario(
        name="tcp-rst-middlebox",
        description=f"r{m} forges a TCP RST (with the server's address) for tcp/443",
        hops=hops,
        rules=(Filter(node=f"r{m}", action=Action.TCP_RESET, flow=flow),),
        truth=clean_truth(hops, s).with_flow(
            flow,
            state=ServiceState.CLOSED,
            reason=Reason.RESET,
            reason_hop=m,
            last_hop=m,
            answer_ttl=m + 1,
            reached=False,
        ),
    )


def _icmp_blocked(hops: int, s: Services) -> Scenario:
    return Scenario(
        name="icmp-blocked",
        description="the server drops ICMP echo requests; its services answer",
        hops=hops,
        rules=(Filter(node="server", action=Action.DROP, flow=ICMP_FLOW),),
        truth=clean_truth(hops, s).with_flow(ICMP_FLOW, **_silenced(None, hops)),
    )


def _udp_drop(hops: int, s: Services) -> Scenario:
    m, flow = middle(hops), udp(s.dns_port)
    return Scenario(
        name="udp-drop",
        description=f"r{m} silently drops udp/{s.dns_port} (DNS)",
        hops=hops,
        rules=(Filter(node=f"r{m}", action=Action.DROP, flow=flow),),
        truth=clean_truth(hops, s).with_flow(flow, **_silenced(ServiceState.OPEN_FILTERED, m)),
    )


def _app(kind: AppKind, action: Action | None) -> Builder:
    """An application scenario: the middle router resets or drops (``action``) the
    requests naming TEST_NAME after the handshake (DNS: the queries), or (``None``) sees
    copies of them and injects a reset (DNS: an answer) on-path; the control passes and
    the port is open at the SYN (DNS: udp/53 answers)."""

    def build(hops: int, s: Services) -> Scenario:
        m = middle(hops)
        rule: AppFilter | AppInjector = (
            AppInjector(node=f"r{m}", kind=kind, name=TEST_NAME)
            if action is None
            else AppFilter(node=f"r{m}", action=action, kind=kind, name=TEST_NAME)
        )
        if kind is AppKind.DNS:
            if s.dns_port != rule.port:
                raise UsageError(f"this scenario needs the server's DNS on udp/{rule.port}")
        elif rule.port not in s.tcp_ports:
            raise UsageError(f"this scenario needs tcp/{rule.port} among the server's ports")
        protocol = {AppKind.TLS: "tls", AppKind.HTTP: "http", AppKind.DNS: "dns"}[kind]
        verb = {None: "inject", Action.TCP_RESET: "reset"}.get(action, "drop")
        # On-path, the server answers a ClientHello (a query) late, as a real server's
        # takes time: the injected reset (answer) wins the race on a busy machine too.
        slow = SLOW_TLS_MS if action is None else 0.0
        what = {AppKind.TLS: "a ClientHello", AppKind.HTTP: "a request", AppKind.DNS: "a query"}[
            kind
        ]
        late = f"; the server answers {what} {slow:g} ms later" if slow else ""
        open_at = f"udp/{rule.port} answers" if kind is AppKind.DNS else (
            f"tcp/{rule.port} is open at the SYN"
        )  # fmt: skip
        passes = "the control name" if kind is AppKind.DNS else "the handshake and the control name"
        if action is None:
            reason = {AppKind.TLS: "reset", AppKind.HTTP: "block-page"}.get(kind, "dns-injected")
        else:
            reason = "dropped" if action is Action.DROP else "reset"
        return Scenario(
            name=f"{protocol}-{kind}-{verb}",
            description=f"{rule.describe()}{late}; {passes} {CONTROL_NAME} pass: {open_at}",
            hops=hops,
            rules=(rule,),
            slow_tls_ms=slow if kind is AppKind.TLS else 0.0,
            slow_http_ms=slow if kind is AppKind.HTTP else 0.0,
            slow_dns_ms=slow if kind is AppKind.DNS else 0.0,
            truth=replace(
                clean_truth(hops, s),
                requests=(
                    RequestTruth(
                        kind=kind,
                        port=rule.port,
                        name=TEST_NAME,
                        control=CONTROL_NAME,
                        blocked=True,
                        reason=reason,
                        hop=m,
                        in_path=action is not None,
                    ),
                ),
            ),
        )

    return build


#: The MTU of the small link of the mtu scenarios (a common tunnel's).
SMALL_MTU = 1400


def _mtu(black_hole: bool) -> Builder:
    """The link after the middle router has an MTU of SMALL_MTU; its routers report it
    (frag-needed, packet-too-big), or (``black_hole``) not."""

    def build(hops: int, s: Services) -> Scenario:
        m = middle(hops)
        rule = Mtu(
            node=f"r{m}", towards=f"r{m + 1}" if m < hops else "server", mtu=SMALL_MTU,
            black_hole=black_hole,
        )  # fmt: skip
        effect = (
            "larger packets vanish there in both directions without an error: small packets"
            " and handshakes pass, big segments and transfers stall"
            if black_hole
            else "larger packets with DF set get frag-needed / packet-too-big from r"
            f"{m} (r{m + 1} the other way)"
        )
        return Scenario(
            name="mtu-blackhole" if black_hole else "mtu",
            description=f"{rule.describe()}; {effect}",
            hops=hops,
            rules=(rule,),
            truth=replace(
                clean_truth(hops, s), mtu=MtuTruth(mtu=SMALL_MTU, hop=m, black_hole=black_hole)
            ),
        )

    return build


#: The MSS the mss-clamp scenario's router clamps SYNs to; the DSCP dscp-rewrite sets.
CLAMPED_MSS = 1200
REMARKED_DSCP = 8  # CS1


def _rewrite(field: str, value: int) -> Builder:
    def build(hops: int, s: Services) -> Scenario:
        m = middle(hops)
        rule = Rewrite(node=f"r{m}", field=field, value=value)
        return Scenario(
            name="mss-clamp" if field == "mss" else "dscp-rewrite",
            description=f"{rule.describe()}; every flow passes",
            hops=hops,
            rules=(rule,),
            truth=replace(clean_truth(hops, s), rewrites=((m, field, value),)),
        )

    return build


def _ratelimited(hops: int, s: Services) -> Scenario:
    m = middle(hops)
    return Scenario(
        name="ratelimited-hop",
        description=f"r{m} keeps the kernel's ICMP rate limits: bursts to it lose answers",
        hops=hops,
        rules=(RateLimit(node=f"r{m}"),),
        truth=replace(clean_truth(hops, s), ratelimited_hops=(m,)),
    )


def _ratelimited_path(hops: int, s: Services) -> Scenario:
    m, flow = middle(hops), tcp(443)
    nodes = [f"r{i}" for i in range(1, hops + 1)] + ["server"]
    return Scenario(
        name="ratelimited-path",
        description=f"every router and the server keep the kernel's ICMP rate limits (about "
        f"1 error/s after a burst of 6, v4 and v6) like real paths; r{m} silently drops tcp/443",
        hops=hops,
        rules=(
            *(RateLimit(node=node) for node in nodes),
            Filter(node=f"r{m}", action=Action.DROP, flow=flow),
        ),
        truth=replace(
            clean_truth(hops, s).with_flow(flow, **_silenced(ServiceState.FILTERED, m)),
            ratelimited_hops=tuple(range(1, hops + 1)),
            ratelimited_server=True,
        ),
    )


WAN_LOSS_PCT = 3


def _wan(hops: int, s: Services) -> Scenario:
    if hops < 4:
        raise UsageError("scenario 'wan' needs at least 4 hops")
    m, flow = middle(hops), tcp(443)
    quiet, far = 2, hops - 1  # r2 sends no time-exceeded; the link r4 -> r5 delays 30 ms
    after = f"r{far + 1}" if far < hops else "server"
    nodes = [f"r{i}" for i in range(1, hops + 1)] + ["server"]
    return Scenario(
        name="wan",
        description=f"like a WAN: every node keeps the kernel's ICMP rate limits, the links "
        f"into r{quiet} and r{far} delay 20 and 30 ms each way, r{quiet} sends no "
        f"time-exceeded, r{far} loses {WAN_LOSS_PCT}% towards {after}, r{m} drops tcp/443",
        hops=hops,
        rules=(
            *(RateLimit(node=node) for node in nodes if node != f"r{quiet}"),
            Delay(node=f"r{quiet}", ms=20, jitter_ms=1),
            Delay(node=f"r{far}", ms=30, jitter_ms=2),
            Silent(node=f"r{quiet}"),
            LinkLoss(node=f"r{far}", towards=after, loss_pct=WAN_LOSS_PCT),
            Filter(node=f"r{m}", action=Action.DROP, flow=flow),
        ),
        truth=replace(
            clean_truth(hops, s).with_flow(flow, **_silenced(ServiceState.FILTERED, m)),
            silent_hops=(quiet,),
            ratelimited_hops=tuple(i for i in range(1, hops + 1) if i != quiet),
            ratelimited_server=True,
            light_loss_from_hop=far + 1,
        ),
    )


def _silent(hops: int, s: Services) -> Scenario:
    m = middle(hops)
    return Scenario(
        name="silent-hop",
        description=f"r{m} forwards everything but never sends time-exceeded",
        hops=hops,
        rules=(Silent(node=f"r{m}"),),
        truth=replace(clean_truth(hops, s), silent_hops=(m,)),
    )


def _lossy(hops: int, s: Services) -> Scenario:
    m = middle(hops)
    after = f"r{m + 1}" if m < hops else "server"
    return Scenario(
        name="lossy-link",
        description=f"the link r{m} -> {after} loses {DEFAULT_LOSS_PCT}% of packets "
        "towards the server (no delay: this kernel has no netem)",
        hops=hops,
        rules=(LinkLoss(node=f"r{m}", towards=after, loss_pct=DEFAULT_LOSS_PCT),),
        truth=replace(clean_truth(hops, s), lossy_from_hop=m + 1, loss_pct=DEFAULT_LOSS_PCT),
    )


#: The policer scenario drops this share of one flow only.
POLICED_PCT = 30


def _policer(hops: int, s: Services) -> Scenario:
    m, flow = middle(hops), tcp(443)
    after = f"r{m + 1}" if m < hops else "server"
    return Scenario(
        name="policer",
        description=f"r{m} drops {POLICED_PCT}% of {flow} towards {after} (nftables numgen),"
        " every other flow passes cleanly: a policer, not a lossy link",
        hops=hops,
        rules=(LinkLoss(node=f"r{m}", towards=after, loss_pct=POLICED_PCT, flow=flow),),
        truth=replace(
            clean_truth(hops, s), policed=flow, policed_from_hop=m + 1, loss_pct=POLICED_PCT
        ),
    )


def _nat(kind: NatKind) -> Builder:
    def build(hops: int, s: Services) -> Scenario:
        if hops < 3:
            raise UsageError(f"scenario 'nat-{kind}' needs at least 3 hops")
        dropped = _tcp_drop(hops, s)
        m = middle(hops)
        nat = Nat(node=f"r{m - 1}", towards=f"r{m}", kind=kind)
        seen = kind is NatKind.STATELESS
        return Scenario(
            name=f"nat-{kind}",
            description=f"{nat.describe()}; r{m} silently drops tcp/443"
            + ("" if seen else " (the NAT restores quotes: invisible to the client)"),
            hops=hops,
            rules=(nat, *dropped.rules),
            truth=replace(dropped.truth, nat_hop=m - 1, nat_seen=seen),
        )

    return build


def _ecmp(hops: int, s: Services) -> Scenario:
    m = middle(hops)
    return Scenario(
        name="ecmp",
        description=f"two parallel routers at hop {m} (r{m}a, r{m}b), L4 hash: "
        "flows with different ports may take different paths",
        hops=hops,
        rules=(),
        truth=replace(clean_truth(hops, s), ecmp_hop=m),
        ecmp_hop=m,
    )


def _ecmp_branch(action: Action, width: int) -> Builder:
    """``width`` parallel routers at the middle hop; the last of them blocks tcp/443
    (``action``), the others forward it: one flow in ``width`` dies there."""
    blocked = {Action.DROP: "silently drops", Action.ADMIN_PROHIBITED: "rejects"}[action]

    def build(hops: int, s: Services) -> Scenario:
        m, flow = middle(hops), tcp(443)
        names = [f"r{m}{b}" for b in "abc"[:width]]
        node = names[-1]
        truth = replace(
            clean_truth(hops, s),
            ecmp_hop=m,
            ecmp_width=width,
            branch_block=BranchTruth(flow=flow, node=node, hop=m, action=action, width=width),
        )
        return Scenario(
            name=f"ecmp{'3' if width == 3 else ''}-branch-"
            + ("drop" if action is Action.DROP else "reject"),
            description=f"{width} parallel routers at hop {m} ({', '.join(names)}), L4 hash;"
            f" {node} {blocked} tcp/443: one connection in {width} fails, depending on its"
            " source port",
            hops=hops,
            rules=(Filter(node=node, action=action, flow=flow),),
            truth=truth,
            ecmp_hop=m,
            ecmp_width=width,
        )

    return build


def _ecmp_uneven(hops: int, s: Services) -> Scenario:
    """Two branches at the middle hop, the second one router longer (r3b, r3bx); the
    extra router drops tcp/443: flows hashed onto the long branch die one hop later
    than the short branch's routers, and the server is one hop farther for them."""
    m, flow = middle(hops), tcp(443)
    node = f"r{m}bx"
    truth = replace(
        clean_truth(hops, s),
        ecmp_hop=m,
        branch_block=BranchTruth(flow=flow, node=node, hop=m + 1, action=Action.DROP, width=2),
    )
    return Scenario(
        name="ecmp-uneven-drop",
        description=f"2 parallel routers at hop {m} (r{m}a, r{m}b), L4 hash; r{m}b's branch is"
        f" one router longer ({node}, hop {m + 1}), which silently drops tcp/443: one"
        " connection in 2 fails, and the server is one hop farther on that branch",
        hops=hops,
        rules=(Filter(node=node, action=Action.DROP, flow=flow),),
        truth=truth,
        ecmp_hop=m,
        ecmp_long=True,
    )


def _combo(hops: int, s: Services) -> Scenario:
    if hops < 3:
        raise UsageError("scenario 'combo' needs at least 3 hops")
    m = middle(hops)
    dns, web, alt = udp(s.dns_port), tcp(443), tcp(8080)
    truth = (
        clean_truth(hops, s)
        .with_flow(
            dns,
            state=ServiceState.FILTERED,
            reason=Reason.ADMIN_PROHIBITED,
            reason_hop=m - 1,
            last_hop=m - 1,
            answer_ttl=m,
            reached=False,
        )
        .with_flow(web, **_silenced(ServiceState.FILTERED, m))
        .with_flow(
            alt,
            state=ServiceState.CLOSED,
            reason=Reason.RESET,
            reason_hop=m + 1,
            last_hop=m + 1,
            answer_ttl=m + 2,
            reached=False,
        )
    )
    return Scenario(
        name="combo",
        description=f"r{m - 1} rejects udp/{s.dns_port} (admin-prohibited), r{m} drops tcp/443, "
        f"r{m + 1} forges RSTs for tcp/8080; ping, tcp/22, tcp/80 pass",
        hops=hops,
        rules=(
            Filter(node=f"r{m - 1}", action=Action.ADMIN_PROHIBITED, flow=dns),
            Filter(node=f"r{m}", action=Action.DROP, flow=web),
            Filter(node=f"r{m + 1}", action=Action.TCP_RESET, flow=alt),
        ),
        truth=truth,
    )


Builder = Callable[[int, Services], Scenario]

#: name -> builder, in the order ``lab list`` shows them.
SCENARIOS: dict[str, Builder] = {
    "clean": _clean,
    "tcp-drop": _tcp_drop,
    "tcp-admin-prohibited": _tcp_admin,
    "tcp-rst-middlebox": _tcp_rst,
    "tcp-seq-rewrite": _tcp_seq,
    "icmp-blocked": _icmp_blocked,
    "udp-drop": _udp_drop,
    "udp-quirks": _udp_quirks,
    "ratelimited-hop": _ratelimited,
    "ratelimited-path": _ratelimited_path,
    "wan": _wan,
    "silent-hop": _silent,
    "lossy-link": _lossy,
    "policer": _policer,
    "nat-masquerade": _nat(NatKind.MASQUERADE),
    "nat-stateless": _nat(NatKind.STATELESS),
    "ecmp": _ecmp,
    "ecmp-branch-drop": _ecmp_branch(Action.DROP, 2),
    "ecmp-branch-reject": _ecmp_branch(Action.ADMIN_PROHIBITED, 2),
    "ecmp3-branch-drop": _ecmp_branch(Action.DROP, 3),
    "ecmp-uneven-drop": _ecmp_uneven,
    "combo": _combo,
    "tls-sni-reset": _app(AppKind.TLS, Action.TCP_RESET),
    "http-host-drop": _app(AppKind.HTTP, Action.DROP),
    "tls-sni-inject": _app(AppKind.TLS, None),
    "http-host-inject": _app(AppKind.HTTP, None),
    "mtu": _mtu(False),
    "mtu-blackhole": _mtu(True),
    "mss-clamp": _rewrite("mss", CLAMPED_MSS),
    "dscp-rewrite": _rewrite("dscp", REMARKED_DSCP),
    "dns-qname-drop": _app(AppKind.DNS, Action.DROP),
    "dns-qname-inject": _app(AppKind.DNS, None),
}


def scenario(name: str, hops: int, services: Services | None = None) -> Scenario:
    """The built-in scenario ``name`` laid out for a lab of ``hops`` routers."""
    try:
        builder = SCENARIOS[name]
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise UsageError(f"no scenario {name!r}; known scenarios: {known}") from None
    return builder(hops, services or Services())


RULE_SYNTAX = (
    "NODE:drop|admin-prohibited|port-unreachable|tcp-reset:FLOW (FLOW = tcp/PORT, "
    "udp/PORT or icmp), NODE:silent, NODE:ratelimit[:MS], NODE:loss:PERCENT[:FLOW], "
    "NODE:delay:MS[:JITTER_MS] (the link into NODE), NODE:nat:masquerade|stateless, "
    "NODE:ack-rewrite, NODE:sni-reset|sni-drop|host-reset|host-drop|qname-drop:NAME, "
    "NODE:sni-inject|host-inject|qname-inject:NAME, NODE:mtu:BYTES[:blackhole] (the link "
    "from NODE towards the server), NODE:mss:BYTES, NODE:dscp:VALUE"
)
_APP_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def _parse_flow(text: str) -> FlowSpec:
    if text == "icmp":
        return ICMP_FLOW
    proto, _, port = text.partition("/")
    if proto not in ("tcp", "udp") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"bad flow {text!r}: use tcp/PORT, udp/PORT (1-65535) or icmp")
    return tcp(int(port)) if proto == "tcp" else udp(int(port))


def parse_rule(text: str, hops: int) -> Rule:
    """A rule from its command-line spelling, e.g. ``r2:drop:tcp/22`` or ``r4:silent``."""
    parts = text.strip().split(":")
    node, what, args = parts[0], parts[1] if len(parts) > 1 else "", parts[2:]
    bad = UsageError(f"bad --rule {text!r}: use {RULE_SYNTAX}")
    if not node or not what:
        raise bad
    if what in {a.value for a in Action}:
        if len(args) != 1:
            raise bad
        try:
            flow = _parse_flow(args[0])
        except UsageError as exc:
            raise UsageError(f"bad --rule {text!r}: {exc}") from None
        return Filter(node=node, action=Action(what), flow=flow)
    if what == "ack-rewrite" and not args:
        return AckRewrite(node=node)
    if what in ("sni-inject", "host-inject", "qname-inject") and len(args) == 1:
        if not _APP_NAME.fullmatch(args[0]):
            raise UsageError(f"bad --rule {text!r}: the name is letters, digits, . and -")
        hop = int(node[1:]) if node[:1] == "r" and node[1:].isdigit() else None
        if hop is None or not 1 <= hop <= hops:
            raise UsageError(f"bad --rule {text!r}: an injector goes on a router r1 .. r{hops}")
        return AppInjector(node=node, kind=AppKind(what.partition("-")[0]), name=args[0])
    kind_word, _, verb = what.partition("-")
    verbs = ("drop",) if kind_word == AppKind.DNS else ("reset", "drop")
    if kind_word in {k.value for k in AppKind} and verb in verbs and len(args) == 1:
        if not _APP_NAME.fullmatch(args[0]):
            raise UsageError(f"bad --rule {text!r}: the name is letters, digits, . and -")
        action = Action.TCP_RESET if verb == "reset" else Action.DROP
        return AppFilter(node=node, action=action, kind=AppKind(kind_word), name=args[0])
    if what in ("mss", "dscp") and len(args) == 1 and args[0].isdigit():
        high = 65535 if what == "mss" else 63
        if not (536 if what == "mss" else 0) <= int(args[0]) <= high:
            raise UsageError(f"bad --rule {text!r}: {what} is a number up to {high}")
        return Rewrite(node=node, field=what, value=int(args[0]))
    if what == "mtu" and len(args) in (1, 2) and args[0].isdigit():
        hop = int(node[1:]) if node[:1] == "r" and node[1:].isdigit() else None
        if hop is None or not 1 <= hop <= hops:
            raise UsageError(f"bad --rule {text!r}: a small link starts at a router r1 .. r{hops}")
        if not 1280 <= int(args[0]) <= 1500 or args[1:] not in ([], ["blackhole"]):
            raise UsageError(
                f"bad --rule {text!r}: NODE:mtu:BYTES[:blackhole], 1280 <= BYTES <= 1500"
            )
        return Mtu(
            node=node, towards="server" if hop == hops else f"r{hop + 1}", mtu=int(args[0]),
            black_hole=args[1:] == ["blackhole"],
        )  # fmt: skip
    if what == "silent" and not args:
        return Silent(node=node)
    if what == "ratelimit" and len(args) <= 1:
        if args and not args[0].isdigit():
            raise bad
        return RateLimit(node=node, ratelimit_ms=int(args[0]) if args else None)
    if what == "delay" and 1 <= len(args) <= 2:
        try:
            ms, jitter = float(args[0]), float(args[1]) if len(args) == 2 else 0.0
        except ValueError:
            raise bad from None
        if not (0 < ms <= MAX_DELAY_MS and 0 <= jitter < ms):
            raise UsageError(
                f"bad --rule {text!r}: delay is 0 < MS <= {MAX_DELAY_MS} ms, jitter below it"
            )
        return Delay(node=node, ms=ms, jitter_ms=jitter)
    if what == "nat" and len(args) == 1 and args[0] in {k.value for k in NatKind}:
        hop = int(node[1:]) if node[:1] == "r" and node[1:].isdigit() else None
        if hop is None or not 1 <= hop < hops:
            raise UsageError(f"bad --rule {text!r}: a NAT goes on a router r1 .. r{hops - 1}")
        return Nat(node=node, towards=f"r{hop + 1}", kind=NatKind(args[0]))
    if what == "loss" and len(args) in (1, 2) and args[0].isdigit() and 0 < int(args[0]) <= 100:
        hop = int(node[1:]) if node[:1] == "r" and node[1:].isdigit() else None
        if hop is None or not 1 <= hop <= hops:
            raise UsageError(f"bad --rule {text!r}: loss goes on a router r1 .. r{hops}")
        policed = None
        if len(args) == 2:  # a policer: that flow only
            try:
                policed = _parse_flow(args[1])
            except UsageError as exc:
                raise UsageError(f"bad --rule {text!r}: {exc}") from None
            if policed.protocol is Protocol.ICMP:
                raise UsageError(f"bad --rule {text!r}: a policer takes tcp/PORT or udp/PORT")
        return LinkLoss(
            node=node,
            towards="server" if hop == hops else f"r{hop + 1}",
            loss_pct=int(args[0]),
            flow=policed,
        )
    raise bad


def with_extra_rules(base: Scenario, specs: tuple[str, ...]) -> Scenario:
    """``base`` with the user's ``--rule`` specs added after its own rules."""
    if not specs:
        return base
    extra = tuple(parse_rule(spec, base.hops) for spec in specs)
    return replace(base, rules=base.rules + extra, extra_rules=specs)
