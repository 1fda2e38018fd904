"""Frozen records and string enums shared by every layer: the project's vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Protocol(StrEnum):
    """What a probe carries; the value is the CLI and JSON spelling."""

    ICMP = "icmp"
    TCP = "tcp"
    UDP = "udp"


class ReplyKind(StrEnum):
    """What came back for one probe (``timeout`` when nothing did)."""

    ECHO_REPLY = "echo-reply"
    TIME_EXCEEDED = "time-exceeded"
    PORT_UNREACHABLE = "port-unreachable"
    ADMIN_PROHIBITED = "admin-prohibited"
    NET_UNREACHABLE = "net-unreachable"
    HOST_UNREACHABLE = "host-unreachable"
    PROTOCOL_UNREACHABLE = "protocol-unreachable"
    UNREACHABLE = "unreachable"
    #: ICMPv4 fragmentation needed (type 3 code 4) and ICMPv6 packet too big: the probe
    #: is larger than the next link's MTU, which the message names.
    FRAG_NEEDED = "frag-needed"
    PACKET_TOO_BIG = "packet-too-big"
    #: ICMP time exceeded code 1 (fragment reassembly): not a hop where the TTL ran out.
    REASSEMBLY_TIMEOUT = "reassembly-timeout"
    TCP_SYN_ACK = "tcp-syn-ack"
    TCP_RST = "tcp-rst"
    UDP_REPLY = "udp-reply"
    TIMEOUT = "timeout"


class ServiceState(StrEnum):
    """nmap's port states, because admins know them."""

    OPEN = "open"
    CLOSED = "closed"
    FILTERED = "filtered"
    OPEN_FILTERED = "open|filtered"
    #: Some flow hashes reach the service, others die on one branch of a load-balanced
    #: path (``trace --mda``): nmap's words run out here.
    PARTIALLY_FILTERED = "partially-filtered"


class Reason(StrEnum):
    """Why a flow ended as it did (nmap's ``--reason`` vocabulary, plus echo)."""

    ECHO_REPLY = "echo-reply"
    SYN_ACK = "syn-ack"
    RESET = "reset"
    UDP_RESPONSE = "udp-response"
    PORT_UNREACH = "port-unreach"
    ADMIN_PROHIBITED = "admin-prohibited"
    NET_UNREACH = "net-unreach"
    HOST_UNREACH = "host-unreach"
    PROTO_UNREACH = "proto-unreach"
    UNREACH = "unreach"
    FRAG_NEEDED = "frag-needed"  # too big for the next link (v4 frag-needed, v6 too big)
    NO_RESPONSE = "no-response"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class FlowSpec:
    """A protocol and, for TCP and UDP, a destination port: ``icmp``, ``tcp/443``."""

    protocol: Protocol
    port: int | None = None

    @property
    def label(self) -> str:
        """The spelling used in tables, JSON and the CLI."""
        return str(self.protocol) if self.port is None else f"{self.protocol}/{self.port}"

    def __str__(self) -> str:
        return self.label


ICMP_FLOW = FlowSpec(protocol=Protocol.ICMP)


def tcp(port: int) -> FlowSpec:
    """The TCP flow to ``port``."""
    return FlowSpec(protocol=Protocol.TCP, port=port)


def udp(port: int) -> FlowSpec:
    """The UDP flow to ``port``."""
    return FlowSpec(protocol=Protocol.UDP, port=port)


class Extra(StrEnum):
    """A reply beyond the first for one probe: recorded, never counted twice."""

    DUPLICATE = "duplicate"
    LATE = "late"


#: The state of every flow of a scheduled target whose name did not resolve: nothing was
#: sent to it (run records, the history, diff and the metrics say so).
UNRESOLVED = "unresolved"


class StrayReason(StrEnum):
    """Why a received packet was attributed to no probe."""

    UNKNOWN_FLOW = "unknown-flow"
    UNKNOWN_PROBE = "unknown-probe"
    INCONSISTENT = "inconsistent-quote"
    EARLY = "before-send"
    MALFORMED = "malformed"
    UNRELATED = "unrelated-traffic"


