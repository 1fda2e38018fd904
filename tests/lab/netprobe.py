"""Plain-socket probes for lab tests: one probe, one answer, independent of reachtest's engine.

Call them inside ``reachtest.lab.netns.entered(client_netns)``: every socket is made
there. ICMP errors are caught on a raw ICMP socket and matched to the probe by the
quoted header (destination and ports, or echo identifier); a port or identifier as the
lab's stateless NAT translates it (``NAT_PORT_XOR``) counts too: that NAT leaves quotes as
it forwarded them.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass

from reachtest.lab.plan import NAT_PORT_XOR

ICMP4_KINDS = {
    (11, 0): "time-exceeded",
    (3, 3): "port-unreachable",
    (3, 13): "admin-prohibited",
    (3, 9): "admin-prohibited",
    (3, 10): "admin-prohibited",
    (3, 0): "net-unreachable",
    (3, 1): "host-unreachable",
    (0, 0): "echo-reply",
}
ICMP6_KINDS = {
    (3, 0): "time-exceeded",
    (1, 4): "port-unreachable",
    (1, 1): "admin-prohibited",
    (1, 0): "net-unreachable",
    (1, 3): "host-unreachable",
    (129, 0): "echo-reply",
}
PROTO = {"icmp": 1, "tcp": 6, "udp": 17}
PROTO6 = {"icmp": 58, "tcp": 6, "udp": 17}


@dataclass(frozen=True)
class Answer:
    """What came back: kind (as reachtest's ReplyKind spells it) and who sent it."""

    kind: str
    responder: str | None = None


TIMEOUT = Answer("timeout")


def _v6(dst: str) -> bool:
    return ipaddress.ip_address(dst).version == 6


def _raw_icmp(v6: bool) -> socket.socket:
    if v6:
        return socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def _set_ttl(sock: socket.socket, v6: bool, ttl: int) -> None:
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)


def _parse_icmp(packet: bytes, sender: str, v6: bool) -> tuple[int, int, bytes, str]:
    """(type, code, rest after the 8-byte ICMP header, sender) of a raw-socket datagram."""
    if not v6:
        ihl = (packet[0] & 0x0F) * 4
        packet = packet[ihl:]
    return packet[0], packet[1], packet[8:], sender


def _quoted(rest: bytes, v6: bool) -> tuple[int, str, bytes]:
    """(protocol, destination, transport header) of the datagram an ICMP error quotes."""
    if v6:
        if len(rest) < 40:
            return -1, "", b""
        return rest[6], str(ipaddress.IPv6Address(rest[24:40])), rest[40:]
    if len(rest) < 20:
        return -1, "", b""
    ihl = (rest[0] & 0x0F) * 4
    return rest[9], str(ipaddress.IPv4Address(rest[16:20])), rest[ihl:]


def _kind(icmp_type: int, code: int, v6: bool) -> str:
    table = ICMP6_KINDS if v6 else ICMP4_KINDS
    return table.get((icmp_type, code), f"icmp-{icmp_type}/{code}")


