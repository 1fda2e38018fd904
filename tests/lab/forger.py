"""A forger for the injection test: run in a router's namespace, it watches the client's
probes go by and answers each with forged ICMP errors and RSTs that almost match it
(one identity field off, or random identity words) plus errors quoting random flows.

Every forged packet has IP TTL ``FORGED_TTL`` so the test can tell them from real
replies. Runs for ``--seconds`` after the first probe it sees, then prints how many it
sent.
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import time

from reachtest.packet import replies
from reachtest.packet.checksum import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from reachtest.packet.parse import parse_probe

FORGED_TTL = 222
ETH_P_ALL = 0x0003


def _add16(buf: bytearray, offset: int, delta: int) -> None:
    value = struct.unpack_from("!H", buf, offset)[0]
    struct.pack_into("!H", buf, offset, (value + delta) & 0xFFFF or 1)


def almost(probe: bytes, rng: random.Random) -> list[bytes]:
    """Copies of ``probe`` with identity fields changed: the quotes a forger would use."""
    fields = parse_probe(probe)
    hl = fields.header_length
    variants = []
    for change in range(5):
        buf = bytearray(probe)
        if change == 0 and fields.family == 4:
            _add16(buf, 4, 1)  # IPv4 ID
        elif fields.proto == PROTO_TCP:
            delta = (1, 0x10000, rng.randrange(1, 1 << 32), 2, 0x20000)[change]
            seq = (fields.seq + delta) & 0xFFFFFFFF
            struct.pack_into("!I", buf, hl + 4, seq)
        elif fields.proto == PROTO_UDP:
            word = hl + 8 + (40 if fields.dport == 123 else 0)  # where the probe's b travels
            offset = (hl + 6, word, hl + 6, word, hl + 6)[change]
            _add16(buf, offset, (1, 1, rng.randrange(1, 65535), 2, 2)[change])
        else:  # ICMP echo: sequence (a), then the payload identity word (b)
            offset = (hl + 6, hl + 8, hl + 6, hl + 8, hl + 6)[change]
            _add16(buf, offset, (1, 1, rng.randrange(1, 65535), 2, 3)[change])
        variants.append(bytes(buf))
    return variants


def randomised(probe: bytes, rng: random.Random) -> bytes:
    """``probe`` with random ports (or ICMP identifier) and a random destination."""
    fields = parse_probe(probe)
    buf = bytearray(probe)
    hl = fields.header_length
    struct.pack_into("!HH", buf, hl, rng.randrange(1, 65536), rng.randrange(1, 65536))
    if fields.family == 4:
        buf[16:20] = bytes([198, 18, rng.randrange(256), rng.randrange(1, 255)])
    else:
        buf[24:40] = bytes.fromhex("20010db8") + rng.randbytes(12)
    return bytes(buf)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client4", required=True)
    parser.add_argument("--client6", required=True)
    parser.add_argument("--me4", required=True)
    parser.add_argument("--me6", required=True)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    rng = random.Random(7)
    clients = {
        socket.inet_pton(socket.AF_INET, args.client4),
        socket.inet_pton(socket.AF_INET6, args.client6),
    }
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    rx.settimeout(0.05)
    tx = {
        4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
        6: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW),
    }
    print("ready", flush=True)
    sent = 0
    ends = None
    while ends is None or time.monotonic() < ends:
        try:
            data, address = rx.recvfrom(65535)
        except TimeoutError:
            continue
        if address[2] == socket.PACKET_OUTGOING or not data:
            continue
        version = data[0] >> 4
        src = data[12:16] if version == 4 else data[8:24]
        proto = data[9] if version == 4 else data[6]
        if src not in clients or proto not in (PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP):
            continue
        if proto in (PROTO_ICMP, PROTO_ICMPV6) and data[20 if version == 4 else 40] not in (8, 128):
            continue
        if ends is None:
            ends = time.monotonic() + args.seconds
        fields = parse_probe(data)
        me = args.me4 if version == 4 else args.me6
        client = socket.inet_ntop(socket.AF_INET if version == 4 else socket.AF_INET6, fields.src)
        forged = []
        for quote in [*almost(data, rng), randomised(data, rng)]:
            te_type = 11 if version == 4 else 3
            forged.append(
                replies.icmp_error(quote, responder=me, icmp_type=te_type, ttl=FORGED_TTL)
            )
            if fields.proto == PROTO_TCP and parse_probe(quote).seq != fields.seq:
                # an RST shows only the sequence number (as ack - 1): forge it off by some
                forged.append(replies.tcp_reply(quote, syn_ack=False, ttl=FORGED_TTL))
        for packet in forged:
            tx[version].sendto(packet, (client, 0))
            sent += 1
    print(sent, flush=True)


if __name__ == "__main__":
    main()
