"""Transports: how probe bytes leave and reply bytes arrive, with kernel receive timestamps.

The tracer reaches the network only through the small ``Transport`` protocol. The raw
transport sends header-included IPv4/IPv6 packets on raw sockets and receives every
IPv4/IPv6 packet on one AF_PACKET socket (full headers for both families, kernel
timestamps by ``SO_TIMESTAMPNS``); it needs root or CAP_NET_RAW.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from reachtest.engine.linux import (
    CAP_NET_RAW,
    ETH_P_ALL,
    ETH_P_IP,
    ETH_P_IPV6,
    EXTENDED_ERR,
    MSG_ERRQUEUE,
    PACKET_IGNORE_OUTGOING,
    PACKET_STATISTICS,
    SCM_TIMESTAMPNS,
    SO_EE_ORIGIN_TIMESTAMPING,
    SO_RCVBUFFORCE,
    SO_TIMESTAMPING,
    SO_TIMESTAMPNS,
    SOF_TIMESTAMPING_OPT_ID,
    SOF_TIMESTAMPING_SOFTWARE,
    SOF_TIMESTAMPING_TX_SOFTWARE,
    SOL_PACKET,
    TIMESPEC,
)
from reachtest.errors import EnvironmentProblem, PrivilegeError
from reachtest.packet.checksum import transport_checksum_ok

RECEIVE_BUFFER = 64 * 1024 * 1024
SEND_BUFFER = 8 * 1024 * 1024
_TS = TIMESPEC
#: struct tpacket_auxdata's first word (tp_status) and the bits of it that matter here.
_AUXDATA = struct.Struct("I")
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 1 << 3  # made on this host: the checksum is not filled in yet
TP_STATUS_CSUM_VALID = 1 << 7  # the device or the kernel checked it


def _damaged(status: int, packet: memoryview) -> bool:
    """A packet whose checksum nobody has checked and that does not hold."""
    if status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID):
        return False
    return not transport_checksum_ok(bytes(packet))


_EE = EXTENDED_ERR
_TS3 = struct.Struct("qqqqqq")  # scm_timestamping: software, (deprecated), hardware
#: Told each probe as it left, with the kernel's transmit time (monotonic ns).
SentSink = Callable[[bytes, int], None]


class Transport(Protocol):
    """What the tracer needs from a network."""

    def now_ns(self) -> int:
        """The transport's monotonic clock, in nanoseconds."""

    def source_address(self, target: str) -> str:
        """Our address on the route to ``target``."""

    def reserve_port(self, family: int, protocol: str) -> int:
        """A local TCP or UDP port reserved for this run (nothing else will use it); for
        ``icmp``, the echo identifier to use."""

    def send(self, packet: bytes | bytearray, family: int, target: str) -> int:
        """Send one header-included packet; returns the send time (``now_ns`` clock)."""

    def receive(self, timeout_s: float) -> list[tuple[bytes, int]]:
        """Packets that arrived, each with its receive time; waits at most ``timeout_s``."""

    def close(self) -> None:
        """Release sockets and reserved ports."""


def route_source(target: str) -> str:
    """Our address on the route to ``target`` (a UDP socket's connect sends nothing)."""
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((target, 9))
        except OSError as exc:
            raise EnvironmentProblem(
                f"no route to {target} from this machine ({exc.strerror})"
            ) from exc
        address: str = probe.getsockname()[0]
    return address


