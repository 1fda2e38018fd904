"""Reply parsers: one IPv4 or IPv6 packet in, the facts needed to match it to a probe out.

ICMP errors are read down to the quoted probe (addresses, ports, identity fields) and
their RFC 4884 extensions (RFC 4950 MPLS label stacks). Echo replies, TCP SYN-ACK/RST
and UDP datagrams are read from their own headers. Packets that cannot be a reply to a
probe (echo requests, neighbour discovery, plain TCP data) give None.

Real routers bend the RFCs, and what they send is read as tcpdump and tshark read it:
the next-hop MTU of a fragmentation-needed (RFC 1191) or packet-too-big (RFC 8201) is
kept; the quoted datagram ends where its own IP length says, not at the zero padding
RFC 4884 adds; extensions placed at octet 128 while the length field says otherwise (or,
in ICMPv6, with no length field at all: Cisco IOS) are read there when their header and
checksum are valid; a time exceeded in fragment reassembly (code 1) is no hop.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from reachtest.model import MplsLabel, ReplyKind
from reachtest.packet.checksum import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ones_sum

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_PORTS = struct.Struct("!HH")
_TCP = struct.Struct("!HHIIBB")
_ECHO = struct.Struct("!BBHHH")

LEGACY_EXTENSION_OFFSET = 128  # pre-RFC 4884 ("non-compliant") extension position
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_V4_UNREACH = {
    0: ReplyKind.NET_UNREACHABLE,
    1: ReplyKind.HOST_UNREACHABLE,
    2: ReplyKind.PROTOCOL_UNREACHABLE,
    3: ReplyKind.PORT_UNREACHABLE,
    9: ReplyKind.ADMIN_PROHIBITED,
    10: ReplyKind.ADMIN_PROHIBITED,
    13: ReplyKind.ADMIN_PROHIBITED,
}
_V6_UNREACH = {
    0: ReplyKind.NET_UNREACHABLE,
    1: ReplyKind.ADMIN_PROHIBITED,
    3: ReplyKind.HOST_UNREACHABLE,
    4: ReplyKind.PORT_UNREACHABLE,
    5: ReplyKind.ADMIN_PROHIBITED,
    6: ReplyKind.ADMIN_PROHIBITED,
}


class Quote(NamedTuple):
    """What an ICMP error says about the probe as the responder saw it."""

    ttl: int
    tos: int
    length: int
    src: bytes
    dst: bytes


class Parsed(NamedTuple):
    """One received packet, reduced to what the matcher needs.

    ``local``/``remote``/``lport``/``rport`` name the probe's flow (our address and
    source port or ICMP identifier; the target and its port). ``ident_a`` and
    ``ident_b`` are identity words read from the probe's own fields (-1 when not shown),
    ``ip_id`` the quoted IPv4 ID (-1 when none), ``payload`` the quoted or echoed probe
    payload, or a UDP reply's payload.
    """

    kind: ReplyKind
    family: int
    responder: bytes
    reply_ttl: int
    icmp_type: int
    icmp_code: int
    proto: int
    local: bytes
    remote: bytes
    lport: int
    rport: int
    ident_a: int
    ident_b: int
    ip_id: int
    payload: bytes
    tcp_flags: int
    quote: Quote | None
    mpls: tuple[MplsLabel, ...]
    is_error: bool
    #: The next-hop MTU a frag-needed or packet-too-big names (-1: none).
    mtu: int = -1
    #: The MSS option of a quoted TCP SYN, when the quote shows it (-1: not shown).
    quoted_mss: int = -1


class Malformed(ValueError):
    """A packet that claims to be a reply but is truncated or inconsistent."""


def parse(packet: bytes) -> Parsed | None:
    """Parse one IP packet (no link-layer header); None when it is no candidate reply.

    Raises Malformed for a truncated packet of a kind that would otherwise count.
    """
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        return _parse_v4(packet)
    if version == 6:
        return _parse_v6(packet)
    return None


def _parse_v4(p: bytes) -> Parsed | None:
    if len(p) < 20:
        raise Malformed("IPv4 header truncated")
    hl = (p[0] & 0x0F) * 4
    proto = p[9]
    total = min(_H.unpack_from(p, 2)[0], len(p))
    src = p[12:16]
    dst = p[16:20]
    ttl = p[8]
    if proto == PROTO_ICMP:
        if total < hl + 8:
            raise Malformed("ICMP header truncated")
        icmp_type = p[hl]
        code = p[hl + 1]
        if icmp_type == 0:
            return _echo_reply(4, p, hl, total, src, dst, ttl, icmp_type, code)
        if icmp_type in (3, 11, 12):
            mtu = -1
            if icmp_type == 11:
                kind = ReplyKind.TIME_EXCEEDED if code == 0 else ReplyKind.REASSEMBLY_TIMEOUT
            elif icmp_type == 3 and code == 4:
                kind, mtu = ReplyKind.FRAG_NEEDED, _H.unpack_from(p, hl + 6)[0]
            elif icmp_type == 3:
                kind = _V4_UNREACH.get(code, ReplyKind.UNREACHABLE)
            else:
                kind = ReplyKind.UNREACHABLE
            # The length field (RFC 4884) is octet 5 of types 3, 11 and 12.
            quote_end, mpls = _extensions(p, hl + 8, total, p[hl + 5] * 4)
            found = _quoted(4, p, hl + 8, quote_end, src, dst, ttl, icmp_type, code, kind, mpls)
            return found._replace(mtu=mtu)
        return None
    if proto in (PROTO_TCP, PROTO_UDP):
        return _transport(4, p, hl, total, proto, src, dst, ttl)
    return None


def _parse_v6(p: bytes) -> Parsed | None:
    if len(p) < 40:
        raise Malformed("IPv6 header truncated")
    proto = p[6]
    total = min(40 + _H.unpack_from(p, 4)[0], len(p))
    src = p[8:24]
    dst = p[24:40]
    hlim = p[7]
    if proto == PROTO_ICMPV6:
        if total < 48:
            raise Malformed("ICMPv6 header truncated")
        icmp_type = p[40]
        code = p[41]
        if icmp_type == 129:
            return _echo_reply(6, p, 40, total, src, dst, hlim, icmp_type, code)
        if 1 <= icmp_type <= 4:
            mtu = -1
            if icmp_type == 3:
                kind = ReplyKind.TIME_EXCEEDED if code == 0 else ReplyKind.REASSEMBLY_TIMEOUT
            elif icmp_type == 1:
                kind = _V6_UNREACH.get(code, ReplyKind.UNREACHABLE)
            elif icmp_type == 2:
                kind, mtu = ReplyKind.PACKET_TOO_BIG, _I.unpack_from(p, 44)[0]
            elif icmp_type == 4 and code == 1:
                kind = ReplyKind.PROTOCOL_UNREACHABLE
            else:
                kind = ReplyKind.UNREACHABLE
            # The length field (RFC 4884, in 64-bit words) is octet 4 of types 1 and 3.
            words = p[44] * 8 if icmp_type in (1, 3) else 0
            quote_end, mpls = _extensions(p, 48, total, words)
            found = _quoted(6, p, 48, quote_end, src, dst, hlim, icmp_type, code, kind, mpls)
            return found._replace(mtu=mtu)
        return None
    if proto in (PROTO_TCP, PROTO_UDP):
        return _transport(6, p, 40, total, proto, src, dst, hlim)
    return None


def _valid_extensions(data: bytes) -> bool:
    """An RFC 4884 extension structure: version 2, a valid checksum (or none: 0)."""
    if len(data) < 8 or data[0] >> 4 != 2:
        return False
    return _H.unpack_from(data, 2)[0] == 0 or ones_sum(data) == 0xFFFF


def _extensions(p: bytes, q: int, total: int, length: int) -> tuple[int, tuple[MplsLabel, ...]]:
    """(where the quoted datagram ends, the MPLS labels of the extensions) of an ICMP
    error whose quote starts at ``q`` and whose length field says ``length`` bytes (0:
    none). Where the length field points to a valid extension structure, it is read
    there; otherwise a structure at octet 128 of the quote is read when it is valid
    (RFC 4884 section 5: routers from before it, and those that set a length the
    structure does not follow, put it there)."""
    if length:
        end = q + length
        if end < total and _valid_extensions(p[end:total]):
            return end, parse_extensions(p[end:total])
    legacy = q + LEGACY_EXTENSION_OFFSET
    if total >= legacy + 8 and _valid_extensions(p[legacy:total]):
        return legacy, parse_extensions(p[legacy:total])
    return (min(q + length, total) if length else total), ()


def _echo_reply(
    family: int,
    p: bytes,
    hl: int,
    total: int,
    src: bytes,
    dst: bytes,
    ttl: int,
    icmp_type: int,
    code: int,
) -> Parsed:
    ident, seq = _PORTS.unpack_from(p, hl + 4)
    payload = p[hl + 8 : total]
    b = _H.unpack_from(payload, 0)[0] if len(payload) >= 2 else -1
    return Parsed(
        ReplyKind.ECHO_REPLY,
        family,
        src,
        ttl,
        icmp_type,
        code,
        PROTO_ICMP,
        dst,
        src,
        ident,
        0,
        seq,
        b,
        -1,
        payload,
        -1,
        None,
        (),
        False,
    )


def _transport(
    family: int, p: bytes, hl: int, total: int, proto: int, src: bytes, dst: bytes, ttl: int
) -> Parsed | None:
    if proto == PROTO_TCP:
        if total < hl + 14:
            raise Malformed("TCP header truncated")
        sport, dport, _seq, ack, _off, flags = _TCP.unpack_from(p, hl)
        if flags & TCP_RST:
            kind = ReplyKind.TCP_RST
        elif flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
            kind = ReplyKind.TCP_SYN_ACK
        else:
            return None
        a = b = -1
        if flags & TCP_ACK:
            sent_seq = (ack - 1) & 0xFFFFFFFF
            a, b = sent_seq >> 16, sent_seq & 0xFFFF
        return Parsed(
            kind, family, src, ttl, -1, -1, proto, dst, src, dport, sport, a, b, -1, b"", flags,
            None, (), False,
        )  # fmt: skip
    if total < hl + 8:
        raise Malformed("UDP header truncated")
    sport, dport = _PORTS.unpack_from(p, hl)
    return Parsed(
        ReplyKind.UDP_REPLY, family, src, ttl, -1, -1, proto, dst, src, dport, sport, -1, -1, -1,
        p[hl + 8 : total], -1, None, (), False,
    )  # fmt: skip


def _quoted(
    family: int,
    p: bytes,
    q: int,
    end: int,
    src: bytes,
    dst: bytes,
    ttl: int,
    icmp_type: int,
    code: int,
    kind: ReplyKind,
    mpls: tuple[MplsLabel, ...],
) -> Parsed:
    """An ICMP error: read the quoted probe starting at offset ``q``."""
    if family == 4:
        if end < q + 20:
            raise Malformed("quoted IPv4 header truncated")
        qhl = (p[q] & 0x0F) * 4
        qproto = p[q + 9]
        ip_id = _H.unpack_from(p, q + 4)[0]
        quote = Quote(
            p[q + 8], p[q + 1], _H.unpack_from(p, q + 2)[0], p[q + 12 : q + 16], p[q + 16 : q + 20]
        )
        t = q + qhl
    else:
        if end < q + 40:
            raise Malformed("quoted IPv6 header truncated")
        qproto = p[q + 6]
        ip_id = -1
        tclass = (_H.unpack_from(p, q)[0] >> 4) & 0xFF
        quote = Quote(
            p[q + 7],
            tclass,
            40 + _H.unpack_from(p, q + 4)[0],
            p[q + 8 : q + 24],
            p[q + 24 : q + 40],
        )
        t = q + 40
    if end < t + 8:
        raise Malformed("quoted transport header truncated")
    # The quoted datagram ends where its own length says: what follows is padding (RFC
    # 4884 pads the quote to 128 octets) or extensions, not the probe's payload.
    if t + 8 <= q + quote.length < end:
        end = q + quote.length
    a = b = -1
    rport = 0
    payload = b""
    mss = -1
    if qproto in (PROTO_ICMP, PROTO_ICMPV6):
        qtype, _qcode, _qsum, lport, a = _ECHO.unpack_from(p, t)
        if qtype not in (8, 128):
            raise Malformed("ICMP error quotes an ICMP message that is no echo request")
        payload = p[t + 8 : end]
        proto = PROTO_ICMP
    elif qproto == PROTO_TCP:
        lport, rport, seq = struct.unpack_from("!HHI", p, t)
        a, b = seq >> 16, seq & 0xFFFF
        proto = PROTO_TCP
        mss = _mss(p[t:end])
    elif qproto == PROTO_UDP:
        lport, rport, _len, a = struct.unpack_from("!HHHH", p, t)
        payload = p[t + 8 : end]
        proto = PROTO_UDP
    else:
        lport = 0
        proto = qproto
    return Parsed(
        kind, family, src, ttl, icmp_type, code, proto, quote.src, quote.dst, lport, rport, a, b,
        ip_id, payload, -1, quote, mpls, True, quoted_mss=mss,
    )  # fmt: skip


def _mss(segment: bytes) -> int:
    """The MSS option of a TCP header (a quoted SYN's), -1 when the quote does not show
    it (most routers quote 8 bytes of it; Linux quotes what fits in 576)."""
    if len(segment) < 20:
        return -1
    end = min((segment[12] >> 4) * 4, len(segment))
    at = 20
    while at < end:
        kind = segment[at]
        if kind == 0:
            break
        if kind == 1:
            at += 1
            continue
        if at + 1 >= end or segment[at + 1] < 2:
            break
        if kind == 2 and segment[at + 1] == 4 and at + 4 <= end:
            return int(_H.unpack_from(segment, at + 2)[0])
        at += segment[at + 1]
    return -1


def parse_extensions(data: bytes) -> tuple[MplsLabel, ...]:
    """MPLS label stack entries from an RFC 4884 extension structure (RFC 4950)."""
    if len(data) < 4 or data[0] >> 4 != 2:
        return ()
    labels: list[MplsLabel] = []
    off = 4
    while off + 4 <= len(data):
        length, class_num, c_type = struct.unpack_from("!HBB", data, off)
        if length < 4 or off + length > len(data):
            break
        if class_num == 1 and c_type == 1:
            for entry_off in range(off + 4, off + length - 3, 4):
                word = _I.unpack_from(data, entry_off)[0]
                labels.append(
                    MplsLabel(
                        label=word >> 12,
                        tc=(word >> 9) & 0x7,
                        bottom=bool(word & 0x100),
                        ttl=word & 0xFF,
                    )
                )
        off += length
    return tuple(labels)


class ProbeFields(NamedTuple):
    """Our own probe read back (for the simulated network and for pcap annotations)."""

    family: int
    src: bytes
    dst: bytes
    ttl: int
    proto: int
    sport: int
    dport: int
    header_length: int
    seq: int
    payload: bytes


def parse_probe(packet: bytes | bytearray) -> ProbeFields:
    """Read back a probe built by ProbeTemplate."""
    p = bytes(packet)
    if p[0] >> 4 == 4:
        hl = (p[0] & 0x0F) * 4
        family, ttl, proto, src, dst = 4, p[8], p[9], p[12:16], p[16:20]
    else:
        hl = 40
        family, ttl, proto, src, dst = 6, p[7], p[6], p[8:24], p[24:40]
    if proto in (PROTO_ICMP, PROTO_ICMPV6):
        sport, seq = _PORTS.unpack_from(p, hl + 4)
        return ProbeFields(family, src, dst, ttl, PROTO_ICMP, sport, 0, hl, seq, p[hl + 8 :])
    if proto == PROTO_TCP:
        sport, dport, seq = struct.unpack_from("!HHI", p, hl)
        return ProbeFields(family, src, dst, ttl, proto, sport, dport, hl, seq, b"")
    sport, dport = _PORTS.unpack_from(p, hl)
    return ProbeFields(family, src, dst, ttl, proto, sport, dport, hl, 0, p[hl + 8 :])
