"""The lab's server process: TCP listeners (HTTP on 80 and 8080, HTTPS with a certificate
made at lab up on 443, an SSH banner on 22), a DNS and an NTP responder (and, for the
``udp-quirks`` scenario, an NTP that leaves the origin zero, a UDP echo and a fixed
banner: services that answer off the book) in one loop
(or, with ``--delay``, the forwarder of a delayed link: ``reachtest.lab.delay``).

Run inside a lab namespace as ``python -m reachtest.lab.services``; ``reachtest lab up``
starts it and ``lab down`` stops it by PID. The DNS responder answers A, AAAA and PTR
for the lab's own names (``r3.<lab>.reachtest.test``) from a zone file, so reverse DNS
inside the lab never reaches the machine's resolver.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
NTP_PACKET = struct.Struct("!BBbb11I")
SSH_BANNER = b"SSH-2.0-reachtest-lab\r\n"
#: Ports where the server answers HTTP requests (in clear) and HTTPS (TLS, then HTTP).
HTTP_PORTS = (80, 8080)
TLS_PORTS = (443,)
#: A conversation (TLS handshake, request, answer) ends after this long, whatever.
CONVERSATION_S = 5.0
MAX_REQUEST = 16 * 1024


#: ``GET /big`` answers this many bytes (a transfer of full-size segments: what stalls in
#: a PMTU black hole while small answers pass).
BIG_BYTES = 256 * 1024


def http_answer(request: bytes) -> bytes:
    """The lab server's answer to an HTTP request: 200 naming the Host asked for (for
    ``/big``, followed by BIG_BYTES of filler)."""
    host = b""
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            host = value.strip()[:255]
    body = b"reachtest lab server: served " + (host or b"(no host)") + b"\n"
    if request.split(b" ", 2)[1:2] == [b"/big"]:
        body += b"." * BIG_BYTES
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def converse(
    conn: socket.socket, context: Any | None, slow_s: float = 0.0, slow_answer_s: float = 0.0
) -> None:
    """Serve one connection: the TLS handshake (with ``context``, ``slow_s`` later), one
    HTTP request read up to its blank line, one answer (``slow_answer_s`` later); then
    close. Bounded in time and size."""
    import ssl

    deadline = time.monotonic() + CONVERSATION_S
    try:
        conn.setblocking(True)
        conn.settimeout(CONVERSATION_S)
        if context is not None and slow_s > 0:
            time.sleep(slow_s)
        stream: Any = context.wrap_socket(conn, server_side=True) if context else conn
        request = b""
        while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
            if time.monotonic() > deadline:
                return
            chunk = stream.recv(4096)
            if not chunk:
                return
            request += chunk
        if slow_answer_s > 0:
            time.sleep(slow_answer_s)
        stream.sendall(http_answer(request))
        with contextlib.suppress(OSError, ssl.SSLError):
            if context:
                stream.unwrap()
    except (OSError, ssl.SSLError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.close()


class Zone:
    """Names and addresses of the lab: forward (A, AAAA) and reverse (PTR) look-ups."""

    def __init__(
        self, names: dict[str, list[str]], txt: dict[str, list[str]] | None = None
    ) -> None:
        self.forward: dict[str, list[str]] = {}
        self.reverse: dict[str, str] = {}
        # TXT records (the lab's AS owners in Team Cymru's zones, for -z).
        self.txt = {n.rstrip(".").lower() + ".": list(v) for n, v in (txt or {}).items()}
        for name, addresses in names.items():
            fqdn = name.rstrip(".").lower() + "."
            for version in (4, 6):  # forward: the first (primary) address of each family
                first = [a for a in addresses if ipaddress.ip_address(a).version == version][:1]
                self.forward.setdefault(fqdn, []).extend(first)
            for address in addresses:
                ptr = ipaddress.ip_address(address).reverse_pointer + "."
                self.reverse.setdefault(ptr, fqdn)

    @classmethod
    def load(cls, path: Path | None) -> Zone:
        if path is None:
            return cls({})
        data = json.loads(path.read_text())
        if "names" in data and isinstance(data["names"], dict):
            return cls(data["names"], data.get("txt"))
        return cls(data)

    def answer(self, wire: bytes) -> bytes | None:
        """The DNS response to the query in ``wire``; None for a packet that is no query."""
        import dns.exception
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR or not query.question:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().lower()
        known = name in self.forward or name in self.reverse or name in self.txt
        if question.rdtype == dns.rdatatype.TXT and name in self.txt:
            response.answer.append(
                dns.rrset.from_text_list(
                    name,
                    60,
                    dns.rdataclass.IN,
                    dns.rdatatype.TXT,
                    ['"' + t.replace('"', "") + '"' for t in self.txt[name]],
                )
            )
        if question.rdtype == dns.rdatatype.PTR and name in self.reverse:
            response.answer.append(
                dns.rrset.from_text(
                    name, 60, dns.rdataclass.IN, dns.rdatatype.PTR, self.reverse[name]
                )
            )
        elif question.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and name in self.forward:
            version = 4 if question.rdtype == dns.rdatatype.A else 6
            found = [a for a in self.forward[name] if ipaddress.ip_address(a).version == version]
            if found:
                response.answer.append(
                    dns.rrset.from_text_list(name, 60, dns.rdataclass.IN, question.rdtype, found)
                )
        if not known:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return bytes(response.to_wire())


#: What the banner service (like QOTD, RFC 865) answers to any datagram.
BANNER = b"reachtest lab: a fixed banner, whatever you send\r\n"


def ntp_answer(request: bytes, now_s: float | None = None, *, origin: bool = True) -> bytes | None:
    """An NTP server reply (mode 4, stratum 2) to a client request (mode 3); else None.
    ``origin=False``: a server that leaves the origin timestamp zero instead of copying
    the client's transmit time (RFC 5905 asks for the copy; some servers do not)."""
    if len(request) < NTP_PACKET.size:
        return None
    first = request[0]
    version, mode = (first >> 3) & 0x7, first & 0x7
    if mode != 3 or version not in (1, 2, 3, 4):
        return None
    now = (time.time() if now_s is None else now_s) + NTP_EPOCH_OFFSET
    seconds, fraction = int(now), int((now % 1) * 2**32) & 0xFFFFFFFF
    copied = struct.unpack_from("!II", request, 40) if origin else (0, 0)  # client transmit
    return NTP_PACKET.pack(
        (0 << 6) | (version << 3) | 4,  # leap 0, version, mode server
        2,  # stratum
        request[2],  # poll
        -20,  # precision
        0,  # root delay
        0,  # root dispersion
        0x7F7F0101,  # reference id
        seconds,
        fraction,  # reference time
        copied[0],
        copied[1],  # origin = the client's transmit
        seconds,
        fraction,  # receive
        seconds,
        fraction,  # transmit
    )


