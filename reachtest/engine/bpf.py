"""A kernel filter for the receive socket: only what can answer a probe reaches Python.

The raw transport's AF_PACKET socket sees every packet the host receives; on a busy
host that is tens of thousands a second, each one read, parsed and thrown away by
Python. The filter keeps ICMP and ICMPv6 (time-exceeded, unreachables, echo replies)
and TCP/UDP packets from the run's targets' service ports; everything else is dropped
by the kernel. It is written as a pcap filter expression from the run's data and
compiled by libpcap (called through ctypes) for raw IP packets (link type 101), which is
what a SOCK_DGRAM packet socket shows its filter.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import os
import struct
from collections.abc import Iterable, Sequence

from reachtest.model import FlowSpec, Protocol

SO_ATTACH_FILTER = 26
LINKTYPE_RAW = 101
#: libpcap's own number for raw IP (LINKTYPE_RAW in files): what pcap_open_dead takes.
DLT_RAW = 12
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
    except (OSError, ValueError):  # no libpcap here, or it refused the expression
        return None


class _Program(ctypes.Structure):
    """libpcap's ``struct bpf_program``."""

    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p))


#: libpcap's sonames on Debian and Ubuntu, tried before a search of the library path.
LIBPCAP_NAMES = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so")
#: pcap_compile's netmask when none is known (only "ip broadcast" would need one).
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
SNAPLEN = 65535


@functools.cache
def _libpcap() -> ctypes.CDLL:
    """libpcap, loaded once (OSError when it is not installed)."""
    import ctypes.util

    names = [*LIBPCAP_NAMES, *filter(None, [ctypes.util.find_library("pcap")])]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_compile.argtypes = (
            ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p, ctypes.c_int,
            ctypes.c_uint32,
        )  # fmt: skip
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_freecode.argtypes = (ctypes.POINTER(_Program),)
        lib.pcap_close.argtypes = (ctypes.c_void_p,)
        return lib
    raise OSError("libpcap is not installed")


def compiled(text: str) -> bytes:
    """``text`` compiled by libpcap to the instructions of a classic BPF program (8 bytes
    each) for raw IP packets. libpcap is called directly: scapy's ``compile_filter`` does
    the same, but importing scapy costs about 0.4 s of every command's start."""
    lib = _libpcap()
    handle = lib.pcap_open_dead(DLT_RAW, SNAPLEN)
    if not handle:
        raise OSError("libpcap could not open a dead capture handle")
    try:
        program = _Program()
        if lib.pcap_compile(handle, ctypes.byref(program), text.encode(), 1, PCAP_NETMASK_UNKNOWN):
            raise ValueError(
                f"libpcap: {(lib.pcap_geterr(handle) or b'').decode(errors='replace')}"
            )
        try:
            return ctypes.string_at(program.bf_insns, program.bf_len * 8)
        finally:
            lib.pcap_freecode(ctypes.byref(program))
    finally:
        lib.pcap_close(handle)


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
