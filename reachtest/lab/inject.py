"""The lab's on-path injector: in a router's namespace, it reads copies of the packets
the router forwards towards the server (AF_PACKET), and for each TCP segment to the
watched port whose payload holds the watched name it sends the client a RST in the
server's name (the right sequence numbers) or, for HTTP, a block page; for each DNS
query (UDP) for the watched name, a forged answer in the server's name
(``FORGED_V4``/``FORGED_V6``); out of the interface facing the client. The original is
not touched: it travels on, and the server's own answer follows the forged one (an
on-path box, as national filters that only see a copy are). Runs at real-time priority
(or the highest) when it can, so that it wins the race against the server's answer (the
scenario's server also answers 20 ms late, as a real server milliseconds away would).

Started by ``python -m reachtest.lab.services --inject ...`` (``lab up``), stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable

from reachtest.packet.checksum import checksum, pseudo_header

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
TCP_RST_ACK = 0x14
TCP_FIN_PSH_ACK = 0x19
#: The block page an on-path box answers an HTTP request with, in the server's name.
BLOCK_PAGE_BODY = b"<html><body>reachtest lab: blocked by policy</body></html>\n"
BLOCK_PAGE = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(BLOCK_PAGE_BODY)).encode() + b"\r\n\r\n" + BLOCK_PAGE_BODY
)
#: The addresses a forged DNS answer gives (the lab's; never the server's).
FORGED_V4 = "198.18.255.254"
FORGED_V6 = "2001:db8:ffff::254"


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def _split(frame: bytes, protocol: int) -> tuple[int, bytes, bytes, bytes] | None:
    """(ethertype, source, destination, transport segment) of an Ethernet ``frame``
    carrying IPv4 or IPv6 with ``protocol``; None otherwise."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    packet = frame[14:]
    if ethertype == ETH_P_IP and len(packet) >= 20 and packet[9] == protocol:
        header = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        return ethertype, packet[12:16], packet[16:20], packet[header:total]
    if ethertype == ETH_P_IPV6 and len(packet) >= 40 and packet[6] == protocol:
        length = struct.unpack_from("!H", packet, 4)[0]
        return ethertype, packet[8:24], packet[24:40], packet[40 : 40 + length]
    return None


def _ip(ethertype: int, src: bytes, dst: bytes, protocol: int, segment: bytes) -> bytes:
    if ethertype == ETH_P_IP:
        ip = bytearray(
            struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0x4000, 64, protocol,
                        0, src, dst)
        )  # fmt: skip
        struct.pack_into("!H", ip, 10, checksum(ip))
        return bytes(ip) + segment
    return struct.pack("!IHBB16s16s", 6 << 28, len(segment), protocol, 64, src, dst) + segment