@dataclass(frozen=True, slots=True, kw_only=True)
class MplsLabel:
    """One RFC 4950 MPLS label stack entry quoted in an ICMP extension."""

    label: int
    tc: int
    bottom: bool
    ttl: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One probe and what came back for it: a reply, or ``timeout``.

    ``extra`` is None for the outcome that counts; a duplicate or late reply to the
    same probe is recorded as a further Outcome with ``extra`` set.
    """

    target: str
    flow: FlowSpec
    ttl: int
    round: int
    probe_id: int
    sent_ns: int
    kind: ReplyKind
    responder: str | None = None
    recv_ns: int | None = None
    reply_ttl: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    tcp_flags: int | None = None
    quote_ttl: int | None = None
    quote_changed: tuple[str, ...] = ()
    #: The source address and port (or echo identifier) the quote shows, when a NAT
    #: changed them and did not restore them (``quote_changed`` has ``src``/``port``).
    quote_src: str | None = None
    quote_port: int | None = None
    mpls: tuple[MplsLabel, ...] = ()
    exact: bool = True
    extra: Extra | None = None
    #: Sent alone, after its router's budget refilled, to tell a filter from a rate limit.
    proof: bool = False

    @property
    def rtt_ns(self) -> int | None:
        """Round-trip time, or None for a timeout."""
        return None if self.recv_ns is None else self.recv_ns - self.sent_ns


@dataclass(frozen=True, slots=True, kw_only=True)
class Stray:
    """A received reply that answers none of our probes, with the reason."""

    reason: StrayReason
    recv_ns: int
    responder: str | None
    summary: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceParams:
    """How a trace probes: mtr's names where they exist."""

    first_ttl: int = 1
    max_ttl: int = 30
    rounds: int = 10
    interval_s: float = 1.0
    timeout_s: float = 2.0
    max_in_flight: int = 4096
    rate_pps: float = 5000.0
    gap_limit: int = 5
    fast: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class HopBudget:
    """What the engine learned of one responder's ICMP-error budget.

    ``limited``: probes of flows that get past it went unanswered while it answered
    others sent within a second (``missed`` of them). ``rate_per_s`` (answers per second
    once its burst was spent) and ``burst`` are estimates, None when not limited.
    ``held``: probes the engine did not send to stay within the budget.
    """

    address: str
    limited: bool
    rate_per_s: float | None
    burst: int | None
    answered: int
    missed: int
    held: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """Everything one engine run produced: its parameters, every outcome, every stray."""

    params: TraceParams
    targets: tuple[str, ...]
    flows: tuple[FlowSpec, ...]
    started_ns: int
    finished_ns: int
    outcomes: tuple[Outcome, ...]
    extras: tuple[Outcome, ...]
    strays: tuple[Stray, ...]
    stray_counts: tuple[tuple[str, int], ...]
    sent: int
    interrupted: bool = False
    budgets: tuple[HopBudget, ...] = ()
    #: Duplicate or late replies beyond those kept in ``extras`` (a long run keeps few).
    extras_dropped: int = 0
    #: Packets the kernel dropped before we read them (receive buffer full); None when
    #: the transport cannot tell.
    kernel_dropped: int | None = None
    #: Replies whose ICMP/TCP/UDP checksum did not hold, ignored (the host drops them too).
    bad_checksums: int = 0


class StopReason(StrEnum):
    """Why a flow's path ends where it does."""

    REACHED_OPEN = "reached-open"
    REACHED_CLOSED = "reached-closed"
    REACHED_ANSWERED = "reached-answered"
    MIDDLEBOX = "middlebox"
    ADMIN_PROHIBITED = "admin-prohibited"
    UNREACHABLE = "unreachable"
    SILENT = "silent"
    GAP_LIMIT = "gap-limit"
    MAX_TTL = "max-ttl"


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowPath:
    """Where one flow's probes got to: the target's distance, the last hop that answered,
    and why the path ends there (``stop_hop``/``stop_address``: who ended it)."""

    target: str
    flow: FlowSpec
    distance: int | None
    last_hop: int | None
    last_address: str | None
    stop: StopReason
    stop_hop: int | None
    stop_address: str | None
    icmp_code: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceVerdict:
    """One flow's verdict in nmap's terms: state, reason, and the address and hop that gave it.

    ``state`` is None for ICMP (a host, not a service). ``rounds`` counts the rounds whose
    probes at the deciding TTL agree with the reason, out of ``rounds_probed``.
    """

    target: str
    flow: FlowSpec
    state: ServiceState | None
    reason: Reason
    reason_address: str | None
    reason_hop: int | None
    reached: bool
    rounds: int
    rounds_probed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HostVerdict:
    """Is the host there at all, by any flow? And do ping and the services disagree?"""

    target: str
    reachable: bool
    distance: int | None
    reached_by: tuple[FlowSpec, ...]
    ping_blocked_services_answer: bool
    ping_answers_services_blocked: bool


class FindingKind(StrEnum):
    """What a finding is about; the value is its JSON spelling."""

    HOST_NOT_REACHED = "host-not-reached"
    BLOCKED_SILENTLY = "blocked-silently"
    BLOCKED_PROHIBITED = "blocked-prohibited"
    UNREACHABLE = "unreachable"
    NO_ANSWER_AT_TARGET = "no-answer-at-target"
    FORGED_RESET = "forged-reset"
    SYN_PROXY = "syn-proxy"
    PING_BLOCKED = "ping-blocked"
    FORWARDING_LOSS = "forwarding-loss"
    RATE_LIMITING = "icmp-rate-limiting"
    QUOTE_REWRITTEN = "quote-rewritten"
    NAT = "nat"
    SEQUENCE_REWRITTEN = "sequence-rewritten"
    ECMP = "ecmp"
    SILENT_HOP = "silent-hop"
    #: A request after a completed handshake (tls/PORT, http/PORT): blocked, or answered.
    BLOCKED_AFTER_HANDSHAKE = "blocked-after-handshake"
    REQUEST_ANSWERED = "request-answered"


class Severity(StrEnum):
    """How urgently an admin must read a finding."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """One observation behind a finding: what ``flow`` got at ``ttl``, in how many rounds."""

    flow: FlowSpec
    ttl: int
    kind: ReplyKind
    responder: str | None
    count: int
    of: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """Something an admin needs to know, as data; the report layer words it.

    ``first_hop``..``last_hop`` is where it happens (a range when it cannot be placed
    more precisely); ``confidence`` (0..1) grows with the rounds that agree.
    """

    kind: FindingKind
    severity: Severity
    target: str
    flow: FlowSpec | None
    first_hop: int | None
    last_hop: int | None
    responder: str | None
    confidence: float
    evidence: tuple[Evidence, ...]
    note: str = ""
