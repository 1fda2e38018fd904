"""The run's packets as a pcap file for Wireshark or tshark: every probe as the kernel sent
it and every reply matched to a probe, in time order, with nanosecond kernel timestamps.

Link type RAW (101): each record is an IPv4 or IPv6 packet, so both families share one
file. Written with scapy's pcap writer (imported here, off the hot path)."""

from __future__ import annotations

import io
from collections.abc import Iterable

LINKTYPE_RAW = 101


def render_pcap(packets: Iterable[tuple[int, bytes]], wall_offset_ns: int) -> bytes:
    """``packets``: (monotonic ns, IP packet); ``wall_offset_ns`` turns the monotonic
    clock into Unix time (wall = monotonic + offset)."""
    from scapy.utils import RawPcapWriter

    out = io.BytesIO()
    writer = RawPcapWriter(out, linktype=LINKTYPE_RAW, nano=True, sync=True)
    writer.write_header(None)  # a header even when no packet came
    for ns, packet in sorted(packets, key=lambda p: p[0]):
        sec, nanos = divmod(ns + wall_offset_ns, 1_000_000_000)
        writer.write_packet(packet, sec=sec, usec=nanos)
    data = out.getvalue()
    writer.close()
    return data
