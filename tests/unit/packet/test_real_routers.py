"""What real routers send, read as tcpdump and tshark read it (issue 27): the next-hop
MTU of frag-needed and packet-too-big, a quote that ends where its own IP length says
(not at RFC 4884's padding), MPLS extensions at octet 128 whatever the length field says
(and in ICMPv6 without one), and a time exceeded in reassembly kept apart from a hop."""

from __future__ import annotations

import struct

from scapy.contrib.mpls import MPLS, ICMPExtension_MPLS
from scapy.layers.inet import ICMP, IP, UDP, ICMPExtension_Header
from scapy.layers.inet6 import (
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
)
from scapy.packet import Raw

from reachtest.model import ReplyKind
from reachtest.packet.checksum import checksum
from reachtest.packet.parse import parse

SRC4, DST4, HOP4 = "198.18.1.1", "198.18.6.2", "198.18.3.2"
SRC6, DST6, HOP6 = "2001:db8:0:1::1", "2001:db8:0:6::2", "2001:db8:0:3::2"
PAYLOAD = b"\x12\x34\x00\x00"


def udp_probe4(size: int = 0) -> bytes:
    return bytes(
        IP(src=SRC4, dst=DST4, ttl=1, id=7)
        / UDP(sport=1000, dport=53)
        / Raw(PAYLOAD + b"\xaa" * size)
    )


def udp_probe6() -> bytes:
    return bytes(IPv6(src=SRC6, dst=DST6, hlim=1) / UDP(sport=1000, dport=53) / Raw(PAYLOAD))


def mpls_extension(label: int) -> bytes:
    """An RFC 4884 extension structure (version 2) with one MPLS object, checksummed."""
    body = bytes(ICMPExtension_MPLS(stack=[MPLS(label=label, ttl=1, s=1)]))
    header = bytearray(struct.pack("!BBH", 0x20, 0, 0))
    whole = header + body
    struct.pack_into("!H", whole, 2, checksum(bytes(whole)))
    return bytes(whole)


def icmp4(kind: int, code: int, rest: bytes, data: bytes) -> bytes:
    """An ICMPv4 error with the 4 bytes after its checksum given (``rest``)."""
    message = bytearray(struct.pack("!BBH", kind, code, 0) + rest + data)
    struct.pack_into("!H", message, 2, checksum(bytes(message)))
    return bytes(IP(src=HOP4, dst=SRC4, ttl=62, proto=1) / Raw(bytes(message)))


def icmp6(kind: int, code: int, rest: bytes, data: bytes) -> bytes:
    ip = IPv6(src=HOP6, dst=SRC6, hlim=62, nh=58)
    return bytes(ip / Raw(struct.pack("!BBH", kind, code, 0) + rest + data))


def test_frag_needed_names_the_next_hop_mtu() -> None:
    got = parse(
        bytes(IP(src=HOP4, dst=SRC4) / ICMP(type=3, code=4, nexthopmtu=1400) / udp_probe4())
    )
    assert got is not None and got.kind is ReplyKind.FRAG_NEEDED and got.mtu == 1400
    assert (got.lport, got.rport) == (1000, 53)  # still matched to the probe it quotes


def test_packet_too_big_names_the_mtu() -> None:
    got = parse(bytes(IPv6(src=HOP6, dst=SRC6) / ICMPv6PacketTooBig(mtu=1280) / udp_probe6()))
    assert got is not None and got.kind is ReplyKind.PACKET_TOO_BIG and got.mtu == 1280
    assert got.quote is not None and (got.lport, got.rport) == (1000, 53)


def test_a_reassembly_timeout_is_no_hop() -> None:
    v4 = parse(bytes(IP(src=HOP4, dst=SRC4) / ICMP(type=11, code=1) / udp_probe4()))
    v6 = parse(bytes(IPv6(src=HOP6, dst=SRC6) / ICMPv6TimeExceeded(code=1) / udp_probe6()))
    assert v4 is not None and v4.kind is ReplyKind.REASSEMBLY_TIMEOUT
    assert v6 is not None and v6.kind is ReplyKind.REASSEMBLY_TIMEOUT
    plain = parse(bytes(IP(src=HOP4, dst=SRC4) / ICMP(type=11, code=0) / udp_probe4()))
    assert plain is not None and plain.kind is ReplyKind.TIME_EXCEEDED


def test_the_quote_ends_at_its_own_length_not_at_the_padding() -> None:
    """RFC 4884: a quote of 32 bytes padded with zeros to 128, then extensions; the
    length field says 128. The probe's payload is its 4 bytes, not 100 zeros more."""
    probe = udp_probe4()
    padded = probe + b"\x00" * (128 - len(probe))
    got = parse(icmp4(11, 0, struct.pack("!xBxx", 32), padded + mpls_extension(24001)))
    assert got is not None and got.payload == PAYLOAD
    assert [label.label for label in got.mpls] == [24001]


def test_mpls_at_octet_128_with_a_length_field_that_says_less() -> None:
    """Routers that set the length to the quote they copied (here 32 bytes, 8 words)
    but place the extensions at octet 128: tcpdump and Go's x/net read them there."""
    probe = udp_probe4()
    padded = probe + b"\x00" * (128 - len(probe))
    got = parse(icmp4(11, 0, struct.pack("!xBxx", len(probe) // 4), padded + mpls_extension(16)))
    assert got is not None and [label.label for label in got.mpls] == [16]
    assert got.payload == PAYLOAD


def test_icmpv6_extensions_without_a_length_field() -> None:
    """Cisco IOS: ICMPv6 time exceeded with extensions at octet 128, length field 0."""
    probe = udp_probe6()
    padded = probe + b"\x00" * (128 - len(probe))
    got = parse(icmp6(3, 0, b"\x00\x00\x00\x00", padded + mpls_extension(777)))
    assert got is not None and got.kind is ReplyKind.TIME_EXCEEDED
    assert [label.label for label in got.mpls] == [777] and got.payload == PAYLOAD


def test_octet_128_is_not_taken_for_extensions_without_a_valid_header() -> None:
    """A long quote whose byte 128 happens to start with 0x2_: no valid checksum, no
    labels, and the quote keeps its length."""
    probe = udp_probe4(200)
    bogus = bytearray(probe)
    bogus[128] = 0x20
    got = parse(icmp4(11, 0, b"\x00\x00\x00\x00", bytes(bogus)))
    assert got is not None and got.mpls == () and len(got.payload) == 204


def test_rfc4884_extensions_still_read_where_the_length_says() -> None:
    probe = udp_probe4()
    padded = probe + b"\x00" * (128 - len(probe))
    scapy_made = IP(src=HOP4, dst=SRC4) / ICMP(type=11, code=0, length=32) / Raw(padded)
    scapy_made = (
        scapy_made / ICMPExtension_Header() / ICMPExtension_MPLS(stack=[MPLS(label=5, ttl=1, s=1)])
    )
    got = parse(bytes(scapy_made))
    assert got is not None and [label.label for label in got.mpls] == [5]
