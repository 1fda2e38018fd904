"""Reply builders: the bytes a router or a host sends back for a probe.

The simulated network uses them to answer probes without root, and lab tests use
them to forge replies; scapy checks them in the property tests.
"""

from __future__ import annotations

import struct

from reachtest.model import MplsLabel
from reachtest.packet.build import DNS_PORT, NTP_PORT, packed
from reachtest.packet.checksum import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    checksum,
    pseudo_header,
)
from reachtest.packet.parse import TCP_ACK, TCP_RST, TCP_SYN, parse_probe

IPV4_QUOTE_LIMIT = 576 - 20 - 8  # Linux quotes up to 576 bytes in all
IPV6_QUOTE_LIMIT = 1280 - 40 - 8


def ip_packet(
    src: bytes, dst: bytes, proto: int, l4: bytes, ttl: int = 64, ident: int = 1
) -> bytes:
    """An IPv4 or IPv6 packet around ``l4``; ``l4``'s checksum must already be set."""
    if len(src) == 4:
        header = bytearray(
            struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, 0, ttl, proto, 0, src, dst)
        )
        struct.pack_into("!H", header, 10, checksum(header))
        return bytes(header) + l4
    return struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, ttl, src, dst) + l4


def _with_checksum(l4: bytearray, offset: int, src: bytes, dst: bytes, proto: int) -> bytes:
    pseudo = b"" if proto == PROTO_ICMP else pseudo_header(src, dst, proto, len(l4))
    struct.pack_into("!H", l4, offset, 0)
    value = checksum(pseudo + bytes(l4))
    if proto == PROTO_UDP and value == 0:
        value = 0xFFFF
    struct.pack_into("!H", l4, offset, value)
    return bytes(l4)


def mpls_extension(labels: tuple[MplsLabel, ...]) -> bytes:
    """An RFC 4884 extension structure holding one RFC 4950 MPLS label stack object."""
    entries = b"".join(
        struct.pack(
            "!I", (m.label << 12) | (m.tc << 9) | (0x100 if m.bottom else 0) | (m.ttl & 0xFF)
        )
        for m in labels
    )
    obj = struct.pack("!HBB", 4 + len(entries), 1, 1) + entries
    header = bytearray(struct.pack("!BBH", 0x20, 0, 0))
    struct.pack_into("!H", header, 2, checksum(bytes(header) + obj))
    return bytes(header) + obj


