"""Requests past the handshake, TTL by TTL: for each name (the test and its control) and
each TTL, one ordinary TCP connection is made at the normal TTL, then the request (a TLS
ClientHello, an HTTP GET) is sent with that TTL, and what comes back is recorded: the
server's answer, a reset, the connection closed, or nothing. Every (name, TTL) runs at
once, on non-blocking sockets in one selector: no root needed (IP_TTL on a connected
socket). With raw sockets (root or CAP_NET_RAW) the ICMP time-exceeded messages that
quote a request's data segment are read too, which names the router where it expired.
Linux reports no ICMP error to an established socket, so without raw sockets a request
that expires shows as silence (the hops come from the run's other flows).

A DNS query (``dns/PORT``) needs no handshake and no raw socket: each (name, TTL) is one
connected UDP socket whose error queue (IP_RECVERR) names the router where the query
expired; every answer that comes is read, so an injected answer followed by the
server's own (an on-path box) shows as two different answers.
"""

from __future__ import annotations

import errno
import ipaddress
import secrets
import select
import selectors
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from reachtest.engine.linux import (
    IP_RECVERR,
    IPV6_RECVERR,
    SOL_IP,
    SOL_IPV6,
    icmp_errors,
    set_ttl,
)
from reachtest.errors import EnvironmentProblem
from reachtest.packet.requests import (
    EXCERPT_BYTES,
    RequestKind,
    answer_kind,
    dns_answer,
    request,
)

#: What a request's outcome is.
ANSWERED = "answered"  # the server's (or someone's in its name) data came back
RESET = "reset"  # a RST after the request
CLOSED = "closed"  # a FIN without data
SILENT = "silent"  # nothing within the timeout
EXPIRED = "time-exceeded"  # raw sockets: a router said the request's TTL ran out
NO_HANDSHAKE = "no-handshake"  # the TCP handshake itself failed (no SYN-level open)
REFUSED = "refused"  # DNS: port unreachable (no service there)
#: How long, at most, the server's own answer to a reset request is waited for.
LATE_WAIT_S = 0.5
#: How long, at least, a second DNS answer is waited for.
DNS_LATE_MIN_S = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestOutcome:
    """One request: its name, TTL, what came back, from where, after how long."""

    name: str
    ttl: int
    outcome: str
    responder: str | None = None
    rtt_ms: float | None = None
    answer: str | None = None  # answer_kind of the data, when data came
    excerpt: bytes = b""  # the first bytes of the answer (bounded)
    #: Raw capture ran (root or CAP_NET_RAW): ``late_answer`` can be trusted.
    captured: bool = False
    #: After the reset (or the answer), the server's own (other) data still came
    #: (captured, or for DNS read): an on-path box injected the reset, block page or DNS
    #: answer while the request travelled on.
    late_answer: bool = False
    #: Sent alone, after the routers' ICMP budgets had time to refill (see ``prove``): a
    #: silence here is the request's, not a rate limit's.
    proof: bool = False


@dataclass(slots=True)
class _Try:
    name: str
    ttl: int
    sock: socket.socket
    sport: int = 0
    sent_ns: int = 0
    done: RequestOutcome | None = None
    #: A time-exceeded came (raw sockets): the outcome unless a reset or an answer comes
    #: within ``expired_until_ns`` (an on-path box's reset and the router after it race).
    expired: RequestOutcome | None = None
    expired_until_ns: int = 0
    query: bytes = b""  # DNS: the query sent (its answers must match its ID and question)
    second: bool = False  # DNS: a second, different answer came after the first


def _raw_icmp(v6: bool) -> socket.socket | None:
    """A raw ICMP socket for the time-exceeded messages, when allowed; None otherwise."""
    try:
        if v6:
            return socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        return None


def _raw_tcp(v6: bool) -> socket.socket | None:
    """A raw TCP socket: a copy of every TCP segment that arrives (for answers that come
    after a reset); None when not allowed."""
    try:
        return socket.socket(
            socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP
        )
    except PermissionError:
        return None


