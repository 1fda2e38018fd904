"""Path MTU per flow, and where bigger packets die: probes of chosen sizes with DF set,
sent at once through ordinary sockets (no root needed).

Each probe is one socket: a ping socket (ICMP echo), a connected UDP socket, or for TCP
a connection whose segments are capped to the size (``TCP_MAXSEG``) and whose data must
be acknowledged. ``IP_MTU_DISCOVER`` / ``IPV6_MTU_DISCOVER`` = ``PMTUDISC_PROBE`` sets DF
and ignores the kernel's cached path MTU (a frag-needed from an earlier run would
otherwise decide); the socket's error queue (``IP_RECVERR``) names the router that said
time-exceeded or frag-needed / packet-too-big, and the MTU it names (``ee_info``).

``search`` finds the largest size that reaches the target: the interface's MTU first
(one probe on a clean path); an MTU named by a router next; otherwise (silence: maybe a
black hole) rounds of up to ``BATCH`` sizes at once between the largest size answered
and the smallest lost, common MTUs first, until they are one byte apart; the first lost
size is sent again (a lost probe is not a black hole). ``locate`` sends a size at every
TTL at once: the last TTL whose probe expired at a router is the last hop that received
it; the router there cannot forward it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import selectors
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from reachtest.engine.linux import (
    IP_RECVERR,
    IPV6_RECVERR,
    SOL_IP,
    SOL_IPV6,
    icmp_errors,
    set_ttl,
)
from reachtest.errors import EnvironmentProblem

IP_MTU_DISCOVER = 10
IPV6_MTU_DISCOVER = 23
PMTUDISC_DO = 2
PMTUDISC_PROBE = 3
TCP_INFO_PMTU = 60  # offset of tcpi_pmtu (u32) in struct tcp_info
TCP_INFO_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in struct tcp_info
#: Headers below the payload of each kind of probe: IP (20 / 40) and ICMP or UDP (8);
#: TCP's 20 and the timestamps option's 12.
IP_HEADER = {4: 20, 6: 40}
TRANSPORT_HEADER = {"icmp": 8, "udp": 8, "tcp": 32}
#: The smallest size every IPv4 / IPv6 link carries (RFC 791, RFC 8200).
FLOOR = {4: 576, 6: 1280}
#: Sizes tried first between two bounds: the MTUs of common links and tunnels.
COMMON = (
    9000, 4352, 1500, 1492, 1480, 1476, 1460, 1450, 1440, 1420, 1400, 1380, 1360, 1350,
    1300, 1280, 1200, 1024, 1006, 576,
)  # fmt: skip
BATCH = 8

ANSWERED = "answered"
EXPIRED = "time-exceeded"
TOO_BIG = "too-big"
SILENT = "silent"
REFUSED = "refused"  # port unreachable: the target got it (UDP to a closed port)
LOCAL = "local"  # larger than this host's own interface: never sent
UNREACHABLE = "unreachable"  # another ICMP error
NO_CONNECTION = "no-connection"  # TCP: the handshake failed, no data was ever sent


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeOutcome:
    """One probe of ``size`` bytes (the whole IP packet) sent with ``ttl``."""

    size: int
    ttl: int
    outcome: str
    responder: str | None = None
    mtu: int | None = None  # the MTU a too-big names
    rtt_ms: float | None = None


@dataclass(slots=True)
class _Probe:
    size: int
    ttl: int
    sock: socket.socket
    sent_ns: int = 0
    done: SizeOutcome | None = None
    expired: SizeOutcome | None = None
    sent_bytes: int = 0


def interface_mtu(address: str) -> int:
    """The MTU of the interface the route to ``address`` leaves by (not the cached path
    MTU: that is what is measured); 1500 when it cannot be read."""
    v6 = ipaddress.ip_address(address).version == 6
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((address, 9))
            source = sock.getsockname()[0]
        except OSError:
            return 1500
    for name in sorted(os.listdir("/sys/class/net")):
        if _has_address(name, source, v6):
            with contextlib.suppress(OSError, ValueError):
                return int(open(f"/sys/class/net/{name}/mtu").read())
    return 1500


def _has_address(interface: str, address: str, v6: bool) -> bool:
    if v6:
        packed = ipaddress.IPv6Address(address).packed.hex()
        with contextlib.suppress(OSError), open("/proc/net/if_inet6") as table:
            return any(
                line.split()[0] == packed and line.split()[-1] == interface for line in table
            )
        return False
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(
                sock.fileno(), 0x8915, struct.pack("256s", interface.encode()[:15])
            )  # SIOCGIFADDR
        except OSError:
            return False
    return socket.inet_ntoa(answer[20:24]) == address


def _payload(kind: str, port: int | None, size: int, v6: bool) -> bytes:
    """What a probe of ``size`` bytes carries: for udp/53 a DNS query padded to the size
    (EDNS padding, RFC 7830), so that a resolver answers it; otherwise zeros."""
    room = size - IP_HEADER[6 if v6 else 4] - TRANSPORT_HEADER[kind]
    if kind == "udp" and port == 53 and room >= 40:
        import dns.edns
        import dns.message

        payload = max(4096, min(room, 65535))  # the EDNS size: what it may get back
        query = dns.message.make_query("reachtest.invalid.", "A", use_edns=0, payload=payload)
        pad = room - len(query.to_wire()) - 4
        if pad >= 0:
            padding = dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\0" * pad)
            query.use_edns(0, payload=payload, options=[padding])
            wire = query.to_wire(max_size=65535)
            if len(wire) == room:
                return wire
    return b"\0" * max(room, 0)


def _socket(kind: str, v6: bool, ttl: int, size: int) -> socket.socket:
    family = socket.AF_INET6 if v6 else socket.AF_INET
    if kind == "icmp":
        proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    elif kind == "udp":
        sock = socket.socket(family, socket.SOCK_DGRAM)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
        # Segments of the probe's size: the MSS is the size less IP, TCP and options.
        sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_MAXSEG, size - IP_HEADER[6 if v6 else 4] - 20
        )
    level = SOL_IPV6 if v6 else SOL_IP
    # IPv4 TCP sets DF only with PMTUDISC_DO (PROBE leaves it off there: a router would
    # fragment the segment); a path MTU the kernel already knows then shows in TCP_INFO.
    how = PMTUDISC_DO if kind == "tcp" and not v6 else PMTUDISC_PROBE
    sock.setsockopt(level, IPV6_MTU_DISCOVER if v6 else IP_MTU_DISCOVER, how)
    sock.setsockopt(level, IPV6_RECVERR if v6 else IP_RECVERR, 1)
    if kind != "tcp":  # TCP: the handshake at the normal TTL, the data at ``ttl``
        set_ttl(sock, v6, ttl)
    sock.setblocking(False)
    return sock


def probe(
    address: str,
    kind: str,
    port: int | None,
    probes: Sequence[tuple[int, int]],
    *,
    timeout_s: float = 1.0,
) -> list[SizeOutcome]:
    """Every (size, TTL) in ``probes`` at once, on ``kind`` (icmp, udp, tcp) to
    ``address`` (``port``); outcomes in the same order."""
    v6 = ipaddress.ip_address(address).version == 6
    selector = selectors.DefaultSelector()
    made: list[_Probe] = []
    try:
        for size, ttl in probes:
            try:
                sock = _socket(kind, v6, ttl, size)
            except OSError as exc:
                if kind == "icmp" and exc.errno in (errno.EACCES, errno.EPERM):
                    raise EnvironmentProblem(
                        "ICMP path MTU needs ping sockets (net.ipv4.ping_group_range) or root"
                    ) from exc
                raise
            attempt = _Probe(size, ttl, sock)
            made.append(attempt)
            _send(attempt, kind, port, address, v6)
            if attempt.done is None:
                events = selectors.EVENT_WRITE if kind == "tcp" else selectors.EVENT_READ
                selector.register(sock, events, attempt)
        deadline = time.monotonic() + timeout_s
        while any(p.done is None for p in made) and (left := deadline - time.monotonic()) > 0:
            for key, events in selector.select(min(left, 0.05)):
                attempt = key.data
                _errors(attempt, v6)
                if attempt.done is None:
                    _answer(attempt, kind, v6, address, events)
            now = time.monotonic_ns()
            for attempt in made:
                if attempt.done is None and kind == "tcp":
                    _tcp_acked(attempt)
                if attempt.done is None and attempt.expired and now > attempt.sent_ns + 50_000_000:
                    attempt.done = attempt.expired
        for attempt in made:
            if attempt.done is None:
                attempt.done = attempt.expired or SizeOutcome(
                    size=attempt.size, ttl=attempt.ttl, outcome=SILENT
                )
    finally:
        selector.close()
        for attempt in made:
            attempt.sock.close()
    return [p.done for p in made if p.done is not None]


def _send(attempt: _Probe, kind: str, port: int | None, address: str, v6: bool) -> None:
    sock = attempt.sock
    attempt.sent_ns = time.monotonic_ns()
    try:
        if kind == "tcp":
            code = sock.connect_ex((address, port or 0))
            if code not in (0, errno.EINPROGRESS):
                attempt.done = SizeOutcome(
                    size=attempt.size, ttl=attempt.ttl, outcome=NO_CONNECTION
                )
            return
        sock.connect((address, port or 0))
        body = _payload(kind, port, attempt.size, v6)
        if kind == "icmp":  # the kernel fills the identifier and the checksum
            body = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0, 1) + body
        sock.send(body)
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE:
            attempt.done = SizeOutcome(size=attempt.size, ttl=attempt.ttl, outcome=LOCAL)
        elif exc.errno == errno.ECONNREFUSED:
            attempt.done = SizeOutcome(size=attempt.size, ttl=attempt.ttl, outcome=REFUSED)
        else:
            raise


def _errors(attempt: _Probe, v6: bool) -> None:
    """Read the socket's error queue: time-exceeded, too-big (with the MTU), unreachable."""
    for icmp_type, code, offender, info in icmp_errors(attempt.sock):
        if attempt.done is not None:
            continue
        rtt = round((time.monotonic_ns() - attempt.sent_ns) / 1e6, 3)
        said = SizeOutcome(
            size=attempt.size, ttl=attempt.ttl, outcome=SILENT, responder=offender, rtt_ms=rtt
        )
        what = _ERRORS[v6].get((icmp_type, code)) or _ERRORS[v6].get((icmp_type, None))
        if what == EXPIRED:
            attempt.expired = attempt.expired or replace(said, outcome=EXPIRED)
        elif what == TOO_BIG:
            attempt.done = replace(said, outcome=TOO_BIG, mtu=info or None)
        elif what is not None:
            attempt.done = replace(said, outcome=what)