def icmp_error(
    probe: bytes | bytearray,
    *,
    responder: str,
    icmp_type: int,
    icmp_code: int = 0,
    ttl: int = 64,
    mpls: tuple[MplsLabel, ...] = (),
    to: str | None = None,
) -> bytes:
    """An ICMP or ICMPv6 error from ``responder`` quoting ``probe`` as Linux does, sent to
    the probe's source (or ``to``: where a NAT in between delivers it)."""
    fields = parse_probe(probe)
    src = packed(responder)
    dst = packed(to) if to else fields.src
    quote = bytes(probe)
    if fields.family == 4:
        quote = quote[:IPV4_QUOTE_LIMIT]
        proto = PROTO_ICMP
    else:
        quote = quote[:IPV6_QUOTE_LIMIT]
        proto = PROTO_ICMPV6
    length_field = 0
    extension = b""
    if mpls:
        unit = 4 if fields.family == 4 else 8
        quote = quote.ljust(max(128, -(-len(quote) // unit) * unit), b"\x00")
        length_field = len(quote) // unit
        extension = mpls_extension(mpls)
    if fields.family == 4:
        header = struct.pack("!BBHxBxx", icmp_type, icmp_code, 0, length_field)
    else:
        header = struct.pack("!BBHBxxx", icmp_type, icmp_code, 0, length_field)
    l4 = bytearray(header + quote + extension)
    body = _with_checksum(l4, 2, src, dst, proto)
    return ip_packet(src, dst, proto, body, ttl)


#: Where the checksum of each probe protocol's header is.
_CHECKSUM_AT = {PROTO_TCP: 16, PROTO_UDP: 6, PROTO_ICMP: 2, PROTO_ICMPV6: 2}


def translated(probe: bytes | bytearray, *, src: str, port_xor: int) -> bytes:
    """``probe`` as a stateless source NAT forwards it: from ``src``, its source port (or
    echo identifier) xor ``port_xor``, checksums made right for the new header."""
    fields = parse_probe(probe)
    hl = fields.header_length
    new_src = packed(src)
    buf = bytearray(probe)
    if fields.family == 4:
        buf[12:16] = new_src
        struct.pack_into("!H", buf, 10, 0)
        struct.pack_into("!H", buf, 10, checksum(bytes(buf[:hl])))
    else:
        buf[8:24] = new_src
    proto = fields.proto
    if proto == PROTO_ICMP and fields.family == 6:
        proto = PROTO_ICMPV6  # its checksum covers the addresses
    at = hl + (4 if proto in (PROTO_ICMP, PROTO_ICMPV6) else 0)
    struct.pack_into("!H", buf, at, struct.unpack_from("!H", buf, at)[0] ^ port_xor)
    l4 = _with_checksum(bytearray(buf[hl:]), _CHECKSUM_AT[proto], new_src, fields.dst, proto)
    return bytes(buf[:hl]) + l4


def echo_reply(probe: bytes | bytearray, *, ttl: int = 64) -> bytes:
    """The target's echo reply to an echo-request probe."""
    fields = parse_probe(probe)
    v6 = fields.family == 6
    proto = PROTO_ICMPV6 if v6 else PROTO_ICMP
    l4 = bytearray(
        struct.pack("!BBHHH", 129 if v6 else 0, 0, 0, fields.sport, fields.seq) + fields.payload
    )
    body = _with_checksum(l4, 2, fields.dst, fields.src, proto)
    return ip_packet(fields.dst, fields.src, proto, body, ttl)


def tcp_reply(
    probe: bytes | bytearray,
    *,
    syn_ack: bool,
    ttl: int = 64,
    responder: str | None = None,
    ack_xor: int = 0,
) -> bytes:
    """A SYN-ACK (open port) or RST-ACK (closed port) answering a SYN probe.

    ``responder`` forges the source address (default: the probe's target); ``ack_xor``
    changes the ack number as a box that rewrote the SYN's sequence number leaves it.
    """
    fields = parse_probe(probe)
    src = packed(responder) if responder else fields.dst
    flags = (TCP_SYN | TCP_ACK) if syn_ack else (TCP_RST | TCP_ACK)
    seq = 0x1234567 if syn_ack else 0
    window = 65160 if syn_ack else 0
    l4 = bytearray(
        struct.pack(
            "!HHIIBBHHH",
            fields.dport,
            fields.sport,
            seq,
            ((fields.seq + 1) & 0xFFFFFFFF) ^ ack_xor,
            0x50,
            flags,
            window,
            0,
            0,
        )
    )
    body = _with_checksum(l4, 16, src, fields.src, PROTO_TCP)
    return ip_packet(src, fields.src, PROTO_TCP, body, ttl)


def service_answer(dport: int, request: bytes) -> bytes:
    """What a DNS or NTP service answers to our request; an echo of it for other ports."""
    if dport == DNS_PORT and len(request) >= 12:
        ident = request[:2]
        flags = struct.pack("!H", 0x8183)  # response, RD, RA, NXDOMAIN
        return ident + flags + request[4:]
    if dport == NTP_PORT and len(request) >= 48:
        answer = bytearray(48)
        answer[0] = 0x24  # LI 0, version 4, mode 4 (server)
        answer[1] = 2
        answer[24:32] = request[40:48]  # origin time = client's transmit time
        return bytes(answer)
    return request


def udp_reply(probe: bytes | bytearray, payload: bytes, *, ttl: int = 64) -> bytes:
    """A UDP datagram from the target's port back to the probe's source port."""
    fields = parse_probe(probe)
    l4 = bytearray(struct.pack("!HHHH", fields.dport, fields.sport, 8 + len(payload), 0) + payload)
    body = _with_checksum(l4, 6, fields.dst, fields.src, PROTO_UDP)
    return ip_packet(fields.dst, fields.src, PROTO_UDP, body, ttl)
