"""Probe templates: built once per flow with struct, patched per probe (TTL, identity, checksum).

A flow's 5-tuple never changes between its probes (Paris traceroute); the probe's
identity travels in fields that routers do not hash and that ICMP errors quote:

=========  ====================================  ==========================================
protocol   primary word ``a``                    secondary word ``b``
=========  ====================================  ==========================================
ICMP       echo sequence number                  IPv4 ID; first payload word (checksum held
                                                 constant by the second payload word)
TCP        high half of the SYN's sequence       IPv4 ID; low half of the sequence number
UDP        the UDP checksum (tuned by a payload  IPv4 ID; a payload word: the DNS ID for
           compensation word)                    port 53, the NTP transmit time for 123,
                                                 else the first of 4 identity bytes
=========  ====================================  ==========================================
"""

from __future__ import annotations

import socket
import struct

from reachtest.model import Protocol
from reachtest.packet.checksum import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    ones_add,
    ones_sum,
    pseudo_header,
)
from reachtest.packet.identity import IdentityCodec

DNS_PORT = 53
NTP_PORT = 123
EDNS_OPTION_CODE = 65001  # local/experimental use (RFC 6891): carries the compensation word
IPV4_DF = 0x4000
TCP_WINDOW = 64240
TCP_TSVAL = 0x5EED0001

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_HH = struct.Struct("!HH")

_KIND_ICMP, _KIND_TCP, _KIND_UDP = 0, 1, 2


def family_of(address: str) -> int:
    """4 or 6, from an address's spelling."""
    return 6 if ":" in address else 4


def packed(address: str) -> bytes:
    """The address in network byte order."""
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


def dns_query() -> tuple[bytes, int, int]:
    """A real DNS query (". NS", recursion desired, EDNS0 with one private option).

    Returns the payload and the offsets of the identity word (the DNS ID) and of the
    compensation word (the private option's data).
    """
    header = struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 1)
    question = b"\x00" + struct.pack("!HH", 2, 1)
    opt = (
        b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 6) + struct.pack("!HHH", EDNS_OPTION_CODE, 2, 0)
    )
    payload = header + question + opt
    return payload, 0, len(payload) - 2


def ntp_request() -> tuple[bytes, int, int]:
    """An NTP v4 client request (mode 3); identity and compensation in the transmit time."""
    payload = bytearray(48)
    payload[0] = 0x23  # LI 0, version 4, mode 3 (client)
    payload[2] = 6  # poll
    payload[3] = 0xE9  # precision -23
    payload[44:48] = b"rtst"
    return bytes(payload), 40, 42


def udp_payload_layout(dport: int, user_payload: bytes) -> tuple[bytes, int, int, int | None]:
    """The probe payload for a UDP port: (payload, b offset, compensation offset, reply b offset).

    Port 53 gets a DNS query and 123 an NTP request, because services answer those; any
    other port gets 4 identity bytes followed by ``user_payload`` (empty by default).
    """
    if dport == DNS_PORT and not user_payload:
        payload, b_off, c_off = dns_query()
        return payload, b_off, c_off, 0  # the DNS reply echoes the ID
    if dport == NTP_PORT and not user_payload:
        payload, b_off, c_off = ntp_request()
        return payload, b_off, c_off, 24  # the NTP reply echoes transmit as origin time
    return bytes(4) + user_payload, 0, 2, None


