"""The delayed link's forwarder: a frame whose checksum the sending kernel left to the card
gets it computed, as a card would (checked against scapy's own checksums)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from reachtest.lab.delay import complete_checksum

PAYLOAD = b"x" * 33  # odd length: the checksum pads it
FRAMES = {
    "tcp4": Ether()
    / IP(src="198.18.6.2", dst="198.18.1.1")
    / TCP(sport=80, dport=4242, flags="SA"),
    "udp4": Ether() / IP(src="198.18.6.2", dst="198.18.1.1") / UDP(sport=53, dport=4242) / PAYLOAD,
    "tcp6": Ether() / IPv6(src="2001:db8:0:6::2", dst="2001:db8:0:1::1") / TCP(sport=80, dport=9),
    "icmp6": Ether() / IPv6(src="2001:db8:0:6::2", dst="2001:db8:0:1::1") / ICMPv6EchoRequest(),
}
CHECKSUM_AT = {"tcp4": 14 + 20 + 16, "udp4": 14 + 20 + 6, "tcp6": 54 + 16, "icmp6": 54 + 2}


@pytest.mark.parametrize("name", list(FRAMES))
def test_a_partial_checksum_is_completed(name: str) -> None:
    good = bytes(FRAMES[name])
    at = CHECKSUM_AT[name]
    partial = good[:at] + b"\x12\x34" + good[at + 2 :]  # what the card would have fixed
    assert complete_checksum(partial) == good


def test_other_frames_pass_unchanged() -> None:
    arp_like = bytes(14) + b"\x00" * 28
    assert complete_checksum(arp_like) == arp_like
    assert complete_checksum(b"\x00\x01") == b"\x00\x01"
