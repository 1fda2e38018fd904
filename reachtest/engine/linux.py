"""Linux socket constants Python 3.11's ``socket`` module lacks on some builds, in one place.

Values from the kernel's uapi headers (``linux/in.h``, ``linux/in6.h``,
``asm-generic/socket.h``, ``linux/errqueue.h``, ``linux/net_tstamp.h``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator

SOL_IP = 0
SOL_IPV6 = 41
SOL_PACKET = 263
IP_TTL = 2
IP_RECVERR = 11
IP_RECVTTL = 12
IPV6_UNICAST_HOPS = 16
IPV6_RECVERR = 25
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_TIMESTAMPING = 37
SO_RCVBUFFORCE = 33
MSG_ERRQUEUE = 0x2000
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
SO_EE_ORIGIN_TIMESTAMPING = 4
PACKET_IGNORE_OUTGOING = 23
#: getsockopt: struct tpacket_stats {u32 tp_packets, tp_drops}, reset by each read.
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
CAP_NET_RAW = 13
CAP_NET_ADMIN = 12
TCP_SYNCNT = 7
#: struct timespec (the kernel timestamp of SO_TIMESTAMPNS).
TIMESPEC = struct.Struct("qq")
#: struct sock_extended_err: errno, origin, type, code, pad, info, data.
EXTENDED_ERR = struct.Struct("IBBBBII")


def extended_error(
    ancillary: Iterable[tuple[int, int, bytes]],
) -> tuple[int, int, int, str | None] | None:
    """(origin, ICMP type, code, the offender's address) of an IP_RECVERR or IPV6_RECVERR
    message read from a socket's error queue; None when it holds none."""
    for level, kind, value in ancillary:
        if (level, kind) not in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
            continue
        if len(value) < EXTENDED_ERR.size:
            return None
        _errno, origin, icmp_type, code, _pad, _info, _data = EXTENDED_ERR.unpack_from(value)
        offender = value[EXTENDED_ERR.size :]
        address = None
        if len(offender) >= 8 and int.from_bytes(offender[:2], "little") == socket.AF_INET:
            address = socket.inet_ntop(socket.AF_INET, offender[4:8])
        elif len(offender) >= 24 and int.from_bytes(offender[:2], "little") == socket.AF_INET6:
            address = socket.inet_ntop(socket.AF_INET6, offender[8:24])
        return origin, icmp_type, code, address
    return None


def set_ttl(sock: socket.socket, v6: bool, ttl: int) -> None:
    """The TTL (hop limit) of what ``sock`` sends from now on."""
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_TTL, ttl)


def icmp_errors(sock: socket.socket) -> Iterator[tuple[int, int, str | None, int]]:
    """The ICMP errors waiting on ``sock``'s error queue (``IP_RECVERR``): (type, code,
    the offender's address, ``ee_info``: the MTU of a frag-needed / packet-too-big), until
    the queue is empty. Entries of other origins (timestamps, local errors) are skipped."""
    while True:
        try:
            _data, ancillary, _flags, _address = sock.recvmsg(512, 512, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        found = extended_error(ancillary)
        if found is None or found[0] not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
            continue
        info = 0
        for level, kind, value in ancillary:
            if (level, kind) in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
                info = EXTENDED_ERR.unpack_from(value)[5] if len(value) >= EXTENDED_ERR.size else 0
        yield found[1], found[2], found[3], info
