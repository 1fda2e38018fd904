"""The pcap writer: a file scapy's reader (our oracle) reads back with every packet, in
time order, with nanosecond timestamps and the RAW link type that holds both families."""

from __future__ import annotations

import io

from scapy.compat import raw
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.utils import RawPcapReader

from reachtest.report.pcap import LINKTYPE_RAW, render_pcap

OFFSET = 1_795_000_000_000_000_000  # monotonic 0 = this Unix time in ns


def test_packets_come_back_in_time_order_with_nanoseconds() -> None:
    v4 = raw(IP(src="198.18.1.1", dst="198.18.6.2", ttl=3) / ICMP(id=7, seq=1))
    v6 = raw(IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:6::2", hlim=2) / ICMPv6EchoRequest())
    data = render_pcap([(2_000_000_123, v6), (1_000_000_007, v4)], OFFSET)
    reader = RawPcapReader(io.BytesIO(data))
    assert reader.linktype == LINKTYPE_RAW and reader.nano
    records = list(reader)
    assert [packet for packet, _ in records] == [v4, v6]
    stamps = [(meta.sec, meta.usec) for _, meta in records]  # usec holds ns in a nano file
    assert stamps == [(1_795_000_001, 7), (1_795_000_002, 123)]


def test_an_empty_run_still_gives_a_valid_file() -> None:
    data = render_pcap([], OFFSET)
    assert len(data) == 24 and data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
