"""The lab's on-path injector: in a router's namespace, it reads copies of the segments
the router forwards towards the server (AF_PACKET), and for each TCP segment to the
watched port whose payload holds the watched name it sends the client a RST in the
server's name (the right sequence numbers), out of the interface facing the client. The
original segment is not touched: it travels on, and the server's own answer follows the
forged reset (an on-path box, as national filters that only see a copy are). Runs at
real-time priority (or the highest) when it can, so that it wins the race against the
server's answer (the scenario's server also answers ClientHellos 20 ms late, as a real
server milliseconds away would).

Started by ``python -m reachtest.lab.services --inject ...`` (``lab up``), stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable

from reachtest.packet.checksum import checksum, pseudo_header

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
TCP_RST_ACK = 0x14


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def forged_reset(frame: bytes, port: int, pattern: bytes) -> tuple[int, bytes] | None:
    """(ethertype, IP packet of a RST from the server to the client) answering the
    segment in the Ethernet ``frame`` when it goes to ``port`` and carries ``pattern``;
    None otherwise."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    packet = frame[14:]
    if ethertype == ETH_P_IP and len(packet) >= 20 and packet[9] == socket.IPPROTO_TCP:
        header = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        src, dst, segment = packet[12:16], packet[16:20], packet[header:total]
    elif ethertype == ETH_P_IPV6 and len(packet) >= 40 and packet[6] == socket.IPPROTO_TCP:
        length = struct.unpack_from("!H", packet, 4)[0]
        src, dst, segment = packet[8:24], packet[24:40], packet[40 : 40 + length]
    else:
        return None
    if len(segment) < 20:
        return None
    sport, dport, seq, ack = struct.unpack_from("!HHII", segment)
    payload = segment[(segment[12] >> 4) * 4 :]
    if dport != port or not payload or pattern not in payload:
        return None
    tcp = bytearray(
        struct.pack("!HHIIBBHHH", dport, sport, ack, (seq + len(payload)) & 0xFFFFFFFF,
                    5 << 4, TCP_RST_ACK, 0, 0, 0)
    )  # fmt: skip
    struct.pack_into("!H", tcp, 16, checksum(pseudo_header(dst, src, 6, len(tcp)) + tcp))
    if ethertype == ETH_P_IP:
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, dst, src))
        struct.pack_into("!H", ip, 10, checksum(ip))
        return ethertype, bytes(ip) + bytes(tcp)
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, dst, src)
    return ethertype, ip6 + bytes(tcp)


def inject(
    watch: str,
    send: str,
    own_mac: str,
    peer_mac: str,
    port: int,
    pattern: bytes,
    ready: Callable[[], None] | None = None,
) -> None:
    """Watch ``watch`` (the interface towards the server) and inject through ``send``
    (towards the client, from ``own_mac`` to ``peer_mac``) until stopped."""
    try:  # first in line for the CPU: real time, or at least the highest priority
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(-20)
    with (
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sniff,
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as out,
    ):
        sniff.bind((watch, 0))
        out.bind((send, 0))
        head = _mac(peer_mac) + _mac(own_mac)
        if ready is not None:
            ready()
        while True:
            frame, address = sniff.recvfrom(65535)
            if address[2] != PACKET_OUTGOING:  # the forwarded copy, on its way out
                continue
            forged = forged_reset(frame, port, pattern)
            if forged is not None:
                ethertype, packet = forged
                out.send(head + struct.pack("!H", ethertype) + packet)