def _match_error(
    raw: socket.socket, v6: bool, dst: str, proto: str, sport: int, dport: int, deadline: float
) -> Answer | None:
    """Read the raw socket until an ICMP error quoting our probe arrives or time is up."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([raw], [], [], left)
        if not ready:
            return None
        packet, addr = raw.recvfrom(65535)
        icmp_type, code, rest, sender = _parse_icmp(packet, addr[0], v6)
        if (v6 and icmp_type >= 128) or (not v6 and icmp_type in (0, 8)):
            continue
        qproto, qdst, header = _quoted(rest, v6)
        want = (PROTO6 if v6 else PROTO)[proto]
        if qproto != want or qdst != dst or len(header) < 4:
            continue
        qsport, qdport = struct.unpack("!HH", header[:4])
        if qsport in (sport, sport ^ NAT_PORT_XOR) and qdport == dport:
            return Answer(_kind(icmp_type, code, v6), sender)


def _syn_ack_seen(raw_tcp: socket.socket, v6: bool, dst: str, port: int, sport: int) -> bool:
    """Is a SYN-ACK from ``dst``:``port`` to ``sport`` waiting on the raw TCP socket, whatever
    its ack number (a box that rewrote sequence numbers leaves the kernel's connect hanging)?"""
    while select.select([raw_tcp], [], [], 0)[0]:
        packet, addr = raw_tcp.recvfrom(65535)
        header = packet if v6 else packet[(packet[0] & 0x0F) * 4 :]
        if len(header) < 14 or ipaddress.ip_address(addr[0]) != ipaddress.ip_address(dst):
            continue
        src_port, dst_port = struct.unpack("!HH", header[:4])
        if (src_port, dst_port) == (port, sport) and header[13] & 0x12 == 0x12:
            return True
    return False


def tcp_probe(dst: str, port: int, ttl: int = 64, timeout_s: float = 0.5) -> Answer:
    """A TCP connect with the given TTL: syn-ack (also one the kernel refuses for its ack
    number), reset, an ICMP error, or timeout."""
    v6 = _v6(dst)
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with (
        _raw_icmp(v6) as raw,
        socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP) as raw_tcp,
        socket.socket(family, socket.SOCK_STREAM) as sock,
    ):
        _set_ttl(sock, v6, ttl)
        sock.setblocking(False)
        sock.bind(("::" if v6 else "0.0.0.0", 0))
        sport = sock.getsockname()[1]
        deadline = time.monotonic() + timeout_s
        code = sock.connect_ex((dst, port))
        if code not in (errno.EINPROGRESS, 0):
            return Answer(f"error-{errno.errorcode.get(code, code)}")
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            readable, writable, _ = select.select([raw, raw_tcp], [sock], [], max(left, 0))
            if raw_tcp in readable and _syn_ack_seen(raw_tcp, v6, dst, port, sport):
                return Answer("tcp-syn-ack", dst)
            if raw in readable:
                found = _match_error(raw, v6, dst, "tcp", sport, port, time.monotonic() + 0.001)
                if found:
                    return found
            if sock in writable:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    return Answer("tcp-syn-ack", dst)
                if err == errno.ECONNREFUSED:
                    return Answer("tcp-rst", dst)
                # An ICMP error ended the connect: its packet is on the raw socket.
                found = _match_error(raw, v6, dst, "tcp", sport, port, time.monotonic() + 0.2)
                return found or Answer(f"error-{errno.errorcode.get(err, err)}")
        return TIMEOUT


def udp_probe(
    dst: str,
    port: int,
    payload: bytes = b"",
    ttl: int = 64,
    timeout_s: float = 0.5,
    sport: int = 0,
) -> Answer:
    """A UDP datagram with the given TTL (from ``sport``, 0 = any): udp-reply, an ICMP
    error, or timeout."""
    v6 = _v6(dst)
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with _raw_icmp(v6) as raw, socket.socket(family, socket.SOCK_DGRAM) as sock:
        _set_ttl(sock, v6, ttl)
        sock.bind(("::" if v6 else "0.0.0.0", sport))
        sport = sock.getsockname()[1]
        sock.sendto(payload, (dst, port))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([raw, sock], [], [], max(deadline - time.monotonic(), 0))
            if sock in readable:
                try:
                    _, addr = sock.recvfrom(65535)
                    return Answer("udp-reply", addr[0])
                except OSError:
                    pass  # the ICMP error also surfaces here; the raw socket has its details
            if raw in readable:
                found = _match_error(raw, v6, dst, "udp", sport, port, time.monotonic() + 0.001)
                if found:
                    return found
        return TIMEOUT


def _echo_request(ident: int, seq: int, v6: bool) -> bytes:
    body = b"reachtest-lab-test"
    icmp_type = 128 if v6 else 8
    header = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq)
    if v6:
        return header + body  # the kernel fills in the ICMPv6 checksum on raw sockets
    data = header + body
    total = sum(struct.unpack(f"!{len(data) // 2}H", data + b"\0" * (len(data) % 2)))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    checksum = ~total & 0xFFFF
    return struct.pack("!BBHHH", icmp_type, 0, checksum, ident, seq) + body