#: ICMP errors by family (v6?) and (type, code); code None: any code of the type.
_ERRORS: dict[bool, dict[tuple[int, int | None], str]] = {
    False: {(11, 0): EXPIRED, (3, 4): TOO_BIG, (3, 3): REFUSED, (3, None): UNREACHABLE},
    True: {(3, 0): EXPIRED, (2, None): TOO_BIG, (1, 4): REFUSED, (1, None): UNREACHABLE},
}


def _answer(attempt: _Probe, kind: str, v6: bool, address: str, events: int) -> None:
    rtt = round((time.monotonic_ns() - attempt.sent_ns) / 1e6, 3)
    sock = attempt.sock
    if kind == "tcp":
        if events & selectors.EVENT_WRITE and not attempt.sent_bytes:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:  # a closed port says nothing of sizes: no data crossed the path
                attempt.done = SizeOutcome(
                    size=attempt.size, ttl=attempt.ttl, outcome=NO_CONNECTION
                )
                return
            known = _tcp_pmtu(sock)
            if known and known < attempt.size:  # the kernel would cut the segment down
                attempt.done = SizeOutcome(
                    size=attempt.size, ttl=attempt.ttl, outcome=TOO_BIG, mtu=known
                )
                return
            # One full segment of data: the size less IP, TCP and its timestamps option.
            room = attempt.size - IP_HEADER[6 if v6 else 4] - TRANSPORT_HEADER["tcp"]
            set_ttl(sock, v6, attempt.ttl)
            with contextlib.suppress(BlockingIOError):
                attempt.sent_bytes = sock.send(b"\0" * room)
            attempt.sent_ns = time.monotonic_ns()
        return
    try:
        sock.recv(65535)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            attempt.done = SizeOutcome(size=attempt.size, ttl=attempt.ttl, outcome=REFUSED)
        return
    attempt.done = SizeOutcome(
        size=attempt.size, ttl=attempt.ttl, outcome=ANSWERED, responder=address, rtt_ms=rtt,
    )  # fmt: skip