def forged_dns(frame: bytes, port: int, name: bytes) -> tuple[int, bytes] | None:
    """(ethertype, IP packet of a DNS answer from the server to the client) answering
    the query in ``frame`` when it goes to UDP ``port`` and asks for ``name``: A or AAAA
    queries get ``FORGED_V4``/``FORGED_V6``, others an empty answer. None otherwise."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rdatatype
    import dns.rrset

    found = _split(frame, socket.IPPROTO_UDP)
    if found is None or len(found[3]) < 8:
        return None
    ethertype, src, dst, datagram = found
    sport, dport = struct.unpack_from("!HH", datagram)
    if dport != port:
        return None
    try:
        query = dns.message.from_wire(datagram[8:])
    except (dns.exception.DNSException, ValueError, IndexError):
        return None
    if query.flags & dns.flags.QR or len(query.question) != 1:
        return None
    question = query.question[0]
    if question.name.to_text(omit_final_dot=True).lower() != name.decode().lower():
        return None
    answer = dns.message.make_response(query)
    answer.flags |= dns.flags.RA
    forged = {dns.rdatatype.A: FORGED_V4, dns.rdatatype.AAAA: FORGED_V6}.get(question.rdtype)
    if forged is not None:
        answer.answer.append(
            dns.rrset.from_text(question.name, 300, question.rdclass, question.rdtype, forged)
        )
    payload = answer.to_wire()
    udp = bytearray(struct.pack("!HHHH", dport, sport, 8 + len(payload), 0) + payload)
    struct.pack_into("!H", udp, 6, checksum(pseudo_header(dst, src, 17, len(udp)) + udp) or 0xFFFF)
    return ethertype, _ip(ethertype, dst, src, socket.IPPROTO_UDP, bytes(udp))


def _forged_tcp(
    frame: bytes, port: int, pattern: bytes, flags: int, data: bytes
) -> tuple[int, bytes] | None:
    """(ethertype, IP packet of a segment from the server to the client with ``flags``
    and ``data``, right sequence numbers) answering the segment in the Ethernet
    ``frame`` when it goes to ``port`` and carries ``pattern``; None otherwise."""
    found = _split(frame, socket.IPPROTO_TCP)
    if found is None:
        return None
    ethertype, src, dst, segment = found
    if len(segment) < 20:
        return None
    sport, dport, seq, ack = struct.unpack_from("!HHII", segment)
    payload = segment[(segment[12] >> 4) * 4 :]
    if dport != port or not payload or pattern not in payload:
        return None
    window = 512 if data else 0
    tcp = bytearray(
        struct.pack("!HHIIBBHHH", dport, sport, ack, (seq + len(payload)) & 0xFFFFFFFF,
                    5 << 4, flags, window, 0, 0) + data
    )  # fmt: skip
    struct.pack_into("!H", tcp, 16, checksum(pseudo_header(dst, src, 6, len(tcp)) + tcp))
    return ethertype, _ip(ethertype, dst, src, socket.IPPROTO_TCP, bytes(tcp))


def forged_reset(frame: bytes, port: int, pattern: bytes) -> tuple[int, bytes] | None:
    """A RST in the server's name for a segment to ``port`` carrying ``pattern``."""
    return _forged_tcp(frame, port, pattern, TCP_RST_ACK, b"")


def forged_page(frame: bytes, port: int, pattern: bytes) -> tuple[int, bytes] | None:
    """A block page (``BLOCK_PAGE``, then FIN) in the server's name for a segment to
    ``port`` carrying ``pattern``: the client reads it as the server's answer."""
    return _forged_tcp(frame, port, pattern, TCP_FIN_PSH_ACK, BLOCK_PAGE)


#: What the injector forges, by the kind of request it watches.
FORGERS: dict[str, Callable[[bytes, int, bytes], tuple[int, bytes] | None]] = {
    "tcp": forged_reset,
    "page": forged_page,
    "dns": forged_dns,
}


def inject(
    watch: str,
    send: str,
    own_mac: str,
    peer_mac: str,
    port: int,
    pattern: bytes,
    ready: Callable[[], None] | None = None,
    kind: str = "tcp",
) -> None:
    """Watch ``watch`` (the interface towards the server) and inject through ``send``
    (towards the client, from ``own_mac`` to ``peer_mac``) until stopped: ``kind`` tcp
    (a reset for segments carrying ``pattern``), page (a block page for them) or dns (an
    answer for queries for the name ``pattern``)."""
    forge = FORGERS[kind]
    if kind == "dns":  # dnspython loaded now, not at the first query (the race is close)
        forged_dns(b"", port, pattern)
    try:  # first in line for the CPU: real time, or at least the highest priority
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(-20)
    with (
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sniff,
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as out,
    ):
        sniff.bind((watch, 0))
        out.bind((send, 0))
        head = _mac(peer_mac) + _mac(own_mac)
        if ready is not None:
            ready()
        while True:
            frame, address = sniff.recvfrom(65535)
            if address[2] != PACKET_OUTGOING:  # the forwarded copy, on its way out
                continue
            forged = forge(frame, port, pattern)
            if forged is not None:
                ethertype, packet = forged
                out.send(head + struct.pack("!H", ethertype) + packet)
