"""Replies whose checksum does not hold are no answers (issue 27): a packet socket sees
them before the kernel checks (``transport_checksum_ok``), and the raw transport drops
them unless the kernel says it checked the packet or will fill the checksum in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6TimeExceeded, IPv6
from scapy.packet import Packet, Raw

from reachtest.engine.transport import TP_STATUS_CSUM_VALID, TP_STATUS_CSUMNOTREADY, _damaged
from reachtest.packet.checksum import transport_checksum_ok

PROBE = IP(src="198.18.1.1", dst="198.18.6.2", ttl=1) / UDP(sport=1000, dport=53) / Raw(b"ab")
REPLIES: list[Packet] = [
    IP(src="198.18.3.2", dst="198.18.1.1") / ICMP(type=11) / PROBE,
    IPv6(src="2001:db8:0:3::2", dst="2001:db8:0:1::1")
    / ICMPv6TimeExceeded()
    / IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:6::2", hlim=1)
    / UDP(sport=1000, dport=53),
    IP(src="198.18.6.2", dst="198.18.1.1") / TCP(sport=443, dport=1000, flags="SA"),
    IPv6(src="2001:db8:0:6::2", dst="2001:db8:0:1::1") / TCP(sport=443, dport=1000, flags="R"),
    IP(src="198.18.6.2", dst="198.18.1.1") / UDP(sport=53, dport=1000) / Raw(b"answer"),
    IPv6(src="2001:db8:0:6::2", dst="2001:db8:0:1::1") / UDP(sport=53, dport=1000) / Raw(b"x"),
]


def corrupted(packet: bytes) -> bytes:
    """The last byte changed: any checksum over it no longer holds."""
    return packet[:-1] + bytes([packet[-1] ^ 0x5A])


@pytest.mark.parametrize("reply", REPLIES, ids=lambda p: p.summary())
def test_a_good_checksum_holds_and_a_damaged_one_does_not(reply: Packet) -> None:
    good = bytes(reply)
    assert transport_checksum_ok(good)
    assert not transport_checksum_ok(corrupted(good))


def test_what_has_no_checksum_to_check_passes() -> None:
    no_sum = bytearray(
        bytes(IP(src="198.18.6.2", dst="198.18.1.1") / UDP(sport=53, dport=1) / Raw(b"x"))
    )
    no_sum[26:28] = b"\0\0"  # IPv4 UDP without a checksum
    assert transport_checksum_ok(bytes(no_sum))
    fragment = bytearray(
        bytes(IP(src="198.18.6.2", dst="198.18.1.1", flags="MF") / UDP() / Raw(b"xy"))
    )
    assert transport_checksum_ok(corrupted(bytes(fragment)))  # only whole datagrams are checked
    assert transport_checksum_ok(b"") and transport_checksum_ok(b"\x45\x00")


def test_the_transport_checks_only_what_the_kernel_did_not() -> None:
    bad = memoryview(corrupted(bytes(REPLIES[0])))
    assert _damaged(0, bad)
    assert not _damaged(TP_STATUS_CSUM_VALID, bad)  # the device checked it: trusted
    assert not _damaged(TP_STATUS_CSUMNOTREADY, bad)  # made here, filled in later
    assert not _damaged(0, memoryview(bytes(REPLIES[0])))


@given(st.binary(max_size=120))
def test_any_bytes_get_an_answer_and_no_exception(data: bytes) -> None:
    assert transport_checksum_ok(data) in (True, False)
