"""The matcher: a pure function from a parsed reply to the probe it answers, or a stray reason.

A reply is attributed only when its flow (protocol, target, ports or ICMP identifier)
is one of ours, the probe it names was sent, and every identity field it shows agrees
(IPv4 ID, sequence halves, payload words, checksum). Anything else is a stray with a
reason, never a guess (mtr #375 is the bug this avoids).

Behind a NAT that does not restore the headers quoted in ICMP errors, the quote shows
the translated source address and port: such an error is matched by the service it
names (protocol, target, its port) and the identity fields, which a NAT leaves alone
(a UDP checksum is translated back first), and its ``changed`` says ``src``/``port``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from reachtest.model import FlowSpec, StrayReason
from reachtest.packet.build import ProbeTemplate
from reachtest.packet.checksum import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from reachtest.packet.parse import Parsed

OUTSTANDING, ANSWERED, TIMED_OUT = 0, 1, 2
UNSET_TTL = 1 << 30  # no final answer seen yet

FlowKey = tuple[int, bytes, int, int]
#: A flow without our end of it (protocol, target, its port): what a NAT leaves in a quote.
ServiceKey = tuple[int, bytes, int]


class SentProbe:
    """One probe on the wire or recently resolved (mutable; internal to the engine)."""

    __slots__ = (
        "b",
        "budget",
        "deadline_ns",
        "entry",
        "had_token",
        "k",
        "missed",
        "proof",
        "round",
        "sent_ns",
        "state",
        "ttl",
    )

    def __init__(
        self,
        entry: FlowEntry,
        ttl: int,
        round_: int,
        k: int,
        b: int,
        sent_ns: int,
        deadline_ns: int,
    ) -> None:
        self.entry = entry
        self.ttl = ttl
        self.round = round_
        self.k = k
        self.b = b
        self.sent_ns = sent_ns
        self.deadline_ns = deadline_ns
        self.state = OUTSTANDING
        # The tracer's own bookkeeping: the router budget it was sent against, whether the
        # model had a token for it, and whether it is a proof probe.
        self.budget: Any = None
        self.had_token = 0
        self.missed = False
        self.proof = False


class FlowEntry:
    """The probes of one (target, flow) still worth matching, by probe number."""

    __slots__ = (
        "by_k",
        "flow",
        "hop_at",
        "key",
        "max_answered",
        "next_k",
        "outstanding",
        "parked",
        "parked_at",
        "probed_round",
        "proved",
        "target",
        "target_state",
        "template",
        "terminal_ttl",
    )

    def __init__(self, target: str, flow: FlowSpec, template: ProbeTemplate, key: FlowKey) -> None:
        self.target = target
        self.flow = flow
        self.template = template
        self.key = key
        self.by_k: dict[int, SentProbe] = {}
        self.next_k = 0
        self.outstanding = 0
        self.max_answered = 0
        self.terminal_ttl = UNSET_TTL
        # The tracer's own bookkeeping (its sweeps waiting on this flow, its target record).
        self.parked: list[Any] = []
        self.parked_at = 0  # the lowest TTL a parked sweep waits to send
        self.target_state: Any = None
        # Which router answered this flow at each TTL, the last round each TTL was probed,
        # and the TTLs a proof probe was sent to.
        self.hop_at: dict[int, str] = {}
        self.probed_round: dict[int, int] = {}
        self.proved: set[int] = set()


def flow_key(template: ProbeTemplate) -> FlowKey:
    """The key a reply must name to belong to a flow: protocol, target, our port, its port."""
    proto = PROTO_ICMP if template.proto_number == PROTO_ICMPV6 else template.proto_number
    return (proto, template.dst, template.sport, template.dport)


def service_key(key: FlowKey) -> ServiceKey:
    """The part of a flow key a source NAT does not change."""
    return (key[0], key[1], key[3])


class Match(NamedTuple):
    """The matcher's answer: a probe (with facts about the quote), or a stray reason."""

    probe: SentProbe | None
    reason: StrayReason | None
    changed: tuple[str, ...] = ()
    exact: bool = True


def _stray(reason: StrayReason) -> Match:
    return Match(None, reason)


def match(
    parsed: Parsed,
    recv_ns: int,
    flows: dict[FlowKey, FlowEntry],
    services: Mapping[ServiceKey, Sequence[FlowEntry]] | None = None,
) -> Match:
    """The probe ``parsed`` answers, looked up in ``flows`` (and for an ICMP error whose
    quote names no flow of ours, through a NAT in ``services``); never modifies anything."""
    entry = flows.get((parsed.proto, parsed.remote, parsed.lport, parsed.rport))
    if entry is not None:
        return _attribute(parsed, entry, recv_ns)
    if parsed.is_error and parsed.quote is not None and services:
        return _translated(parsed, recv_ns, services)
    return _stray(StrayReason.UNKNOWN_FLOW if parsed.is_error else StrayReason.UNRELATED)