def _data_to(
    packet: bytes, sender: str, v6: bool, address: str, port: int
) -> tuple[int, int, bytes] | None:
    """(destination port, sequence number, first bytes of the data) of a TCP segment
    with data from ``address``:``port`` (as a raw TCP socket gives it: v4 with its IP
    header, v6 without); None otherwise."""
    if sender != address:
        return None
    segment = packet if v6 else packet[(packet[0] & 0x0F) * 4 :] if packet else b""
    if len(segment) < 20:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", segment)
    payload = segment[(segment[12] >> 4) * 4 :]
    return (dport, seq, payload[:64]) if sport == port and payload else None


def _expired_port(packet: bytes, v6: bool, address: str, port: int) -> int | None:
    """The source port of our TCP segment to ``address``:``port`` that a time-exceeded in
    ``packet`` (as a raw socket gives it) quotes; None for anything else."""
    if not v6:
        packet = packet[(packet[0] & 0x0F) * 4 :] if packet else b""
    if len(packet) < 8 or (packet[0], packet[1]) != ((3, 0) if v6 else (11, 0)):
        return None
    quoted = packet[8:]
    if v6:
        if len(quoted) < 44 or quoted[6] != socket.IPPROTO_TCP:
            return None
        destination, header = ipaddress.IPv6Address(quoted[24:40]), quoted[40:]
    else:
        if len(quoted) < 28 or quoted[9] != socket.IPPROTO_TCP:
            return None
        destination = ipaddress.IPv4Address(quoted[16:20])  # type: ignore[assignment]
        header = quoted[(quoted[0] & 0x0F) * 4 :]
    if str(destination) != address or len(header) < 4:
        return None
    sport, dport = struct.unpack("!HH", header[:4])
    return sport if dport == port else None


class RawSockets:
    """The raw sockets of request tracing (per family: ICMP errors, a copy of arriving
    TCP), opened while the privilege is there, used after it is given up."""

    def __init__(self) -> None:
        self.sockets: dict[bool, tuple[socket.socket, socket.socket]] = {}
        for v6 in (False, True):
            icmp = _raw_icmp(v6)
            capture = _raw_tcp(v6) if icmp is not None else None
            if icmp is not None and capture is not None:
                self.sockets[v6] = (icmp, capture)
            elif icmp is not None:
                icmp.close()

    def pair(self, v6: bool) -> tuple[socket.socket | None, socket.socket | None]:
        return self.sockets.get(v6, (None, None))

    def close(self) -> None:
        for icmp, capture in self.sockets.values():
            icmp.close()
            capture.close()
        self.sockets = {}


class RequestCapture:
    """Every packet to and from the targets (and every ICMP error) while requests are
    traced, for the pcap: an AF_PACKET socket opened while the privilege is there, whose
    kernel filter drops everything until ``watch`` names the targets (so the run's own
    probes before it cost nothing here)."""

    #: A classic BPF program of one instruction: return 0 (drop).
    DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)
    #: ... and return 262144 (keep the packet whole): when libpcap cannot compile.
    KEEP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0x40000)

    def __init__(self) -> None:
        from reachtest.engine.bpf import attach, bind_all
        from reachtest.engine.linux import ETH_P_ALL, SO_RCVBUFFORCE, SO_TIMESTAMPNS

        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        try:
            attach(self.sock.fileno(), self.DROP_ALL)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            try:  # room for a whole trace's requests between two reads
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            bind_all(self.sock.fileno(), ETH_P_ALL)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def watch(self, addresses: Sequence[str]) -> None:
        """From now on keep what goes to or comes from ``addresses``, and ICMP errors."""
        from reachtest.engine.bpf import attach, compiled

        hosts = " or ".join(f"host {a}" for a in addresses)
        try:
            program = compiled(f"({hosts}) or icmp or icmp6" if hosts else "icmp or icmp6")
        except (OSError, ValueError):
            program = self.KEEP_ALL
        attach(self.sock.fileno(), program)

    def take(self) -> list[tuple[int, bytes]]:
        """What was kept so far: (Unix time in ns from the kernel, IP packet)."""
        from reachtest.engine.linux import SCM_TIMESTAMPNS, TIMESPEC

        found: list[tuple[int, bytes]] = []
        while True:
            try:
                packet, ancillary, _flags, address = self.sock.recvmsg(65535, 64)
            except (BlockingIOError, InterruptedError):
                return found
            if address[0] == "lo" and address[2] == 4:  # PACKET_OUTGOING: seen twice on lo
                continue
            ns = time.time_ns()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = TIMESPEC.unpack_from(value)
                    ns = sec * 1_000_000_000 + nsec
            found.append((ns, packet))

    def close(self) -> None:
        self.sock.close()