def effective_capabilities() -> int:
    """The process's effective capability set, from /proc/self/status (0 when unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def require_raw_capability() -> None:
    """Raise PrivilegeError naming what is missing when raw sockets cannot be opened."""
    if effective_capabilities() >> CAP_NET_RAW & 1:
        return
    who = "not root" if os.geteuid() != 0 else "root without capabilities"
    raise PrivilegeError(
        f"raw sockets need root or CAP_NET_RAW ({who}, CAP_NET_RAW missing): "
        "run it with sudo (it gives root up once its sockets are open), or as a service "
        "with AmbientCapabilities=CAP_NET_RAW (schedule install --systemd); never setcap "
        "the shared python3: every script on the machine would get raw sockets"
    )


class RawTransport:
    """Raw IPv4/IPv6 sockets out, one AF_PACKET socket in.

    With ``on_sent``, every probe is also reported as the kernel sent it (checksums and
    IDs filled in) with the kernel's software transmit timestamp, read from the sending
    socket's error queue (``SO_TIMESTAMPING``); a probe whose timestamp never comes is
    reported at ``close`` with the time taken before ``sendto``.
    """

    def __init__(
        self,
        *,
        receive_buffer: int = RECEIVE_BUFFER,
        on_sent: SentSink | None = None,
        receive_filter: bytes | None = None,
    ) -> None:
        require_raw_capability()
        self._on_sent = on_sent
        # Per sending socket: the error-queue id of its next probe, and the probes
        # still waiting for their timestamps (id -> bytes as given, send time).
        self._tx_next: dict[int, int] = {}
        self._tx_pending: dict[int, dict[int, tuple[bytes, int]]] = {}
        self._send: dict[int, socket.socket] = {}
        self._reserved: list[socket.socket] = []
        self._ports: dict[tuple[int, str], int] = {}
        # With a filter (``engine.bpf``): a socket that receives nothing until the filter is
        # on and it is bound, so no packet reaches it unfiltered.
        protocol = 0 if receive_filter is not None else socket.htons(ETH_P_ALL)
        try:
            self._rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, protocol)
        except PermissionError as exc:
            raise PrivilegeError(f"cannot open a packet socket: {exc.strerror}") from exc
        except OSError as exc:
            raise EnvironmentProblem(f"cannot open a packet socket: {exc.strerror}") from exc
        try:
            if receive_filter is not None:
                from reachtest.engine.bpf import attach, bind_all

                attach(self._rx.fileno(), receive_filter)
                bind_all(self._rx.fileno(), ETH_P_ALL)
            self._rx.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            # The kernel says whether it checked a packet's checksum (or will compute it:
            # a packet made on this host): the rest is checked here (``_damaged``).
            self._rx.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            self._rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            try:
                self._rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, receive_buffer)
            except OSError:
                self._rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self._rx.setblocking(False)
        except OSError as exc:
            self._rx.close()
            raise EnvironmentProblem(f"cannot set up the packet socket: {exc.strerror}") from exc
        # Kernel timestamps are CLOCK_REALTIME; the engine's clock is monotonic.
        self._offset_ns = time.time_ns() - time.monotonic_ns()
        self._rx_fd = self._rx.fileno()
        # One buffer for every read: a 64 KiB bytes object per recvmsg (then shrunk) costs
        # an allocation per wake-up and, over a day of threads doing it, fragments the heap.
        self._buffer = bytearray(65535)
        self._view = memoryview(self._buffer)
        self._recvmsg_into = self._rx.recvmsg_into
        self._kernel_packets = 0
        self._kernel_drops = 0
        self._cmsg_space = socket.CMSG_SPACE(_TS.size) + socket.CMSG_SPACE(_AUXDATA.size)
        #: Replies dropped because their checksum does not hold (the host drops them too).
        self.bad_checksums = 0

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def source_address(self, target: str) -> str:
        return route_source(target)

    def reserve_port(self, family: int, protocol: str) -> int:
        if protocol == "icmp":
            return 1 + secrets.randbelow(0xFFFE)  # an echo identifier: nothing to hold
        key = (family, protocol)
        if key in self._ports:
            return self._ports[key]
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(af, kind)
        try:
            if af == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == socket.SOCK_DGRAM:
                # Replies are read from the packet socket; this one only holds the port.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            sock.bind(("::" if family == 6 else "0.0.0.0", 0))
        except OSError as exc:
            sock.close()
            raise EnvironmentProblem(
                f"cannot reserve a local {protocol} port: {exc.strerror}"
            ) from exc
        self._reserved.append(sock)
        port: int = sock.getsockname()[1]
        self._ports[key] = port
        return port

    def _sender(self, family: int) -> socket.socket:
        sock = self._send.get(family)
        if sock is None:
            af = socket.AF_INET6 if family == 6 else socket.AF_INET
            try:
                sock = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                if self._on_sent is not None:
                    flags = (
                        SOF_TIMESTAMPING_TX_SOFTWARE
                        | SOF_TIMESTAMPING_SOFTWARE
                        | SOF_TIMESTAMPING_OPT_ID
                    )
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
                    self._tx_next[family] = 0
                    self._tx_pending[family] = {}
            except PermissionError as exc:
                raise PrivilegeError(f"cannot open a raw socket: {exc.strerror}") from exc
            except OSError as exc:
                raise EnvironmentProblem(
                    f"cannot open a raw IPv{family} socket: {exc.strerror}"
                ) from exc
            self._send[family] = sock
        return sock

    def open_senders(self, families: Iterable[int]) -> None:
        """Open the sending sockets of ``families`` now, while privileged (see
        ``reachtest.privileges``), rather than at each family's first probe."""
        for family in sorted(set(families)):
            self._sender(family)

    def send(self, packet: bytes | bytearray, family: int, target: str) -> int:
        sock = self._sender(family)
        sent_ns = time.monotonic_ns()
        for _attempt in range(100):
            try:
                sock.sendto(packet, (target, 0))
                if self._on_sent is not None:
                    key = self._tx_next[family]
                    self._tx_pending[family][key] = (bytes(packet), sent_ns)
                    self._tx_next[family] = key + 1
                return sent_ns
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise EnvironmentProblem(f"cannot send to {target}: {exc.strerror}") from exc
                time.sleep(0.0005)
                sent_ns = time.monotonic_ns()
        raise EnvironmentProblem(f"cannot send to {target}: send buffer stays full")

    def _drain_sent(self) -> None:
        """Report the probes whose kernel transmit timestamps have come back."""
        assert self._on_sent is not None
        for family, sock in self._send.items():
            pending = self._tx_pending[family]
            while pending:
                try:
                    size, ancillary, _flags, _address = sock.recvmsg_into(
                        [self._buffer], 512, MSG_ERRQUEUE | socket.MSG_DONTWAIT
                    )
                except (BlockingIOError, InterruptedError):
                    break
                stamp, key = 0, None
                for _level, kind, value in ancillary:
                    if kind == SO_TIMESTAMPING and len(value) >= _TS3.size:
                        seconds, nanos = _TS3.unpack_from(value)[:2]
                        stamp = seconds * 1_000_000_000 + nanos - self._offset_ns
                    elif len(value) >= _EE.size:
                        _errno, origin, *_rest, key = _EE.unpack_from(value)
                        if origin != SO_EE_ORIGIN_TIMESTAMPING:
                            key = None
                probe = pending.pop(key, None) if key is not None else None
                if probe is None or not stamp:
                    continue
                packet, _sent_ns = probe
                # The looped-back copy starts with the link-layer header; the IP packet
                # (as the kernel finished it) is its last len(packet) bytes.
                sent = (
                    self._view[size - len(packet) : size].tobytes()
                    if size >= len(packet)
                    else packet
                )
                self._on_sent(sent, stamp)

    def receive(self, timeout_s: float) -> list[tuple[bytes, int]]:
        if self._on_sent is not None:
            self._drain_sent()
        frames: list[tuple[bytes, int]] = []
        recvmsg_into = self._recvmsg_into
        buffers = [self._buffer]
        view = self._view
        space = self._cmsg_space
        offset = self._offset_ns
        while True:
            try:
                size, ancillary, _flags, address = recvmsg_into(buffers, space)
            except BlockingIOError:
                if frames or timeout_s <= 0:
                    return frames
                select.select([self._rx_fd], [], [], timeout_s)
                timeout_s = 0
                continue
            if address[1] not in (ETH_P_IP, ETH_P_IPV6):
                continue
            recv_ns = 0
            status = TP_STATUS_CSUM_VALID
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                    seconds, nanos = _TS.unpack(value)
                    recv_ns = seconds * 1_000_000_000 + nanos - offset
                elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(value) >= 4:
                    status = _AUXDATA.unpack_from(value)[0]
            if _damaged(status, view[:size]):
                self.bad_checksums += 1
                continue
            if not recv_ns:
                recv_ns = time.monotonic_ns()
            frames.append((view[:size].tobytes(), recv_ns))
            if len(frames) >= 512:
                return frames

    def receive_stats(self) -> tuple[int, int]:
        """(packets the kernel queued for us, packets it dropped for want of room in the
        receive buffer) since the socket opened; packets the filter refused are in
        neither. The kernel resets its counters on each read: they are summed here."""
        with contextlib.suppress(OSError, struct.error):
            packets, drops = struct.unpack(
                "II", self._rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            )
            self._kernel_packets += packets
            self._kernel_drops += drops
        return self._kernel_packets, self._kernel_drops

    def close(self) -> None:
        if self._on_sent is not None:
            self._drain_sent()
            for pending in self._tx_pending.values():  # no timestamp came: our own time
                for packet, sent_ns in sorted(pending.values(), key=lambda p: p[1]):
                    self._on_sent(packet, sent_ns)
                pending.clear()
        for sock in (*self._send.values(), *self._reserved, self._rx):
            with contextlib.suppress(OSError):
                sock.close()
        self._send.clear()
        self._reserved.clear()