class ProbeTemplate:
    """The bytes of one flow's probe, ready to be patched for each TTL and probe number."""

    __slots__ = (
        "_base",
        "_c_off",
        "_csum_off",
        "_ipsum0",
        "_kind",
        "_l4",
        "_l4sum0",
        "b_offset",
        "codec",
        "dport",
        "dst",
        "family",
        "length",
        "mss",
        "proto_number",
        "protocol",
        "reply_b_offset",
        "sport",
        "src",
    )

    def __init__(
        self,
        *,
        src: str,
        dst: str,
        protocol: Protocol,
        sport: int,
        dport: int = 0,
        codec: IdentityCodec | None = None,
        udp_payload: bytes = b"",
    ) -> None:
        self.family = family_of(dst)
        if family_of(src) != self.family:
            raise ValueError(f"source {src} and destination {dst} are of different families")
        self.src = packed(src)
        self.dst = packed(dst)
        self.protocol = protocol
        self.sport = sport
        self.dport = dport
        self.codec = codec or IdentityCodec()
        self.reply_b_offset: int | None = None
        self.mss = -1  # a TCP SYN's MSS option
        v6 = self.family == 6
        l4: bytes
        if protocol is Protocol.ICMP:
            self._kind = _KIND_ICMP
            self.proto_number = PROTO_ICMPV6 if v6 else PROTO_ICMP
            l4 = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, sport, 0) + bytes(4)
            self.b_offset, self._c_off, self._csum_off = 0, 10, 2
        elif protocol is Protocol.TCP:
            self._kind = _KIND_TCP
            self.proto_number = PROTO_TCP
            self.mss = 1440 if v6 else 1460
            options = (
                struct.pack("!BBH", 2, 4, self.mss)  # MSS
                + b"\x04\x02"  # SACK permitted
                + struct.pack("!BBII", 8, 10, TCP_TSVAL, 0)  # timestamps
                + b"\x01"  # NOP
                + b"\x03\x03\x07"  # window scale 7
            )
            l4 = (
                struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0xA0, 0x02, TCP_WINDOW, 0, 0)
                + options
            )
            self.b_offset, self._c_off, self._csum_off = -1, -1, 16
        else:
            self._kind = _KIND_UDP
            self.proto_number = PROTO_UDP
            payload, b_off, c_off, reply_off = udp_payload_layout(dport, udp_payload)
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
            self.b_offset, self._c_off, self._csum_off = b_off, 8 + c_off, 6
            self.reply_b_offset = reply_off
        self._l4 = len(l4)
        if v6:
            header = struct.pack(
                "!IHBB16s16s", 0x60000000, len(l4), self.proto_number, 0, self.src, self.dst
            )
            self._ipsum0 = 0
        else:
            header = struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(l4),
                0,
                IPV4_DF,
                0,
                self.proto_number,
                0,
                self.src,
                self.dst,
            )
            self._ipsum0 = ones_sum(header)
        self.length = len(header) + len(l4)
        pseudo = b""
        if v6 or self._kind != _KIND_ICMP:
            pseudo = pseudo_header(self.src, self.dst, self.proto_number, len(l4))
        self._l4sum0 = ones_sum(pseudo + l4)
        base = bytearray(header + l4)
        if self._kind == _KIND_ICMP:
            # The checksum is the same for every probe of the flow: a + b + c == 0.
            _H.pack_into(base, len(header) + 2, ~self._l4sum0 & 0xFFFF)
        self._base = bytes(base)

    @property
    def header_length(self) -> int:
        """Length of the IP header (20 or 40)."""
        return self.length - self._l4

    def build(self, ttl: int, k: int) -> bytearray:
        """The probe number ``k`` of this flow with TTL (hop limit) ``ttl``."""
        codec = self.codec
        a = codec.a(k)
        b = codec.b(k)
        buf = bytearray(self._base)
        hl = self.length - self._l4
        if self.family == 4:
            buf[8] = ttl
            _H.pack_into(buf, 4, b)
            _H.pack_into(buf, 10, ~ones_add(ones_add(self._ipsum0, ttl << 8), b) & 0xFFFF)
        else:
            buf[7] = ttl
        kind = self._kind
        if kind == _KIND_TCP:
            _HH.pack_into(buf, hl + 4, a, b)
            _H.pack_into(buf, hl + 16, ~ones_add(ones_add(self._l4sum0, a), b) & 0xFFFF)
        elif kind == _KIND_ICMP:
            _H.pack_into(buf, hl + 6, a)
            _HH.pack_into(buf, hl + 8, b, ~ones_add(a, b) & 0xFFFF)
        else:
            _H.pack_into(buf, hl + 8 + self.b_offset, b)
            partial = ones_add(self._l4sum0, b)
            _H.pack_into(buf, hl + self._c_off, ones_add(~a & 0xFFFF, ~partial & 0xFFFF))
            _H.pack_into(buf, hl + 6, a)
        return buf

    def b_from_payload(self, payload: bytes) -> int:
        """The secondary word carried in a (quoted or echoed) probe payload, -1 if absent."""
        off = self.b_offset
        if off < 0 or len(payload) < off + 2:
            return -1
        value: int = _H.unpack_from(payload, off)[0]
        return value

    def b_from_reply(self, payload: bytes) -> int:
        """The secondary word a service echoes in its UDP reply (DNS ID, NTP origin), or -1."""
        off = self.reply_b_offset
        if off is None or len(payload) < off + 2:
            return -1
        value: int = _H.unpack_from(payload, off)[0]
        return value