def _echo_answer(
    packet: bytes, sender: str, v6: bool, dst: str, ident: int
) -> tuple[int, Answer] | None:
    icmp_type, code, rest, _ = _parse_icmp(packet, sender, v6)
    reply_type = 129 if v6 else 0
    full = packet if v6 else packet[(packet[0] & 0x0F) * 4 :]
    if icmp_type == reply_type:
        rid, seq = struct.unpack("!HH", full[4:8])
        return (seq, Answer("echo-reply", sender)) if rid == ident and sender == dst else None
    if (v6 and icmp_type >= 128) or (not v6 and icmp_type == 8):
        return None
    qproto, qdst, header = _quoted(rest, v6)
    if qproto != (58 if v6 else 1) or qdst != dst or len(header) < 8:
        return None
    qid, qseq = struct.unpack("!HH", header[4:8])
    ours = qid in (ident, ident ^ NAT_PORT_XOR)
    return (qseq, Answer(_kind(icmp_type, code, v6), sender)) if ours else None


def echo_burst(
    dst: str, count: int, ttl: int = 64, timeout_s: float = 0.5, gap_s: float = 0.0
) -> Counter[Answer]:
    """Send ``count`` echo requests (``gap_s`` apart) and count the answers by kind and sender."""
    v6 = _v6(dst)
    ident = os.getpid() & 0xFFFF ^ int(time.monotonic_ns() & 0xFFFF)
    seen: dict[int, Answer] = {}
    with _raw_icmp(v6) as raw:
        _set_ttl(raw, v6, ttl)
        for seq in range(count):
            raw.sendto(_echo_request(ident, seq, v6), (dst, 0))
            if gap_s:
                time.sleep(gap_s)
        deadline = time.monotonic() + timeout_s
        while len(seen) < count:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([raw], [], [], left)[0]:
                break
            packet, addr = raw.recvfrom(65535)
            found = _echo_answer(packet, addr[0], v6, dst, ident)
            if found:
                seen.setdefault(found[0], found[1])
    counts: Counter[Answer] = Counter(seen.values())
    counts[TIMEOUT] = count - len(seen)
    return +counts if counts[TIMEOUT] == 0 else counts


def echo_probe(dst: str, ttl: int = 64, timeout_s: float = 0.5) -> Answer:
    """One echo request: echo-reply, an ICMP error, or timeout."""
    (answer,) = echo_burst(dst, 1, ttl, timeout_s).keys()
    return answer


def dns_query(name: str) -> bytes:
    import dns.message

    return bytes(dns.message.make_query(name, "A").to_wire())


def ntp_request() -> bytes:
    """A minimal NTP v4 client request (mode 3) with a transmit timestamp."""
    now = time.time() + 2208988800
    packet = bytearray(48)
    packet[0] = (4 << 3) | 3
    struct.pack_into("!II", packet, 40, int(now), int((now % 1) * 2**32))
    return bytes(packet)


def client_hello(name: str) -> bytes:
    """A real TLS ClientHello naming ``name`` (SNI), as the ssl module makes it."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello
        tls.do_handshake()
    return outgoing.read()


def http_request(name: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()


def request_probe(dst: str, port: int, request: bytes, ttl: int, timeout_s: float = 1.0) -> Answer:
    """A request sent after a completed handshake (at the normal TTL) with ``ttl``: the
    server's answer (``answered``), a reset (``tcp-rst``), an ICMP error quoting our data
    segment (its kind, from the router), or timeout. One connection per call."""
    v6 = _v6(dst)
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with _raw_icmp(v6) as raw, socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect((dst, port))
        sport = sock.getsockname()[1]
        _set_ttl(sock, v6, ttl)
        sock.setblocking(False)
        sock.send(request)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([raw, sock], [], [], deadline - time.monotonic())
            if sock in readable:
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    return Answer("tcp-rst", dst)
                return Answer("answered" if data else "closed", dst)
            if raw in readable:
                found = _match_error(raw, v6, dst, "tcp", sport, port, time.monotonic() + 0.001)
                if found:
                    return found
        return TIMEOUT