def _drain(sock: socket.socket) -> None:
    """Forget what a shared raw socket holds from before this trace."""
    while True:
        try:
            sock.recv(65535, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return


def trace_requests(
    address: str,
    port: int,
    kind: RequestKind,
    names: Sequence[str],
    ttls: Sequence[int],
    *,
    timeout_s: float = 2.0,
    raw: bool = True,
    sockets: RawSockets | None = None,
    query_type: str = "A",
) -> list[RequestOutcome]:
    """Every name at every TTL, all at once (see the module); outcomes in (name, TTL)
    order. ``raw``: read time-exceeded messages when raw sockets are allowed, opened
    here or given (``sockets``, opened before privileges were given up). DNS asks for
    ``query_type`` and needs no raw socket."""
    if kind is RequestKind.DNS:
        return _trace_dns(address, port, names, ttls, query_type, timeout_s)
    v6 = ipaddress.ip_address(address).version == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    payloads = {name: request(kind, name) for name in names}
    selector = selectors.DefaultSelector()
    own = sockets is None
    if sockets is not None:
        icmp, capture = sockets.pair(v6) if raw else (None, None)
        for given in (icmp, capture):
            if given is not None:
                _drain(given)
    else:
        icmp = _raw_icmp(v6) if raw else None
        capture = _raw_tcp(v6) if icmp is not None else None
    tries: list[_Try] = []
    by_port: dict[int, _Try] = {}
    seen = _Seen(set(), {}, set())  # the server's data as the raw socket saw it
    try:
        if icmp is not None:
            icmp.setblocking(False)
            selector.register(icmp, selectors.EVENT_READ, None)
        if capture is not None:
            capture.setblocking(False)
            selector.register(capture, selectors.EVENT_READ, "capture")
        for name in names:
            for ttl in ttls:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                attempt = _Try(name, ttl, sock)
                tries.append(attempt)
                code = sock.connect_ex((address, port))
                if code not in (0, errno.EINPROGRESS):
                    attempt.done = RequestOutcome(name=name, ttl=ttl, outcome=NO_HANDSHAKE)
                    continue
                selector.register(sock, selectors.EVENT_WRITE, attempt)
        deadline = time.monotonic() + timeout_s + 1.0  # the handshake's second first
        while any(t.done is None for t in tries):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            pending = any(t.done is None and t.expired is not None for t in tries)
            for key, events in selector.select(min(left, 0.01 if pending else 0.2)):
                if key.data is None:
                    _read_icmp(icmp, v6, address, port, by_port)  # type: ignore[arg-type]
                    continue
                if key.data == "capture":
                    _read_capture(capture, v6, address, port, seen)  # type: ignore[arg-type]
                    continue
                attempt = key.data
                if attempt.done is not None:
                    continue
                if events & selectors.EVENT_WRITE and not attempt.sent_ns:
                    _send(attempt, payloads[attempt.name], v6, selector, by_port)
                elif events & selectors.EVENT_READ:
                    _receive(attempt, kind, address)
                if attempt.done is not None:
                    selector.unregister(attempt.sock)
            now = time.monotonic_ns()
            for attempt in tries:  # each request has its own timeout from its sending
                if attempt.done is None and attempt.expired and now > attempt.expired_until_ns:
                    attempt.done = attempt.expired
                if (
                    attempt.done is None
                    and attempt.sent_ns
                    and (now - attempt.sent_ns > timeout_s * 1e9)
                ):
                    attempt.done = RequestOutcome(
                        name=attempt.name, ttl=attempt.ttl, outcome=SILENT
                    )
        for attempt in tries:
            if attempt.done is None and attempt.expired is not None:
                attempt.done = attempt.expired
            if attempt.done is None:
                outcome = SILENT if attempt.sent_ns else NO_HANDSHAKE
                attempt.done = RequestOutcome(name=attempt.name, ttl=attempt.ttl, outcome=outcome)
        resets = [t for t in tries if t.done is not None and t.done.outcome == RESET]
        answers = [t for t in tries if t.done is not None and t.done.outcome == ANSWERED]
        if capture is not None and (resets or answers):
            # The server's own answer to a request an on-path box reset (or answered with
            # a page) comes after it, about a round trip later: wait three of the slowest
            # round trips for it (50 ms at least, half a second or the timeout at most).
            slowest_s = max((t.done.rtt_ms or 0.0) for t in resets + answers if t.done) / 1000
            wait_s = min(max(3 * slowest_s, 0.05), LATE_WAIT_S, timeout_s)
            end = time.monotonic() + wait_s
            while (left := end - time.monotonic()) > 0 and not (
                answers == [] and all(t.sport in seen.data for t in resets)
            ):
                if select.select([capture], [], [], left)[0]:
                    _read_capture(capture, v6, address, port, seen)
        for attempt in tries:
            assert attempt.done is not None
            outcome = attempt.done.outcome
            attempt.done = replace(
                attempt.done,
                captured=capture is not None,
                late_answer=(outcome == RESET and attempt.sport in seen.data)
                or (outcome == ANSWERED and attempt.sport in seen.conflicting),
            )
    except OSError as exc:
        raise EnvironmentProblem(f"request probes failed: {exc.strerror or exc}") from exc
    finally:
        selector.close()
        for attempt in tries:
            attempt.sock.close()
        for mine in (icmp, capture) if own else ():
            if mine is not None:
                mine.close()
    return [t.done for t in tries if t.done is not None]


def _send(
    attempt: _Try,
    payload: bytes,
    v6: bool,
    selector: selectors.BaseSelector,
    by_port: dict[int, _Try],
) -> None:
    """The handshake is over (or failed): set the TTL and send the request."""
    sock = attempt.sock
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        attempt.done = RequestOutcome(name=attempt.name, ttl=attempt.ttl, outcome=NO_HANDSHAKE)
        return
    set_ttl(sock, v6, attempt.ttl)
    attempt.sport = sock.getsockname()[1]
    by_port[attempt.sport] = attempt
    attempt.sent_ns = time.monotonic_ns()
    try:
        sock.send(payload)
    except OSError:
        attempt.done = RequestOutcome(name=attempt.name, ttl=attempt.ttl, outcome=RESET)
        return
    selector.modify(sock, selectors.EVENT_READ, attempt)


def _receive(attempt: _Try, kind: RequestKind, address: str) -> None:
    rtt = round((time.monotonic_ns() - attempt.sent_ns) / 1e6, 3)
    try:
        data = attempt.sock.recv(EXCERPT_BYTES)
    except ConnectionResetError:
        outcome = RequestOutcome(
            name=attempt.name, ttl=attempt.ttl, outcome=RESET, responder=address, rtt_ms=rtt
        )
    except BlockingIOError:
        return
    else:
        outcome = RequestOutcome(
            name=attempt.name, ttl=attempt.ttl, outcome=ANSWERED if data else CLOSED,
            responder=address, rtt_ms=rtt, answer=answer_kind(kind, data) if data else None,
            excerpt=data,
        )  # fmt: skip
    attempt.done = outcome


@dataclass(slots=True)
class _Seen:
    """What the raw TCP copy showed: the ports data came to (after a reset, the server's
    own answer), and those that got two different data at one sequence number (a
    block page injected in the server's name, then the server's answer)."""

    data: set[int]
    first: dict[tuple[int, int], bytes]
    conflicting: set[int]


def _read_capture(capture: socket.socket, v6: bool, address: str, port: int, seen: _Seen) -> None:
    while True:
        try:
            packet, sender = capture.recvfrom(2048)
        except BlockingIOError:
            return
        found = _data_to(packet, sender[0], v6, address, port)
        if found is None:
            continue
        dport, seq, head = found
        seen.data.add(dport)
        before = seen.first.setdefault((dport, seq), head)
        if before[: len(head)] != head[: len(before)]:
            seen.conflicting.add(dport)


def _read_icmp(
    icmp: socket.socket, v6: bool, address: str, port: int, by_port: dict[int, _Try]
) -> None:
    while True:
        try:
            packet, sender = icmp.recvfrom(2048)
        except BlockingIOError:
            return
        sport = _expired_port(packet, v6, address, port)
        attempt = by_port.get(sport) if sport is not None else None
        if attempt is None or attempt.done is not None or attempt.expired is not None:
            continue
        now = time.monotonic_ns()
        attempt.expired = RequestOutcome(
            name=attempt.name, ttl=attempt.ttl, outcome=EXPIRED, responder=sender[0],
            rtt_ms=round((now - attempt.sent_ns) / 1e6, 3),
        )  # fmt: skip
        # A reset injected by a box before this router comes from nearer: it may still be
        # on its way. Wait a little (the time this answer took, 20 to 200 ms) for it.
        wait_ns = min(max(2 * (now - attempt.sent_ns), 20_000_000), 200_000_000)
        attempt.expired_until_ns = now + wait_ns


#: ICMP errors about a DNS query: (v6, type, code) -> outcome.
_DNS_ERRORS = {
    (False, 11, 0): EXPIRED, (True, 3, 0): EXPIRED,
    (False, 3, 3): REFUSED, (True, 1, 4): REFUSED,  # port unreachable: no DNS service there
}  # fmt: skip


def _trace_dns(
    address: str,
    port: int,
    names: Sequence[str],
    ttls: Sequence[int],
    query_type: str,
    timeout_s: float,
) -> list[RequestOutcome]:
    """DNS queries for every name at every TTL at once (see the module)."""
    v6 = ipaddress.ip_address(address).version == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    selector = selectors.DefaultSelector()
    tries: list[_Try] = []
    try:
        for name in names:
            for ttl in ttls:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                attempt = _Try(name, ttl, sock)
                tries.append(attempt)
                sock.setblocking(False)
                sock.setsockopt(SOL_IPV6 if v6 else SOL_IP, IPV6_RECVERR if v6 else IP_RECVERR, 1)
                sock.connect((address, port))
                set_ttl(sock, v6, ttl)
                attempt.query = request(RequestKind.DNS, name, query_type, secrets.randbits(16))
                attempt.sent_ns = time.monotonic_ns()
                sock.send(attempt.query)
                selector.register(sock, selectors.EVENT_READ, attempt)
        deadline = time.monotonic() + timeout_s

        def waiting() -> bool:
            return any(t.done is None for t in tries)

        while waiting() and (left := deadline - time.monotonic()) > 0:
            pending = any(t.done is None and t.expired is not None for t in tries)
            for key, _events in selector.select(min(left, 0.01 if pending else 0.2)):
                _read_dns(key.data, v6)
            now = time.monotonic_ns()
            for attempt in tries:
                if attempt.done is None and attempt.expired and now > attempt.expired_until_ns:
                    attempt.done = attempt.expired
        answered = [t for t in tries if t.done is not None and t.done.outcome == ANSWERED]
        if answered:
            # A second answer (the server's own, after an injected one) comes about a round
            # trip later: wait three of the slowest answer's round trips for it, at least
            # DNS_LATE_MIN_S (when every answer came was injected, the slowest is fast).
            slowest_s = max((t.done.rtt_ms or 0.0) for t in answered if t.done) / 1000
            wait_s = min(max(3 * slowest_s, DNS_LATE_MIN_S), LATE_WAIT_S, timeout_s)
            end = time.monotonic() + wait_s
            while (left := end - time.monotonic()) > 0:
                for key, _events in selector.select(left):
                    _read_dns(key.data, v6)
        for attempt in tries:
            done = attempt.done or attempt.expired
            if done is None:
                done = RequestOutcome(name=attempt.name, ttl=attempt.ttl, outcome=SILENT)
            attempt.done = replace(done, captured=True, late_answer=attempt.second)
    except OSError as exc:
        raise EnvironmentProblem(f"DNS request probes failed: {exc.strerror or exc}") from exc
    finally:
        selector.close()
        for attempt in tries:
            attempt.sock.close()
    return [t.done for t in tries if t.done is not None]


def _read_dns(attempt: _Try, v6: bool) -> None:
    """Everything that came for one query: ICMP errors (its error queue), answers."""
    sock = attempt.sock
    for icmp_type, code, offender, _info in icmp_errors(sock):
        outcome = _DNS_ERRORS.get((v6, icmp_type, code))
        if attempt.done is not None or attempt.expired is not None or outcome is None:
            continue
        now = time.monotonic_ns()
        error = RequestOutcome(
            name=attempt.name, ttl=attempt.ttl, outcome=outcome, responder=offender,
            rtt_ms=round((now - attempt.sent_ns) / 1e6, 3),
        )  # fmt: skip
        if outcome == REFUSED:
            attempt.done = error
            continue
        # An answer injected by a box before this router may still be on its way.
        attempt.expired = error
        attempt.expired_until_ns = now + min(
            max(2 * (now - attempt.sent_ns), 20_000_000), 200_000_000
        )
    while True:
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the error just read from the queue, said once more
            continue
        found_answer = dns_answer(attempt.query, data)
        if found_answer is None:
            continue
        kind, text = found_answer
        if attempt.done is None:
            attempt.done = RequestOutcome(
                name=attempt.name, ttl=attempt.ttl, outcome=ANSWERED,
                responder=sock.getpeername()[0], answer=kind, excerpt=text,
                rtt_ms=round((time.monotonic_ns() - attempt.sent_ns) / 1e6, 3),
            )  # fmt: skip
        elif attempt.done.outcome == ANSWERED and text != attempt.done.excerpt:
            attempt.second = True


#: How long a proof waits before it sends: Linux refills a router's ICMP-error bucket at
#: one token a second per destination (lab-notes: rate limits).
PROOF_PAUSE_S = 1.1


def prove(
    address: str,
    port: int,
    kind: RequestKind,
    name: str,
    after: int,
    last: int,
    *,
    timeout_s: float = 2.0,
    sockets: RawSockets | None = None,
    query_type: str = "A",
) -> list[RequestOutcome]:
    """A silence after TTL ``after`` proven or not: the request with ``name`` sent alone at
    TTL ``after`` + 1 once the routers' budgets refilled; if a router says its TTL ran
    out there after all (the first silence was its rate limit), the next TTL, and so on
    up to ``last``. Raw sockets only (DNS: none needed). The outcomes, marked as proofs."""
    found: list[RequestOutcome] = []
    for ttl in range(after + 1, last + 1):
        time.sleep(PROOF_PAUSE_S)
        (outcome,) = trace_requests(
            address, port, kind, [name], [ttl], timeout_s=timeout_s, sockets=sockets,
            query_type=query_type,
        )  # fmt: skip
        found.append(replace(outcome, proof=True))
        if outcome.outcome != EXPIRED:
            break
    return found
