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
