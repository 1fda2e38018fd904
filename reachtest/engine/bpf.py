"""A kernel filter for the receive socket: only what can answer a probe reaches Python.

The raw transport's AF_PACKET socket sees every packet the host receives; on a busy
host that is tens of thousands a second, each one read, parsed and thrown away by
Python. The filter keeps ICMP and ICMPv6 (time-exceeded, unreachables, echo replies)
and TCP/UDP packets from the run's targets' service ports; everything else is dropped
by the kernel. It is written as a pcap filter expression from the run's data and
compiled by libpcap (through scapy's ``compile_filter``, loaded here only) for raw IP
packets (link type 101), which is what a SOCK_DGRAM packet socket shows its filter.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import struct
from collections.abc import Iterable, Sequence

from reachtest.model import FlowSpec, Protocol

SO_ATTACH_FILTER = 26
LINKTYPE_RAW = 101
#: Above this many targets the filter names ports only: each address costs instructions
#: and the kernel takes at most 4096.
MAX_TARGETS = 64


def expression(targets: Sequence[str], flows: Iterable[FlowSpec]) -> str:
    """The pcap filter expression for a run: ICMP of both families, and TCP/UDP from the
    targets' service ports (from any address when there are many targets)."""
    clauses = ["icmp", "icmp6"]
    by_proto: dict[Protocol, set[int]] = {Protocol.TCP: set(), Protocol.UDP: set()}
    for flow in flows:
        if flow.protocol in by_proto and flow.port is not None:
            by_proto[flow.protocol].add(flow.port)
    ports = [
        f"({proto} and ({' or '.join(f'src port {p}' for p in sorted(found))}))"
        for proto, found in by_proto.items()
        if found
    ]
    if ports:
        services = " or ".join(ports)
        hosts = sorted({str(ipaddress.ip_address(t)) for t in targets})
        if hosts and len(hosts) <= MAX_TARGETS:
            services = f"({' or '.join(f'src host {h}' for h in hosts)}) and ({services})"
        clauses.append(f"({services})")
    return " or ".join(clauses)


def for_run(targets: Sequence[str], flows: Iterable[FlowSpec]) -> bytes | None:
    """The compiled filter of a run, or None when libpcap cannot compile it here (then
    every packet is read, as before: slower on a busy host, never wrong) or when
    ``REACHTEST_NO_FILTER=1`` asks for none (to measure what it saves)."""
    if os.environ.get("REACHTEST_NO_FILTER") == "1":
        return None
    try:
        return compiled(expression(targets, flows))
    except Exception:  # scapy's compile_filter raises its own errors when libpcap is absent
        return None


def compiled(text: str) -> bytes:
    """``text`` compiled to the instructions of a classic BPF program (8 bytes each)."""
    from scapy.arch.common import compile_filter

    program = compile_filter(text, linktype=LINKTYPE_RAW)
    size = program.bf_len * 8
    return ctypes.string_at(ctypes.addressof(program.bf_insns.contents), size)


def bind_all(sock_fd: int, protocol: int) -> None:
    """Bind a packet socket to every interface (ifindex 0) for ``protocol`` (host order):
    Python's ``bind`` wants an interface name and has none for "all"."""
    import socket

    libc = ctypes.CDLL(None, use_errno=True)
    address = struct.pack("HHiHBB8s", socket.AF_PACKET, socket.htons(protocol), 0, 0, 0, 0, b"")
    if libc.bind(sock_fd, address, len(address)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"bind: {os.strerror(error)}")


def attach(sock_fd: int, instructions: bytes) -> None:
    """Attach the program to a socket (``SO_ATTACH_FILTER``); raises OSError."""
    import socket

    buffer = ctypes.create_string_buffer(instructions, len(instructions))
    fprog = struct.pack("HL", len(instructions) // 8, ctypes.addressof(buffer))
    with socket.socket(fileno=sock_fd) as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        finally:
            sock.detach()  # the caller owns the descriptor