def _tcp_pmtu(sock: socket.socket) -> int:
    """The path MTU the kernel uses for this connection (0: not told)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 136)
    return struct.unpack_from("I", info, TCP_INFO_PMTU)[0] if len(info) >= 64 else 0


def _tcp_acked(attempt: _Probe) -> None:
    """The probe's data all acknowledged: it reached the target whole (unless a router
    said it was too big and the kernel sent it again smaller: then too big)."""
    if not attempt.sent_bytes:
        return
    known = _tcp_pmtu(attempt.sock)
    if known and known < attempt.size:
        attempt.done = SizeOutcome(size=attempt.size, ttl=attempt.ttl, outcome=TOO_BIG, mtu=known)
        return
    info = attempt.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 136)
    if len(info) < TCP_INFO_BYTES_ACKED + 8:
        return
    acked = struct.unpack_from("Q", info, TCP_INFO_BYTES_ACKED)[0]
    if acked >= attempt.sent_bytes:
        attempt.done = SizeOutcome(
            size=attempt.size, ttl=attempt.ttl, outcome=ANSWERED, responder=None,
            rtt_ms=round((time.monotonic_ns() - attempt.sent_ns) / 1e6, 3),
        )  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMtu:
    """What ``search`` and ``locate`` found for one flow."""

    flow: str
    mtu: int | None  # the largest size that reached the target (None: none did)
    local_mtu: int
    #: The smallest size that did not: too big at a router that said so (``named``), or
    #: silently lost (``black_hole``); None when the interface's MTU passed.
    limit: int | None = None
    named: bool = False  # a router sent frag-needed / packet-too-big
    black_hole: bool = False
    hop: int | None = None  # the last hop that received the bigger size
    address: str | None = None  # its address (it sent time-exceeded for it)
    outcomes: tuple[SizeOutcome, ...] = field(default=())

    @property
    def probes(self) -> int:
        return len(self.outcomes)


def _passed(outcome: SizeOutcome) -> bool:
    return outcome.outcome in (ANSWERED, REFUSED)


def search(
    address: str,
    kind: str,
    port: int | None,
    *,
    timeout_s: float = 1.0,
    distance: int | None = None,
    tries: int = 3,
    known_hops: Mapping[str, int] | None = None,
) -> PathMtu:
    """The path MTU of the flow (``kind``/``port``) to ``address``, and where a bigger
    size dies (see the module)."""
    v6 = ipaddress.ip_address(address).version == 6
    flow = kind if kind == "icmp" else f"{kind}/{port}"
    local = interface_mtu(address)
    sent: list[SizeOutcome] = []

    def send(sizes: Sequence[int], ttl: int = 64) -> list[SizeOutcome]:
        got = probe(address, kind, port, [(s, ttl) for s in sizes], timeout_s=timeout_s)
        sent.extend(got)
        return got

    low = FLOOR[6 if v6 else 4]  # the largest size known to pass
    (first,) = send([local])
    if _passed(first):
        return PathMtu(flow=flow, mtu=local, local_mtu=local, outcomes=tuple(sent))
    if first.outcome == NO_CONNECTION:  # a TCP port that does not accept: nothing to size
        return PathMtu(flow=flow, mtu=None, local_mtu=local, outcomes=tuple(sent))
    high = local  # the smallest size known not to
    while sent[-1].outcome == TOO_BIG and sent[-1].mtu and low <= sent[-1].mtu < high:
        # A router names its next link's MTU: that size, and the search is over if it
        # passes (one byte more would not cross that link); else the next router's.
        named_mtu = sent[-1].mtu
        (again,) = send([named_mtu])
        if _passed(again):
            found = PathMtu(
                flow=flow, mtu=named_mtu, local_mtu=local, limit=named_mtu + 1, named=True,
                outcomes=tuple(sent),
            )  # fmt: skip
            return _placed(address, kind, port, found, distance, timeout_s, known_hops)
        high = named_mtu
    (floor,) = send([low])
    if not _passed(floor):
        return PathMtu(flow=flow, mtu=None, local_mtu=local, outcomes=tuple(sent))
    # A silent size waits its timeout: a few of the slowest answer's round trips.
    wait_s = min(timeout_s, max(0.25, 5 * (floor.rtt_ms or 0) / 1000))
    while high - low > 1:
        told = {o.mtu for o in sent if o.outcome == TOO_BIG and o.mtu and low < o.mtu < high}
        common = [c for c in COMMON if low < c < high][: BATCH // 2]
        even = {round(low + (high - low) * i / (BATCH + 1)) for i in range(1, BATCH + 1)}
        pool = sorted(even - {low, high} - set(common) - told)
        batch = sorted(told | set(common))
        batch = sorted(set(batch) | set(_spread(pool, max(BATCH - len(batch), 1))))
        got = probe(address, kind, port, [(s, 64) for s in batch], timeout_s=wait_s)
        sent.extend(got)
        low = max([low] + [o.size for o in got if _passed(o)])
        high = min([high] + [o.size for o in got if not _passed(o) and o.size > low])
        if any(o.outcome == TOO_BIG and o.mtu == low for o in sent):
            high = low + 1  # a router named this MTU, and it passes: one more would not
    named = any(o.outcome == TOO_BIG for o in sent)
    if not named:  # a lost probe is no black hole: the first lost size once more
        (again,) = send([high])
        if _passed(again) and tries > 1:  # it was loss: search again
            return search(
                address, kind, port, timeout_s=timeout_s, distance=distance, tries=tries - 1,
                known_hops=known_hops,
            )  # fmt: skip
        named = again.outcome == TOO_BIG
    found = PathMtu(
        flow=flow, mtu=low, local_mtu=local, limit=high, named=named, black_hole=not named,
        outcomes=tuple(sent),
    )  # fmt: skip
    return _placed(address, kind, port, found, distance, wait_s, known_hops)


def _placed(
    address: str,
    kind: str,
    port: int | None,
    found: PathMtu,
    distance: int | None,
    timeout_s: float,
    known_hops: Mapping[str, int] | None,
) -> PathMtu:
    """``found`` with the hop of its limit: the hop of the router that named the MTU when
    the trace knows its address (``known_hops``: address -> TTL); otherwise ``locate``
    (not for TCP: an established socket hears no time-exceeded; the other flows say)."""
    told = next((o for o in reversed(found.outcomes) if o.outcome == TOO_BIG), None)
    if told is not None and told.responder and known_hops and told.responder in known_hops:
        return replace(found, hop=known_hops[told.responder], address=told.responder)
    if kind == "tcp":
        return found
    return locate(address, kind, port, found, distance=distance, timeout_s=timeout_s)


def _spread(sizes: list[int], most: int) -> list[int]:
    """At most ``most`` of ``sizes`` (sorted), spread over their range."""
    if len(sizes) <= most:
        return sizes
    step = (len(sizes) - 1) / (most - 1)
    return sorted({sizes[round(i * step)] for i in range(most)})


def locate(
    address: str,
    kind: str,
    port: int | None,
    found: PathMtu,
    *,
    distance: int | None,
    timeout_s: float = 1.0,
) -> PathMtu:
    """The hop after which ``found.limit`` dies: that size at every TTL up to the target
    at once; the last TTL whose probe expired at a router names the last hop that got
    it (the router there could not forward it)."""
    if found.limit is None:
        return found
    last = min(distance or 30, 30)
    got = probe(
        address, kind, port, [(found.limit, ttl) for ttl in range(1, last + 1)],
        timeout_s=timeout_s,
    )  # fmt: skip
    expired = [o for o in got if o.outcome == EXPIRED]
    reached = max((o.ttl for o in expired), default=0)
    address_at = next((o.responder for o in expired if o.ttl == reached), None)
    told = next((o for o in got if o.outcome == TOO_BIG), None)
    if told is not None and told.responder:
        address_at = told.responder
    return PathMtu(
        flow=found.flow, mtu=found.mtu, local_mtu=found.local_mtu, limit=found.limit,
        named=found.named or told is not None, black_hole=found.black_hole and told is None,
        hop=reached or None, address=address_at, outcomes=found.outcomes + tuple(got),
    )  # fmt: skip