IP_PKTINFO = 8  # Linux; the socket module does not name it


def _bind(kind: int, address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    if kind == socket.SOCK_DGRAM:
        # Answer from the address that was asked, as real servers do, also for the
        # extra target addresses on the server's loopback.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind((address, port))
    sock.setblocking(False)
    if kind == socket.SOCK_STREAM:
        sock.listen(512)
    return sock


def _reply_from(ancillary: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    """Ancillary data making a reply leave from the address the request was sent to."""
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            return [(level, kind, value[:16] + bytes(4))]  # that address, any interface
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            return [(level, kind, bytes(4) + value[8:12] + bytes(4))]
    return []


def _tls_context(cert: Path | None, key: Path | None) -> Any | None:
    import ssl

    if cert is None or key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


def serve(args: argparse.Namespace) -> None:
    import threading

    zone = Zone.load(args.zone)
    context = _tls_context(args.cert, args.key)
    selector = selectors.DefaultSelector()
    for port in args.tcp:
        selector.register(
            _bind(socket.SOCK_STREAM, args.bind, port), selectors.EVENT_READ, ("tcp", port)
        )
    if args.dns is not None:
        selector.register(
            _bind(socket.SOCK_DGRAM, args.bind, args.dns), selectors.EVENT_READ, ("dns", args.dns)
        )
    if args.ntp is not None:
        selector.register(
            _bind(socket.SOCK_DGRAM, args.bind, args.ntp), selectors.EVENT_READ, ("ntp", args.ntp)
        )
    for kind, port in (("echo", args.echo), ("banner", args.banner)):
        if port is not None:
            selector.register(
                _bind(socket.SOCK_DGRAM, args.bind, port), selectors.EVENT_READ, (kind, port)
            )

    def ntp(data: bytes) -> bytes | None:
        return ntp_answer(data, origin=not args.ntp_no_origin)

    def echo(data: bytes) -> bytes | None:
        return data  # RFC 862

    def banner(_data: bytes) -> bytes | None:
        return BANNER

    answers: dict[str, Callable[[bytes], bytes | None]] = {
        "dns": zone.answer, "ntp": ntp, "echo": echo, "banner": banner,
    }  # fmt: skip

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.ready:
        args.ready.write_text(f"{os.getpid()}\n")

    while True:
        for key, _ in selector.select(timeout=0.5):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            kind, port = key.data
            try:
                if kind == "tcp":
                    conn, _ = sock.accept()
                    if port in HTTP_PORTS or (port in TLS_PORTS and context is not None):
                        speaks_tls = context if port in TLS_PORTS else None
                        threading.Thread(
                            target=converse,
                            args=(
                                conn,
                                speaks_tls,
                                args.slow_tls_ms / 1000,
                                args.slow_http_ms / 1000 if speaks_tls is None else 0.0,
                            ),
                            daemon=True,
                        ).start()
                        continue
                    if port == 22:
                        conn.setblocking(False)
                        with contextlib.suppress(OSError):
                            conn.send(SSH_BANNER)
                    conn.close()
                    continue
                data, ancillary, _flags, peer = sock.recvmsg(4096, 256)
                reply = answers[kind](data)
                if reply is None:
                    continue
                sendmsg_args = ([reply], _reply_from(ancillary), 0, peer)
                if kind == "dns" and args.slow_dns_ms > 0:  # later, the loop going on
                    threading.Timer(args.slow_dns_ms / 1000, sock.sendmsg, sendmsg_args).start()
                else:
                    sock.sendmsg(*sendmsg_args)
            except OSError:
                continue


def _ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def _standing(args: argparse.Namespace) -> Callable[[], None]:
    """For a helper that runs until stopped (a delayed link, an injector): SIGTERM and
    SIGINT end it; the callable it gets writes the ready file once it is listening."""

    def ready() -> None:
        if args.ready:
            args.ready.write_text(f"{os.getpid()}\n")

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return ready


def _delay(args: argparse.Namespace) -> int:
    from reachtest.lab.delay import forward

    side_a, side_b, ms, jitter_ms = args.delay.split(",")
    forward(side_a, side_b, float(ms) / 1000, float(jitter_ms) / 1000, ready=_standing(args))
    return 0


def _inject(args: argparse.Namespace) -> int:
    from reachtest.lab.inject import inject

    watch, send, own_mac, peer_mac, port, kind, pattern = args.inject.split(",", 6)
    inject(
        watch, send, own_mac, peer_mac, int(port), pattern.encode(), ready=_standing(args),
        kind=kind,
    )  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reachtest.lab.services", description=__doc__)
    parser.add_argument("--lab", required=True, help="the lab id (marks the process as ours)")
    parser.add_argument("--bind", default="::", help="address to listen on (:: = v4 and v6)")
    parser.add_argument("--tcp", type=_ports, default=[], help="TCP ports, comma-separated")
    parser.add_argument("--dns", type=int, default=None, help="UDP port of the DNS responder")
    parser.add_argument("--ntp", type=int, default=None, help="UDP port of the NTP responder")
    parser.add_argument(
        "--ntp-no-origin", action="store_true", help="NTP replies leave the origin zero"
    )
    parser.add_argument("--echo", type=int, default=None, help="UDP port of an echo service")
    parser.add_argument("--banner", type=int, default=None, help="UDP port of a fixed banner")
    parser.add_argument("--zone", type=Path, default=None, help="JSON file: name -> addresses")
    parser.add_argument("--cert", type=Path, default=None, help="TLS certificate (port 443)")
    parser.add_argument("--key", type=Path, default=None, help="its private key")
    parser.add_argument(
        "--slow-tls-ms", type=float, default=0.0, help="answer ClientHellos this much later"
    )
    parser.add_argument(
        "--slow-http-ms", type=float, default=0.0, help="answer HTTP requests this much later"
    )
    parser.add_argument(
        "--slow-dns-ms", type=float, default=0.0, help="answer DNS queries this much later"
    )
    parser.add_argument("--ready", type=Path, default=None, help="file to write once listening")
    parser.add_argument(
        "--inject",
        default=None,
        metavar="WATCH,SEND,OWN_MAC,PEER_MAC,PORT,tcp|page|dns,PATTERN",
        help="instead: the on-path injector (reachtest.lab.inject)",
    )
    parser.add_argument(
        "--delay",
        default=None,
        metavar="IF_A,IF_B,MS,JITTER_MS",
        help="instead: forward frames between two interfaces, MS (+- JITTER_MS) later",
    )
    args = parser.parse_args(argv)
    try:
        if args.delay is not None:
            return _delay(args)
        if args.inject is not None:
            return _inject(args)
        serve(args)
    except OSError as exc:
        print(f"reachtest.lab.services: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
