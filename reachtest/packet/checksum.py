"""The Internet checksum (RFC 1071) and its one's-complement arithmetic (RFC 1624)."""

from __future__ import annotations

import struct

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58


def ones_add(a: int, b: int) -> int:
    """One's-complement sum of two 16-bit words."""
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """One's-complement sum of ``data`` as big-endian 16-bit words (odd length zero-padded)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum of ``data``."""
    return ~ones_sum(data) & 0xFFFF


def pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The IPv4 or IPv6 pseudo-header covered by TCP, UDP and ICMPv6 checksums."""
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def transport_checksum_ok(packet: bytes) -> bool:
    """Does the ICMP, ICMPv6, TCP or UDP checksum of this IP packet hold (True for any
    other protocol, a UDP checksum of 0 over IPv4, or a packet too short to say)? A
    packet socket sees what arrives before the kernel checks it: a reply that fails
    here would be dropped by the host, and is no answer."""
    if not packet:
        return True
    if packet[0] >> 4 == 4 and len(packet) >= 20:
        header = (packet[0] & 0x0F) * 4
        total = min(struct.unpack_from("!H", packet, 2)[0], len(packet))
        proto, src, dst = packet[9], packet[12:16], packet[16:20]
        if struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:  # a fragment: not whole here
            return True
    elif packet[0] >> 4 == 6 and len(packet) >= 40:
        header, proto = 40, packet[6]
        total = min(40 + struct.unpack_from("!H", packet, 4)[0], len(packet))
        src, dst = packet[8:24], packet[24:40]
    else:
        return True
    segment = packet[header:total]
    if proto == PROTO_ICMP:
        return len(segment) < 4 or ones_sum(segment) == 0xFFFF
    if proto not in (PROTO_TCP, PROTO_UDP, PROTO_ICMPV6) or len(segment) < 8:
        return True
    if proto == PROTO_UDP and len(src) == 4 and segment[6:8] == b"\0\0":
        return True  # no checksum (allowed over IPv4)
    return ones_sum(pseudo_header(src, dst, proto, len(segment)) + segment) == 0xFFFF
