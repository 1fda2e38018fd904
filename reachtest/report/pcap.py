"""The run's packets as a pcap file for Wireshark or tshark: every probe as the kernel sent
it and every reply matched to a probe, in time order, with nanosecond kernel timestamps.

Link type RAW (101): each record is an IPv4 or IPv6 packet, so both families share one
file. Written with scapy's pcap writer (imported here, off the hot path) as the run goes:
packets wait at most ``WINDOW_NS`` (a probe's transmit timestamp comes back a little
after its reply may have), then go to the file in time order, so memory stays flat
however long the run, and a run killed outright leaves every record written so far."""

from __future__ import annotations

import heapq
import itertools
from typing import IO, Any

LINKTYPE_RAW = 101
#: How long a packet waits for earlier ones before it is written (and the file flushed).
WINDOW_NS = 2_000_000_000


class PcapStream:
    """Packets (monotonic ns, IP packet) in, pcap records out to ``stream`` in time order;
    ``wall_offset_ns`` turns the monotonic clock into Unix time."""

    def __init__(self, stream: IO[bytes], wall_offset_ns: int, window_ns: int = WINDOW_NS) -> None:
        from scapy.utils import RawPcapWriter

        self._writer: Any = RawPcapWriter(stream, linktype=LINKTYPE_RAW, nano=True)
        self._writer.write_header(None)  # a header even when no packet comes
        self._stream = stream
        self._offset = wall_offset_ns
        self._window = window_ns
        self._waiting: list[tuple[int, int, bytes]] = []
        self._order = itertools.count()
        self._newest = 0
        self.written = 0

    def add(self, ns: int, packet: bytes) -> None:
        heapq.heappush(self._waiting, (ns, next(self._order), packet))
        if ns > self._newest:
            self._newest = ns
            if self._waiting[0][0] < ns - self._window:
                self._write_until(ns - self._window)
                self._stream.flush()

    def close(self) -> None:
        """Write what still waits and flush (the stream itself stays open)."""
        self._write_until(None)
        self._stream.flush()

    def _write_until(self, before: int | None) -> None:
        waiting = self._waiting
        while waiting and (before is None or waiting[0][0] < before):
            ns, _, packet = heapq.heappop(waiting)
            sec, nanos = divmod(ns + self._offset, 1_000_000_000)
            self._writer.write_packet(packet, sec=sec, usec=nanos)
            self.written += 1
