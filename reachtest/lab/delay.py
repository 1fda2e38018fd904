"""A delaying link for the lab: frames copied between two veths, each some milliseconds later.

This kernel has no netem, so a delayed lab link is two veth pairs through a namespace of
its own, where this forwarder reads every frame from one side with an AF_PACKET socket and
sends it out of the other side ``delay`` later (plus a uniform jitter), in order. It
changes nothing in the frames, so the two routers see one ordinary link, but for one
thing: a frame whose TCP/UDP checksum the sending kernel left to the (virtual) card
(``TP_STATUS_CSUMNOTREADY``) gets it computed here, as a card would, or the far end
would drop it.
"""

from __future__ import annotations

import heapq
import itertools
import random
import select
import socket
import struct
import time
from collections.abc import Callable

from reachtest.packet.checksum import (
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    checksum,
    pseudo_header,
)

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
#: Frames waiting at most (a flood beyond this is dropped, as a full queue would).
MAX_QUEUED = 20_000
RCVBUF = 4 << 20
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 1 << 3
ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD
#: Where the checksum sits in each transport header.
CHECKSUM_AT = {PROTO_TCP: 16, PROTO_UDP: 6, PROTO_ICMPV6: 2}


def complete_checksum(frame: bytes) -> bytes:
    """``frame`` (Ethernet) with its TCP, UDP or ICMPv6 checksum computed in full."""
    if len(frame) < 14:
        return frame
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == ETHERTYPE_IPV4 and len(frame) >= 34:
        header = (frame[14] & 0x0F) * 4
        proto, total = frame[23], struct.unpack_from("!H", frame, 16)[0]
        src, dst = frame[26:30], frame[30:34]
        start, end = 14 + header, 14 + total
    elif ethertype == ETHERTYPE_IPV6 and len(frame) >= 54:
        proto, payload = frame[20], struct.unpack_from("!H", frame, 18)[0]
        src, dst = frame[22:38], frame[38:54]
        start, end = 54, 54 + payload
    else:
        return frame
    at = CHECKSUM_AT.get(proto)
    if at is None or end > len(frame) or end - start < at + 2:
        return frame
    segment = bytearray(frame[start:end])
    segment[at : at + 2] = b"\x00\x00"
    value = checksum(pseudo_header(src, dst, proto, len(segment)) + segment)
    if proto == PROTO_UDP and value == 0:
        value = 0xFFFF
    struct.pack_into("!H", segment, at, value)
    return frame[:start] + bytes(segment) + frame[end:]


def _checksum_not_ready(ancillary: list[tuple[int, int, bytes]]) -> bool:
    """Does the packet's auxdata say its checksum was left to the card?"""
    return any(
        level == SOL_PACKET
        and kind == PACKET_AUXDATA
        and len(data) >= 4
        and struct.unpack_from("=I", data)[0] & TP_STATUS_CSUMNOTREADY
        for level, kind, data in ancillary
    )


def _socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.bind((interface, 0))
    sock.setblocking(False)
    return sock


def forward(
    side_a: str,
    side_b: str,
    delay_s: float,
    jitter_s: float = 0.0,
    *,
    ready: Callable[[], None] | None = None,
    seed: int | None = None,
) -> None:
    """Copy frames between ``side_a`` and ``side_b`` with the delay, until killed."""
    a, b = _socket(side_a), _socket(side_b)
    other = {a: b, b: a}
    last_due = {a: 0.0, b: 0.0}
    rng = random.Random(seed)
    queue: list[tuple[float, int, socket.socket, bytes]] = []
    order = itertools.count()
    if ready is not None:
        ready()
    while True:
        now = time.monotonic()
        timeout = max(0.0, queue[0][0] - now) if queue else 0.5
        readable, _, _ = select.select([a, b], [], [], timeout)
        now = time.monotonic()
        for sock in readable:
            out = other[sock]
            while True:
                try:
                    frame, ancillary, _, address = sock.recvmsg(65535, 64)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING or len(queue) >= MAX_QUEUED:
                    continue  # our own copy going out; or a flood
                if _checksum_not_ready(ancillary):
                    frame = complete_checksum(frame)
                due = now + delay_s + (rng.uniform(-jitter_s, jitter_s) if jitter_s else 0.0)
                due = max(due, last_due[out])  # a link does not reorder
                last_due[out] = due
                heapq.heappush(queue, (due, next(order), out, frame))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                out.send(frame)
            except OSError:
                continue  # the peer went down with the lab: drop the frame
