"""A simulated network: answers probes with real reply bytes on a virtual clock, no root.

A small description of each path (routers, what they drop or reject, what the target
answers) is enough for unit tests to drive the real parser, matcher and tracer.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
from collections import deque
from dataclasses import dataclass, field

from reachtest.model import MplsLabel
from reachtest.packet import replies
from reachtest.packet.build import packed
from reachtest.packet.checksum import PROTO_ICMP, PROTO_TCP
from reachtest.packet.parse import ProbeFields, parse_probe

_MS = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SimHop:
    """One router: who answers, what it will not forward, how it rejects."""

    address: str
    silent: bool = False
    rtt_ms: float = 1.0
    drop: frozenset[str] = frozenset()
    prohibit: frozenset[str] = frozenset()
    reset: frozenset[str] = frozenset()
    answer_every: int = 1
    mpls: tuple[MplsLabel, ...] = ()
    #: A token bucket on its ICMP errors, as Linux keeps one per destination: ``rate_per_s``
    #: tokens a second up to ``burst``, one spent per error (None: unlimited).
    rate_per_s: float | None = None
    burst: int = 6
    #: A stateless source NAT: the packets it forwards leave from this address with their
    #: source port (echo identifier) xor ``NAT_PORT_XOR``; answers come back translated
    #: back, but the quotes of ICMP errors from later hops (and the target) stay as sent.
    nat_to: str | None = None


#: The simulated NAT's port translation (its own inverse).
NAT_PORT_XOR = 0x4000


@dataclass(frozen=True, slots=True, kw_only=True)
class SimPath:
    """The routers to one target and what the target answers per flow label.

    Flows in ``open`` get an echo reply, SYN-ACK or UDP answer; flows in ``closed`` get
    a RST or port-unreachable; every other flow gets nothing.
    """

    target: str
    hops: tuple[SimHop, ...]
    open: frozenset[str] = frozenset({"icmp"})
    closed: frozenset[str] = frozenset()
    rtt_ms: float = 2.0
    duplicates: int = 0
    #: A box that rewrote the SYN's sequence number: the SYN-ACK's ack is off by this xor.
    ack_xor: int = 0
    delay_ms: float = 0.0


def flow_label(fields: ProbeFields) -> str:
    """``icmp``, ``tcp/443`` or ``udp/53`` for a probe read back from its bytes."""
    if fields.proto == PROTO_ICMP:
        return "icmp"
    return f"{'tcp' if fields.proto == PROTO_TCP else 'udp'}/{fields.dport}"


@dataclass(slots=True)
class SimulatedNetwork:
    """A Transport whose packets never leave the process."""

    paths: tuple[SimPath, ...]
    source4: str = "198.18.1.1"
    source6: str = "2001:db8:0:1::1"
    send_cost_ns: int = 1_000
    injected: list[tuple[float, bytes]] = field(default_factory=list)
    clock_ns: int = 1_000_000_000
    #: Every probe sent (time, fields), for tests; ``keep_sent`` bounds it (long runs).
    sent: deque[tuple[int, ProbeFields]] = field(default_factory=deque)
    keep_sent: int | None = None
    _queue: list[tuple[int, int, bytes]] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _expiring: dict[str, int] = field(default_factory=dict)
    _buckets: dict[str, tuple[float, int]] = field(default_factory=dict)
    #: ICMP errors each rate-limited hop refused to send, by address.
    refused: dict[str, int] = field(default_factory=dict)
    _by_target: dict[bytes, SimPath] = field(default_factory=dict)
    _next_port: int = 40000

    def __post_init__(self) -> None:
        self._by_target = {packed(p.target): p for p in self.paths}
        if self.keep_sent is not None:
            self.sent = deque(self.sent, maxlen=self.keep_sent)
        for at_ms, data in self.injected:
            self._deliver(self.clock_ns + int(at_ms * _MS), data)

    def now_ns(self) -> int:
        return self.clock_ns

    def source_address(self, target: str) -> str:
        return self.source6 if ":" in target else self.source4

    def reserve_port(self, family: int, protocol: str) -> int:
        self._next_port += 1
        return self._next_port

    def _deliver(self, at_ns: int, data: bytes) -> None:
        heapq.heappush(self._queue, (at_ns, next(self._counter), data))

    def send(self, packet: bytes | bytearray, family: int, target: str) -> int:
        self.clock_ns += self.send_cost_ns
        now = self.clock_ns
        fields = parse_probe(packet)
        self.sent.append((now, fields))
        path = self._by_target.get(fields.dst)
        if path is None:
            return now
        label = flow_label(fields)
        quoted, client = packet, _address(fields.src)  # what later ICMP errors quote
        for index, hop in enumerate(path.hops, start=1):
            if fields.ttl == index:
                if hop.silent:
                    return now
                seen = self._expiring.get(hop.address, 0)
                self._expiring[hop.address] = seen + 1
                if seen % hop.answer_every or not self._allow(hop, now):
                    return now
                v6 = fields.family == 6
                reply = replies.icmp_error(  # sent with TTL 64, one router less per hop back
                    quoted,
                    responder=hop.address,
                    icmp_type=3 if v6 else 11,
                    mpls=hop.mpls,
                    ttl=65 - index,
                    to=client,
                )
                self._deliver(now + int(hop.rtt_ms * _MS), reply)
                return now
            if label in hop.drop:
                return now
            if label in hop.prohibit:
                v6 = fields.family == 6
                reply = replies.icmp_error(
                    quoted,
                    responder=hop.address,
                    icmp_type=1 if v6 else 3,
                    icmp_code=1 if v6 else 13,
                    to=client,
                )
                self._deliver(now + int(hop.rtt_ms * _MS), reply)
                return now
            if label in hop.reset and fields.proto == PROTO_TCP:
                reply = replies.tcp_reply(packet, syn_ack=False, ttl=65 - index)
                self._deliver(now + int(hop.rtt_ms * _MS), reply)
                return now
            if hop.nat_to is not None:
                quoted = replies.translated(quoted, src=hop.nat_to, port_xor=NAT_PORT_XOR)
        answer = self._target_answer(path, label, fields, packet, quoted)
        if answer is not None:
            at = now + int((path.rtt_ms + path.delay_ms) * _MS)
            for copy in range(1 + path.duplicates):
                self._deliver(at + copy * 1_000, answer)
        return now

    def _allow(self, hop: SimHop, now: int) -> bool:
        """Take a token from the hop's bucket, if it has one."""
        if hop.rate_per_s is None:
            return True
        tokens, last = self._buckets.get(hop.address, (float(hop.burst), now))
        tokens = min(float(hop.burst), tokens + hop.rate_per_s * (now - last) / 1e9)
        if tokens < 1.0:
            self._buckets[hop.address] = (tokens, now)
            self.refused[hop.address] = self.refused.get(hop.address, 0) + 1
            return False
        self._buckets[hop.address] = (tokens - 1.0, now)
        return True

    def _target_answer(
        self,
        path: SimPath,
        label: str,
        fields: ProbeFields,
        packet: bytes | bytearray,
        quoted: bytes | bytearray,
    ) -> bytes | None:
        ttl = 64 - len(path.hops)
        if label in path.open:
            if fields.proto == PROTO_ICMP:
                return replies.echo_reply(packet, ttl=ttl)
            if fields.proto == PROTO_TCP:
                return replies.tcp_reply(packet, syn_ack=True, ttl=ttl, ack_xor=path.ack_xor)
            answer = replies.service_answer(fields.dport, fields.payload)
            return replies.udp_reply(packet, answer, ttl=ttl)
        if label in path.closed:
            if fields.proto == PROTO_TCP:
                return replies.tcp_reply(packet, syn_ack=False, ttl=ttl)
            v6 = fields.family == 6
            return replies.icmp_error(
                quoted,
                responder=path.target,
                icmp_type=1 if v6 else 3,
                icmp_code=4 if v6 else 3,
                ttl=ttl,
                to=_address(fields.src),
            )
        return None

    def receive(self, timeout_s: float) -> list[tuple[bytes, int]]:
        queue = self._queue
        if not queue or queue[0][0] > self.clock_ns:
            until = self.clock_ns + int(max(timeout_s, 0.0) * 1e9)
            if queue and queue[0][0] <= until:
                until = queue[0][0]
            self.clock_ns = max(self.clock_ns, until)
        frames: list[tuple[bytes, int]] = []
        while queue and queue[0][0] <= self.clock_ns:
            at, _n, data = heapq.heappop(queue)
            frames.append((data, at))
        return frames

    def close(self) -> None:
        self._queue.clear()


def _address(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))