def _attribute(parsed: Parsed, entry: FlowEntry, recv_ns: int) -> Match:
    template = entry.template
    codec = template.codec
    if parsed.ident_a >= 0:
        k = codec.k_from_a(parsed.ident_a)
    elif parsed.proto == PROTO_UDP and not parsed.is_error:
        return _udp_answer(entry, template.b_from_reply(parsed.payload), recv_ns)
    else:
        return _stray(StrayReason.UNKNOWN_PROBE)
    probe = entry.by_k.get(k)
    if probe is None:
        return _syn_ack_off(parsed, entry, recv_ns) or _stray(StrayReason.UNKNOWN_PROBE)
    b = probe.b
    if (parsed.ident_b >= 0 and parsed.ident_b != b) or (parsed.ip_id >= 0 and parsed.ip_id != b):
        return _syn_ack_off(parsed, entry, recv_ns) or _stray(StrayReason.INCONSISTENT)
    if parsed.payload and (parsed.is_error or parsed.proto != PROTO_UDP):
        shown = template.b_from_payload(parsed.payload)
        if shown >= 0 and shown != b:
            return _stray(StrayReason.INCONSISTENT)
    if recv_ns < probe.sent_ns:
        return _stray(StrayReason.EARLY)
    changed: tuple[str, ...] = ()
    quote = parsed.quote
    if quote is not None:
        differs = []
        if quote.src != template.src:
            differs.append("src")
        if parsed.lport != template.sport:
            differs.append("port")
        if quote.tos != 0:
            differs.append(f"tos={quote.tos:#04x}")  # DSCP or ECN rewritten (we send 0)
        if quote.length != template.length:
            differs.append("length")
        if parsed.quoted_mss >= 0 and template.mss >= 0 and parsed.quoted_mss != template.mss:
            differs.append(f"mss={parsed.quoted_mss}")  # an MSS clamp before this hop
        changed = tuple(differs)
    return Match(probe, None, changed)


def _translated(
    parsed: Parsed, recv_ns: int, services: Mapping[ServiceKey, Sequence[FlowEntry]]
) -> Match:
    """An ICMP error quoting our probe as a NAT rewrote it (source address, port or echo
    identifier) and did not restore: the flow to that service whose probe every identity
    field names, exactly as in ``_attribute``. Only a quote that shows the identity in
    both its words counts; anything else stays an unknown flow."""
    if parsed.ident_a < 0:
        return _stray(StrayReason.UNKNOWN_FLOW)
    both_words = parsed.ident_b >= 0 or parsed.ip_id >= 0
    for entry in services.get((parsed.proto, parsed.remote, parsed.rport), ()):
        if not (both_words or entry.template.b_from_payload(parsed.payload) >= 0):
            continue
        tries = [parsed]
        if parsed.proto == PROTO_UDP:  # the UDP checksum (word a) covers address and port
            undone = _untranslate_checksum(parsed, entry.template)
            if undone != parsed.ident_a:
                tries.insert(0, parsed._replace(ident_a=undone))
        for candidate in tries:
            found = _attribute(candidate, entry, recv_ns)
            if found.probe is not None and found.exact:
                return found
    return _stray(StrayReason.UNKNOWN_FLOW)


def _words(data: bytes) -> int:
    return sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


def _untranslate_checksum(parsed: Parsed, template: ProbeTemplate) -> int:
    """The UDP checksum the quoted datagram had before a NAT changed its source address
    and port with an incremental update (RFC 1624: HC' = ~(~HC + ~m + m'))."""
    assert parsed.quote is not None
    ours = _words(template.src) + template.sport
    theirs = _words(parsed.quote.src) + parsed.lport
    total = (~parsed.ident_a & 0xFFFF) + _ones_neg(theirs) + _fold(ours)
    return ~_fold(total) & 0xFFFF


def _fold(value: int) -> int:
    while value > 0xFFFF:
        value = (value & 0xFFFF) + (value >> 16)
    return value


def _ones_neg(value: int) -> int:
    return ~_fold(value) & 0xFFFF


#: TCP flags of a SYN-ACK.
SYN_ACK = 0x12


def _syn_ack_off(parsed: Parsed, entry: FlowEntry, recv_ns: int) -> Match | None:
    """A SYN-ACK from the target's address and port to our port whose ack number names no
    probe (a middlebox that rewrote the sequence and did not translate it back): the
    service answered, so the oldest outstanding probe, inexact, with ``ack`` noted as
    changed. Never an RST: a blind or forged reset with an off ack stays a stray."""
    if parsed.is_error or parsed.proto != PROTO_TCP or parsed.tcp_flags & SYN_ACK != SYN_ACK:
        return None
    probe = _oldest_outstanding(entry, recv_ns)
    return None if probe is None else Match(probe, None, ("ack",), False)


def _udp_answer(entry: FlowEntry, b: int, recv_ns: int) -> Match:
    """A datagram from the service's address and port to our port: the service answered,
    whatever its payload. When it echoes the probe's identity (DNS ID, NTP origin) and
    that names a probe sent before it, that probe (exact); otherwise (an NTP server that
    does not copy the origin, an echo of something else, a fixed banner) the oldest
    outstanding probe, marked inexact."""
    if b >= 0:
        probe = entry.by_k.get(entry.template.codec.k_from_b(b))
        if probe is not None and probe.b == b and probe.sent_ns <= recv_ns:
            return Match(probe, None)
    probe = _oldest_outstanding(entry, recv_ns)
    if probe is None:
        return _stray(StrayReason.UNKNOWN_PROBE)
    return Match(probe, None, (), False)


def _oldest_outstanding(entry: FlowEntry, recv_ns: int) -> SentProbe | None:
    """For an answer from the target that names no probe: the oldest unanswered probe sent
    before it that can have reached the target: not below a TTL the target answered, nor
    at or below one where a router said time-exceeded for this flow."""
    floor = 1 + max(entry.hop_at, default=0)
    if entry.terminal_ttl != UNSET_TTL:
        floor = max(floor, entry.terminal_ttl)
    candidates = [
        p
        for p in entry.by_k.values()
        if p.state == OUTSTANDING and p.sent_ns <= recv_ns and p.ttl >= floor
    ]
    return min(candidates, key=lambda p: p.sent_ns, default=None)
