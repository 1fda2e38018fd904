"""Probe templates and reply parsers, with scapy as the oracle (hypothesis properties).

What we build, scapy decodes to the same fields with valid checksums; what scapy builds,
we parse to the same fields.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.mpls import MPLS, ICMPExtension_MPLS
from scapy.layers.dns import DNS
from scapy.layers.inet import ICMP, IP, TCP, UDP, ICMPExtension_Header
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6TimeExceeded,
    IPv6,
)
from scapy.layers.ntp import NTPHeader
from scapy.packet import Packet, Raw

from reachtest.model import MplsLabel, Protocol, ReplyKind
from reachtest.packet import replies
from reachtest.packet.build import EDNS_OPTION_CODE, ProbeTemplate
from reachtest.packet.identity import SPACE, IdentityCodec
from reachtest.packet.parse import Malformed, parse, parse_extensions

SRC4, DST4, HOP4 = "198.18.1.1", "198.18.6.2", "198.18.3.2"
SRC6, DST6, HOP6 = "2001:db8:0:1::1", "2001:db8:0:6::2", "2001:db8:0:3::2"

families = st.sampled_from([4, 6])
protocols = st.sampled_from([Protocol.ICMP, Protocol.TCP, Protocol.UDP])
ports = st.integers(1, 65535)
ttls = st.integers(1, 255)
probe_numbers = st.integers(0, SPACE - 1)
salts = st.integers(0, SPACE - 1)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def template(
    family: int, protocol: Protocol, sport: int, dport: int, salt_a: int = 1, salt_b: int = 2
) -> ProbeTemplate:
    return ProbeTemplate(
        src=SRC4 if family == 4 else SRC6,
        dst=DST4 if family == 4 else DST6,
        protocol=protocol,
        sport=sport,
        dport=dport if protocol is not Protocol.ICMP else 0,
        codec=IdentityCodec(salt_a, salt_b),
    )


def recomputed(pkt: Packet) -> Packet:
    """``pkt`` rebuilt by scapy with the checksum of every layer recomputed."""
    clone = pkt.copy()
    layer: Packet = clone
    while layer:
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                delattr(layer, name)
        layer = layer.payload
    return clone.__class__(bytes(clone))


# -- identity ---------------------------------------------------------------------------


@given(salts, salts, probe_numbers)
def test_identity_words_invert_and_avoid_zero_and_ffff(sa: int, sb: int, k: int) -> None:
    codec = IdentityCodec(sa, sb)
    a, b = codec.a(k), codec.b(k)
    assert 1 <= a <= 0xFFFE and 1 <= b <= 0xFFFE
    assert codec.k_from_a(a) == k and codec.k_from_b(b) == k


def test_identity_words_are_a_bijection_over_the_window() -> None:
    codec = IdentityCodec(12345, 54321)
    assert len({codec.a(k) for k in range(SPACE)}) == SPACE
    assert len({codec.b(k) for k in range(SPACE)}) == SPACE
    assert codec.k_from_a(0) == -1 and codec.k_from_b(0xFFFF) == -1


# -- what we build, scapy decodes --------------------------------------------------------


@FAST
@given(families, protocols, ports, ports, ttls, probe_numbers, salts, salts)
def test_scapy_decodes_our_probes_with_valid_checksums(
    family: int, protocol: Protocol, sport: int, dport: int, ttl: int, k: int, sa: int, sb: int
) -> None:
    t = template(family, protocol, sport, dport, sa, sb)
    raw = bytes(t.build(ttl, k))
    a, b = t.codec.a(k), t.codec.b(k)
    pkt: Packet = IP(raw) if family == 4 else IPv6(raw)
    assert bytes(recomputed(pkt)) == raw, "a checksum differs from scapy's"
    if family == 4:
        assert (pkt.ttl, pkt.id, pkt.src, pkt.dst) == (ttl, b, SRC4, DST4)
        assert pkt.flags == "DF"
    else:
        assert (pkt.hlim, pkt.src, pkt.dst, pkt.fl) == (ttl, SRC6, DST6, 0)
    if protocol is Protocol.TCP:
        tcp = pkt[TCP]
        assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, str(tcp.flags)) == (
            sport,
            dport,
            a << 16 | b,
            0,
            "S",
        )
        assert [name for name, _ in tcp.options] == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    elif protocol is Protocol.UDP:
        udp = pkt[UDP]
        assert (udp.sport, udp.dport, udp.chksum) == (sport, dport, a)
    else:
        echo = pkt[ICMP] if family == 4 else pkt[ICMPv6EchoRequest]
        assert (echo.id, echo.seq) == (sport, a)


@FAST
@given(families, protocols, ports, st.integers(1, 65535), probe_numbers, probe_numbers)
def test_the_parts_routers_hash_never_change_between_probes(
    family: int, protocol: Protocol, sport: int, dport: int, k1: int, k2: int
) -> None:
    """Paris: addresses, protocol, ports and (for ICMP) the checksum stay fixed."""
    t = template(family, protocol, sport, dport)
    p1, p2 = bytes(t.build(5, k1)), bytes(t.build(9, k2))
    hl = 20 if family == 4 else 40
    fixed = slice(hl, hl + 4)  # ports, or ICMP type, code and checksum
    assert p1[fixed] == p2[fixed]
    if family == 4:
        assert p1[12:20] == p2[12:20] and p1[9] == p2[9]
    else:
        assert p1[0:6] == p2[0:6] and p1[8:40] == p2[8:40]


@pytest.mark.parametrize("family", [4, 6])
def test_dns_probe_is_a_real_query_carrying_its_identity(family: int) -> None:
    t = template(family, Protocol.UDP, 40000, 53)
    raw = bytes(t.build(7, 42))
    dns = (IP(raw) if family == 4 else IPv6(raw))[DNS]
    assert dns.qr == 0 and dns.rd == 1 and dns.qdcount == 1 and dns.arcount == 1
    assert dns.id == t.codec.b(42)
    assert dns.qd[0].qtype == 2  # NS
    opt = dns.ar[0]
    assert opt.type == 41 and opt.rdata[0].optcode == EDNS_OPTION_CODE


@pytest.mark.parametrize("family", [4, 6])
def test_ntp_probe_is_a_client_request(family: int) -> None:
    t = template(family, Protocol.UDP, 40000, 123)
    raw = bytes(t.build(7, 42))
    ntp = (IP(raw) if family == 4 else IPv6(raw))[NTPHeader]
    assert (ntp.version, ntp.mode) == (4, 3)
    assert t.b_from_payload(
        bytes((IP(raw) if family == 4 else IPv6(raw))[UDP].payload)
    ) == t.codec.b(42)


def test_other_udp_ports_get_only_the_identity_then_the_users_payload() -> None:
    t = ProbeTemplate(
        src=SRC4, dst=DST4, protocol=Protocol.UDP, sport=1, dport=9, udp_payload=b"hello"
    )
    payload = bytes(IP(bytes(t.build(3, 0)))[UDP].payload)
    assert len(payload) == 4 + 5 and payload.endswith(b"hello")


# -- what scapy builds, we parse ---------------------------------------------------------


def scapy_probe(
    family: int, protocol: Protocol, sport: int, dport: int, seq: int, ident: int
) -> Packet:
    ip: Packet = (
        IP(src=SRC4, dst=DST4, ttl=1, id=ident) if family == 4 else IPv6(src=SRC6, dst=DST6, hlim=1)
    )
    if protocol is Protocol.TCP:
        return ip / TCP(sport=sport, dport=dport, seq=seq, flags="S")
    if protocol is Protocol.UDP:
        return ip / UDP(sport=sport, dport=dport) / Raw(b"\x12\x34\x00\x00")
    echo = (
        ICMP(id=sport, seq=seq & 0xFFFF)
        if family == 4
        else ICMPv6EchoRequest(id=sport, seq=seq & 0xFFFF)
    )
    return ip / echo / Raw(b"\x12\x34\x00\x00")


@FAST
@given(
    families,
    protocols,
    ports,
    ports,
    st.integers(0, 0xFFFFFFFF),
    st.integers(1, 0xFFFF),
    st.integers(1, 255),
)
def test_we_parse_scapy_time_exceeded_down_to_the_quoted_probe(
    family: int, protocol: Protocol, sport: int, dport: int, seq: int, ident: int, ttl: int
) -> None:
    probe = scapy_probe(family, protocol, sport, dport, seq, ident)
    if family == 4:
        reply = IP(src=HOP4, dst=SRC4, ttl=ttl) / ICMP(type=11, code=0) / probe
    else:
        reply = IPv6(src=HOP6, dst=SRC6, hlim=ttl) / ICMPv6TimeExceeded() / probe
    got = parse(bytes(reply))
    assert got is not None
    assert got.kind is ReplyKind.TIME_EXCEEDED and got.is_error
    assert (got.responder, got.reply_ttl) == (reply.src and _packed(reply.src), ttl)
    assert got.remote == _packed(DST4 if family == 4 else DST6)
    assert got.local == _packed(SRC4 if family == 4 else SRC6)
    assert got.quote is not None and got.quote.ttl == 1
    assert got.ip_id == (ident if family == 4 else -1)
    if protocol is Protocol.TCP:
        assert (got.lport, got.rport, got.ident_a, got.ident_b) == (
            sport,
            dport,
            seq >> 16,
            seq & 0xFFFF,
        )
    elif protocol is Protocol.UDP:
        built = bytes(probe[UDP])
        assert (got.lport, got.rport, got.ident_a) == (
            sport,
            dport,
            struct.unpack("!H", built[6:8])[0],
        )
        assert got.payload == b"\x12\x34\x00\x00"
    else:
        assert (got.lport, got.rport, got.ident_a, got.payload[:2]) == (
            sport,
            0,
            seq & 0xFFFF,
            b"\x12\x34",
        )


def _packed(address: str) -> bytes:
    import socket

    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


UNREACH_V4 = {
    0: ReplyKind.NET_UNREACHABLE,
    1: ReplyKind.HOST_UNREACHABLE,
    2: ReplyKind.PROTOCOL_UNREACHABLE,
    3: ReplyKind.PORT_UNREACHABLE,
    4: ReplyKind.FRAG_NEEDED,
    9: ReplyKind.ADMIN_PROHIBITED,
    10: ReplyKind.ADMIN_PROHIBITED,
    13: ReplyKind.ADMIN_PROHIBITED,
}
UNREACH_V6 = {
    0: ReplyKind.NET_UNREACHABLE,
    1: ReplyKind.ADMIN_PROHIBITED,
    2: ReplyKind.UNREACHABLE,
    3: ReplyKind.HOST_UNREACHABLE,
    4: ReplyKind.PORT_UNREACHABLE,
    5: ReplyKind.ADMIN_PROHIBITED,
    6: ReplyKind.ADMIN_PROHIBITED,
}


@pytest.mark.parametrize(("code", "kind"), UNREACH_V4.items())
def test_icmpv4_unreachable_codes(code: int, kind: ReplyKind) -> None:
    probe = scapy_probe(4, Protocol.UDP, 1000, 53, 0, 7)
    got = parse(bytes(IP(src=HOP4, dst=SRC4) / ICMP(type=3, code=code) / probe))
    assert got is not None and got.kind is kind and got.icmp_code == code


@pytest.mark.parametrize(("code", "kind"), UNREACH_V6.items())
def test_icmpv6_unreachable_codes(code: int, kind: ReplyKind) -> None:
    probe = scapy_probe(6, Protocol.TCP, 1000, 443, 5, 7)
    got = parse(bytes(IPv6(src=HOP6, dst=SRC6) / ICMPv6DestUnreach(code=code) / probe))
    assert got is not None and got.kind is kind and got.icmp_type == 1


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(
    ("flags", "kind"), [("SA", ReplyKind.TCP_SYN_ACK), ("RA", ReplyKind.TCP_RST)]
)
def test_we_parse_scapy_syn_ack_and_rst(family: int, flags: str, kind: ReplyKind) -> None:
    ip: Packet = (
        IP(src=DST4, dst=SRC4, ttl=60) if family == 4 else IPv6(src=DST6, dst=SRC6, hlim=60)
    )
    got = parse(bytes(ip / TCP(sport=443, dport=40000, flags=flags, seq=99, ack=0x12345679)))
    assert got is not None and got.kind is kind and not got.is_error
    assert (got.lport, got.rport, got.ident_a, got.ident_b, got.reply_ttl) == (
        40000,
        443,
        0x1234,
        0x5678,
        60,
    )


@pytest.mark.parametrize("family", [4, 6])
def test_we_parse_scapy_echo_reply_and_udp_reply(family: int) -> None:
    if family == 4:
        echo = IP(src=DST4, dst=SRC4) / ICMP(type=0, id=77, seq=1234) / Raw(b"\x00\x05\x00\x00")
        udp = IP(src=DST4, dst=SRC4) / UDP(sport=53, dport=40000) / Raw(b"answer")
    else:
        echo = (
            IPv6(src=DST6, dst=SRC6) / ICMPv6EchoReply(id=77, seq=1234) / Raw(b"\x00\x05\x00\x00")
        )
        udp = IPv6(src=DST6, dst=SRC6) / UDP(sport=53, dport=40000) / Raw(b"answer")
    got = parse(bytes(echo))
    assert got is not None and got.kind is ReplyKind.ECHO_REPLY
    assert (got.lport, got.ident_a, got.ident_b) == (77, 1234, 5)
    got = parse(bytes(udp))
    assert got is not None and got.kind is ReplyKind.UDP_REPLY
    assert (got.lport, got.rport, got.payload) == (40000, 53, b"answer")


def test_echo_requests_and_plain_tcp_are_not_replies() -> None:
    assert parse(bytes(IP(src=DST4, dst=SRC4) / ICMP(type=8))) is None
    assert parse(bytes(IP(src=DST4, dst=SRC4) / TCP(flags="PA"))) is None
    assert parse(bytes(IPv6(src=DST6, dst=SRC6) / ICMPv6EchoRequest())) is None


@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFFF), st.integers(0, 7), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    )
)
def test_mpls_labels_in_an_rfc4884_extension_built_by_scapy(
    stack: list[tuple[int, int, int]],
) -> None:
    entries = [
        MPLS(label=label, cos=tc, s=int(i == len(stack) - 1), ttl=ttl)
        for i, (label, tc, ttl) in enumerate(stack)
    ]
    probe = scapy_probe(4, Protocol.UDP, 1000, 53, 0, 7)
    ext = ICMPExtension_Header() / ICMPExtension_MPLS(stack=entries)
    reply = IP(src=HOP4, dst=SRC4) / ICMP(type=11, code=0, ext=ext) / probe
    got = parse(bytes(reply))
    assert got is not None and got.kind is ReplyKind.TIME_EXCEEDED
    want = tuple(
        MplsLabel(label=label, tc=tc, bottom=i == len(stack) - 1, ttl=ttl)
        for i, (label, tc, ttl) in enumerate(stack)
    )
    assert got.mpls == want
    assert got.lport == 1000  # the quote is still read, up to the extension


def test_our_mpls_extension_round_trips() -> None:
    labels = (
        MplsLabel(label=16000, tc=0, bottom=False, ttl=1),
        MplsLabel(label=3, tc=5, bottom=True, ttl=1),
    )
    t = template(6, Protocol.TCP, 40000, 443)
    got = parse(replies.icmp_error(t.build(3, 1), responder=HOP6, icmp_type=3, mpls=labels))
    assert got is not None and got.mpls == labels and got.ident_a == t.codec.a(1)
    assert parse_extensions(b"") == () and parse_extensions(b"\x10\x00\x00\x00") == ()


# -- our reply builders, checked by scapy --------------------------------------------------


@FAST
@given(families, protocols, ports, ports, probe_numbers)
def test_our_replies_have_valid_checksums(
    family: int, protocol: Protocol, sport: int, dport: int, k: int
) -> None:
    t = template(family, protocol, sport, dport)
    probe = t.build(4, k)
    made = [
        replies.icmp_error(
            probe, responder=HOP4 if family == 4 else HOP6, icmp_type=11 if family == 4 else 3
        )
    ]
    if protocol is Protocol.TCP:
        made += [replies.tcp_reply(probe, syn_ack=True), replies.tcp_reply(probe, syn_ack=False)]
    elif protocol is Protocol.UDP:
        made.append(replies.udp_reply(probe, b"xyz"))
    else:
        made.append(replies.echo_reply(probe))
    for raw in made:
        pkt = IP(raw) if family == 4 else IPv6(raw)
        outer = recomputed(pkt)
        assert bytes(outer)[: len(raw)] == raw


# -- hostile input -------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    families,
    protocols,
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=8),
    st.integers(0, 200),
)
def test_corrupted_replies_never_crash_the_parser(
    family: int, protocol: Protocol, changes: list[tuple[int, int]], keep: int
) -> None:
    """Real replies with random bytes changed and cut: parsed, ignored or Malformed."""
    t = template(family, protocol, 40000, 443)
    hop, kind = (HOP4, 11) if family == 4 else (HOP6, 3)
    data = bytearray(replies.icmp_error(t.build(2, 3), responder=hop, icmp_type=kind))
    for index, value in changes:
        if index < len(data):
            data[index] = value
    with contextlib.suppress(Malformed):
        parse(bytes(data[: max(keep, 1)]))


@settings(max_examples=200, deadline=None)
@given(families, protocols, st.integers(0, 100))
def test_truncated_replies_are_malformed_or_ignored(
    family: int, protocol: Protocol, cut: int
) -> None:
    t = template(family, protocol, 40000, 443)
    raw = replies.icmp_error(
        t.build(2, 3), responder=HOP4 if family == 4 else HOP6, icmp_type=11 if family == 4 else 3
    )
    try:
        got = parse(raw[: max(1, len(raw) - cut)])
    except Malformed:
        return
    assert got is None or got.kind is ReplyKind.TIME_EXCEEDED
