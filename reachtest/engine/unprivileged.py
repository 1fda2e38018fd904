"""The unprivileged transport (Linux): probes through ordinary sockets, no root, no capability.

The tracer still hands over the probe's bytes and gets reply packets back; this
transport sends what the kernel lets an ordinary user send and rebuilds, from what the
kernel tells it, the reply packets the matcher would have seen on the wire:

- ICMP echo: a ping socket per family (``SOCK_DGRAM``/``IPPROTO_ICMP``, allowed when
  ``net.ipv4.ping_group_range`` holds the user's group). The kernel sets the echo
  identifier (the socket's) and the checksum; the sequence number and payload, which
  carry the probe's identity, are ours. Echo replies come on the socket; time-exceeded
  and unreachables on its error queue (``IP_RECVERR``: type, code, the router's address,
  and the echo request it quoted).
- UDP: one bound socket per flow (a fixed source port, so the path is the same for
  every probe of the flow); the payload is ours, so the kernel's checksum is our
  identity word. Answers on the socket, ICMP errors on its error queue.
- TCP: a non-blocking ``connect()`` per probe, with the TTL set: the kernel (5.8 and
  later) reports a time-exceeded for a connecting socket on its error queue; a refused
  connect is a RST, an established one a SYN-ACK, and it is reset at once (the target
  sees a full handshake, then a reset). The kernel chooses the sequence number, so the
  socket itself names the probe. The source port is the flow's while no other probe of
  the flow is connecting; otherwise the kernel picks one (counted: ``forced_ports``). A probe
  is given up after ``TCP_WAIT_S``: the kernel would send the SYN again then.

What it cannot see (the CLI's ``UNPRIVILEGED_NOTES``): the IP TTL of TCP answers (so a
forged RST is judged by the hop it came from, not by its TTL); ICMP extensions such as
MPLS labels (the error queue holds the quote only).
"""

from __future__ import annotations

import contextlib
import errno
import resource
import select
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from reachtest.engine.linux import (
    IP_RECVERR,
    IP_RECVTTL,
    IP_TTL,
    IPV6_HOPLIMIT,
    IPV6_RECVERR,
    IPV6_RECVHOPLIMIT,
    IPV6_UNICAST_HOPS,
    MSG_ERRQUEUE,
    SCM_TIMESTAMPNS,
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    SO_TIMESTAMPNS,
    SOL_IP,
    SOL_IPV6,
    TIMESPEC,
    extended_error,
)
from reachtest.engine.transport import route_source
from reachtest.errors import EnvironmentProblem, PrivilegeError
from reachtest.packet import replies
from reachtest.packet.build import packed
from reachtest.packet.checksum import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from reachtest.packet.parse import parse_probe

#: A TCP probe waits this long for its answer (the kernel's first SYN retransmission).
TCP_WAIT_S = 0.95
#: Sent probes remembered to rebuild the quotes of late errors.
REMEMBERED = 65536
_ANCILLARY = 256


#: What an ICMP error about an earlier probe leaves pending on a socket (IP_RECVERR sets
#: it; the details wait on the error queue): cleared, and the send made again.
_PENDING = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPROTO,
     errno.EMSGSIZE, errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENETDOWN}
)  # fmt: skip


def _send(sock: socket.socket, data: bytes, address: tuple[str, int]) -> None:
    """``sendto``, after clearing an error an earlier probe's ICMP answer left pending."""
    for _attempt in range(4):
        try:
            sock.sendto(data, address)
            return
        except OSError as exc:
            if exc.errno not in _PENDING:
                raise
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # reading it clears it


def _raise_file_limit() -> int:
    """Every TCP probe in flight is a socket: raise the soft limit on open files to the
    hard one, and return what it is now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return max(128, soft)


class IcmpUnavailable(PrivilegeError):
    """Ping sockets are refused: ``net.ipv4.ping_group_range`` leaves the user out."""


class _TcpProbe:
    __slots__ = ("deadline", "family", "packet", "sock")

    def __init__(self, sock: socket.socket, packet: bytes, family: int, deadline: float) -> None:
        self.sock = sock
        self.packet = packet
        self.family = family
        self.deadline = deadline


class UnprivilegedTransport:
    """Ordinary sockets: ping sockets, bound UDP sockets, connecting TCP sockets."""

    name = "unprivileged"

    def __init__(self) -> None:
        self._poll = select.epoll()
        self._icmp: dict[int, socket.socket] = {}
        self._udp: dict[tuple[int, int], socket.socket] = {}
        self._tcp: dict[int, _TcpProbe] = {}
        self._tcp_busy: set[tuple[int, int]] = set()  # (family, port) connecting now
        self._by_fd: dict[int, tuple[str, socket.socket]] = {}
        self._sent: OrderedDict[tuple[int, int, bytes], bytes] = OrderedDict()
        self._source: dict[str, str] = {}
        self._out: list[tuple[bytes, int]] = []
        self._offset_ns = time.time_ns() - time.monotonic_ns()
        self._buffer = memoryview(bytearray(65535))  # every read, copied out (see transport)
        self.forced_ports = 0
        self.tcp_sent = 0
        #: TCP probes not sent: every descriptor this process may open was in use.
        self.tcp_skipped = 0
        self._tcp_limit = _raise_file_limit() - 64  # for the ping and UDP sockets, files

    # -- the Transport protocol ------------------------------------------------------

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def source_address(self, target: str) -> str:
        address = route_source(target)
        self._source[target] = address
        return address

    def reserve_port(self, family: int, protocol: str) -> int:
        if protocol == "icmp":
            return self._ping_socket(family).getsockname()[1]  # type: ignore[no-any-return]
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        if protocol == "udp":
            sock = self._socket(af, socket.SOCK_DGRAM, 0)
            sock.bind(("::" if family == 6 else "0.0.0.0", 0))
            port: int = sock.getsockname()[1]
            self._udp[(family, port)] = sock
            self._watch("udp", sock)
            return port
        # TCP: a port no one else uses, that each probe binds again (SO_REUSEADDR).
        holder = socket.socket(af, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == 6:
            holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        holder.bind(("::" if family == 6 else "0.0.0.0", 0))
        port = holder.getsockname()[1]
        self._by_fd[holder.fileno()] = ("holder", holder)
        return port

    def send(self, packet: bytes | bytearray, family: int, target: str) -> int:
        fields = parse_probe(packet)
        data = bytes(packet)
        hl = fields.header_length
        sent_ns = time.monotonic_ns()
        try:
            if fields.proto == PROTO_ICMP:
                sock = self._ping_socket(family)
                self._ttl(sock, family, fields.ttl)
                self._remember((family, fields.sport, data[hl + 4 : hl + 8]), data)
                _send(sock, data[hl:], (target, 0))
            elif fields.proto == PROTO_UDP:
                sock = self._udp[(family, fields.sport)]
                self._ttl(sock, family, fields.ttl)
                self._remember((family, fields.sport, data[hl + 8 :]), data)
                _send(sock, data[hl + 8 :], (target, fields.dport))
            elif fields.proto == PROTO_TCP:
                self._connect(data, family, target, fields.sport, fields.dport, fields.ttl)
        except OSError as exc:
            if exc.errno in (errno.ENOBUFS, errno.EAGAIN):
                return sent_ns  # a probe the kernel would not take: it times out
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES):
                return sent_ns  # the answer (an ICMP error) is on the error queue
            raise EnvironmentProblem(f"cannot send to {target}: {exc.strerror}") from exc
        return sent_ns

    def receive(self, timeout_s: float) -> list[tuple[bytes, int]]:
        self._expire_tcp()
        if not self._out:
            wait = max(0.0, timeout_s)
            if self._tcp:
                wait = min(
                    wait, max(0.0, min(p.deadline for p in self._tcp.values()) - time.monotonic())
                )
            for fd, events in self._poll.poll(wait):
                self._ready(fd, events)
            self._expire_tcp()
        out, self._out = self._out, []
        return out

    def close(self) -> None:
        for probe in list(self._tcp.values()):
            probe.sock.close()
        self._tcp.clear()
        for _kind, sock in self._by_fd.values():
            sock.close()
        self._by_fd.clear()
        for sock in self._icmp.values():
            sock.close()
        self._poll.close()

    # -- sockets -----------------------------------------------------------------------

    def _socket(self, af: int, kind: int, proto: int) -> socket.socket:
        sock = socket.socket(af, kind, proto)
        try:
            if af == socket.AF_INET6:
                sock.setsockopt(SOL_IPV6, IPV6_RECVERR, 1)
                sock.setsockopt(SOL_IPV6, IPV6_RECVHOPLIMIT, 1)
            else:
                sock.setsockopt(SOL_IP, IP_RECVERR, 1)
                sock.setsockopt(SOL_IP, IP_RECVTTL, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _ping_socket(self, family: int) -> socket.socket:
        sock = self._icmp.get(family)
        if sock is None:
            v6 = family == 6
            af = socket.AF_INET6 if v6 else socket.AF_INET
            try:
                sock = self._socket(af, socket.SOCK_DGRAM, PROTO_ICMPV6 if v6 else PROTO_ICMP)
            except PermissionError as exc:
                raise IcmpUnavailable(
                    "ICMP echo needs a ping socket, which this system refuses to this user "
                    "(net.ipv4.ping_group_range does not hold its group)"
                ) from exc
            sock.bind(("::" if v6 else "0.0.0.0", 0))
            self._icmp[family] = sock
            self._watch("icmp", sock)
        return sock

    def _watch(self, kind: str, sock: socket.socket) -> None:
        self._by_fd[sock.fileno()] = (kind, sock)
        self._poll.register(sock.fileno(), select.EPOLLIN | select.EPOLLERR)

    @staticmethod
    def _ttl(sock: socket.socket, family: int, ttl: int) -> None:
        if family == 6:
            sock.setsockopt(SOL_IPV6, IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(SOL_IP, IP_TTL, ttl)

    def _remember(self, key: tuple[int, int, bytes], packet: bytes) -> None:
        self._sent[key] = packet
        if len(self._sent) > REMEMBERED:
            self._sent.popitem(last=False)

    def _connect(
        self, packet: bytes, family: int, target: str, sport: int, dport: int, ttl: int
    ) -> None:
        if len(self._tcp) >= self._tcp_limit:
            self.tcp_skipped += 1  # it times out, and the record says how many
            return
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        sock = self._socket(af, socket.SOCK_STREAM, 0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self._ttl(sock, family, ttl)
            source = self._source.get(target, "::" if family == 6 else "0.0.0.0")
            port = 0
            if (family, sport) not in self._tcp_busy:
                try:
                    sock.bind((source, sport))
                    port = sport
                except OSError:
                    port = 0
            if port == 0:
                sock.bind((source, 0))
                self.forced_ports += 1
            self.tcp_sent += 1
            code = sock.connect_ex((target, dport))
        except OSError:
            sock.close()
            raise
        fd = sock.fileno()
        probe = _TcpProbe(sock, packet, family, time.monotonic() + TCP_WAIT_S)
        if port:
            self._tcp_busy.add((family, sport))
        if code not in (0, errno.EINPROGRESS):
            self._tcp[fd] = probe
            self._tcp_done(fd, code)
            return
        self._tcp[fd] = probe
        self._poll.register(fd, select.EPOLLOUT | select.EPOLLERR)

    # -- replies -----------------------------------------------------------------------

    def _ready(self, fd: int, events: int) -> None:
        if fd in self._tcp:
            probe = self._tcp[fd]
            if events & select.EPOLLERR and self._error_queue(probe.sock, fd):
                return
            err = probe.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self._tcp_done(fd, err)
            return
        kind, sock = self._by_fd.get(fd, ("", None))
        if sock is None:
            return
        if events & select.EPOLLERR:
            while self._error_queue(sock, None):
                pass
        if events & select.EPOLLIN:
            self._drain(kind, sock)

    def _drain(self, kind: str, sock: socket.socket) -> None:
        family = 6 if sock.family == socket.AF_INET6 else 4
        while True:
            try:
                data, ancillary, address = self._read(sock, 0)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error's errno (its details are on the error queue)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    continue
                return
            ttl, ns = self._ancillary(ancillary)
            local = sock.getsockname()
            ours = packed(self._source.get(address[0], local[0]))
            remote = packed(address[0])
            if kind == "icmp":
                proto = PROTO_ICMPV6 if family == 6 else PROTO_ICMP
                reply = replies.ip_packet(remote, ours, proto, data, ttl)
            else:
                header = struct.pack("!HHHH", address[1], local[1], 8 + len(data), 0)
                reply = replies.ip_packet(remote, ours, PROTO_UDP, header + data, ttl)
            self._out.append((reply, ns))

    def _read(self, sock: socket.socket, flags: int) -> tuple[bytes, list[Any], Any]:
        size, ancillary, _flags, address = sock.recvmsg_into([self._buffer], _ANCILLARY, flags)
        return self._buffer[:size].tobytes(), ancillary, address

    def _error_queue(self, sock: socket.socket, tcp_fd: int | None) -> bool:
        """Read one error from ``sock``'s queue and rebuild the ICMP error it was; False
        when the queue is empty."""
        try:
            data, ancillary, _address = self._read(sock, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False
        ttl, ns = self._ancillary(ancillary)
        found = extended_error(ancillary)
        if found is None:
            return True
        origin, icmp_type, icmp_code, offender = found
        if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6) or offender is None:
            return True
        family = 6 if sock.family == socket.AF_INET6 else 4
        if tcp_fd is not None:
            probe = self._tcp[tcp_fd].packet
            self._tcp_close(tcp_fd)
        elif sock.type == socket.SOCK_DGRAM and sock.proto in (PROTO_ICMP, PROTO_ICMPV6):
            ident = sock.getsockname()[1]
            probe = self._sent.get((family, ident, data[4:8]), b"")
        else:
            probe = self._sent.get((family, sock.getsockname()[1], data), b"")
        if probe:
            error = replies.icmp_error(
                probe, responder=offender, icmp_type=icmp_type, icmp_code=icmp_code, ttl=ttl
            )
            self._out.append((error, ns))
        return True

    def _tcp_done(self, fd: int, err: int) -> None:
        probe = self._tcp.get(fd)
        if probe is None:
            return
        if err == 0:
            reply = replies.tcp_reply(probe.packet, syn_ack=True, ttl=0)
        elif err == errno.ECONNREFUSED:
            reply = replies.tcp_reply(probe.packet, syn_ack=False, ttl=0)
        elif err in (errno.EINPROGRESS, errno.EALREADY):
            return
        else:
            reply = b""  # an ICMP error: it came by the error queue
        self._tcp_close(fd)
        if reply:
            self._out.append((reply, time.monotonic_ns()))

    def _tcp_close(self, fd: int) -> None:
        probe = self._tcp.pop(fd, None)
        if probe is None:
            return
        fields = parse_probe(probe.packet)
        self._tcp_busy.discard((probe.family, fields.sport))
        with contextlib.suppress(OSError, ValueError):
            self._poll.unregister(fd)
        probe.sock.close()  # SO_LINGER 0: an established connection is reset

    def _expire_tcp(self) -> None:
        now = time.monotonic()
        for fd in [fd for fd, p in self._tcp.items() if p.deadline <= now]:
            self._tcp_close(fd)

    def _ancillary(self, ancillary: Iterable[tuple[int, int, bytes]]) -> tuple[int, int]:
        """(reply TTL or 0 when not told, kernel receive time in monotonic ns)."""
        ttl, ns = 0, time.monotonic_ns()
        for level, kind, value in ancillary:
            if (level, kind) in ((SOL_IP, IP_TTL), (SOL_IPV6, IPV6_HOPLIMIT)) and len(value) >= 1:
                ttl = int.from_bytes(value[:4], "little") if len(value) >= 4 else value[0]
            elif level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(value) >= 16:
                sec, nsec = TIMESPEC.unpack_from(value)
                ns = sec * 1_000_000_000 + nsec - self._offset_ns
        return ttl, ns
