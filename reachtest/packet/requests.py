"""Application requests as bytes, and what their answers are: a real TLS ClientHello
(Python's ssl, through memory buffers: no socket), an HTTP GET, a DNS query (dnspython),
and a bounded look at what came back (a TLS record, an HTTP status line, a block page's
first bytes, a DNS answer's code and addresses)."""

from __future__ import annotations

import contextlib
import re
from enum import StrEnum

#: At most this much of an answer is kept (and shown, escaped): a banner, a block page's
#: first line, a certificate's start. Answers are data, never followed.
EXCERPT_BYTES = 256
_NAME = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+")


class RequestKind(StrEnum):
    """The application a request speaks (the value is the flow syntax's protocol)."""

    TLS = "tls"
    HTTP = "http"
    DNS = "dns"


#: The DNS query types a ``dns/PORT`` flow may ask for.
QUERY_TYPES = ("A", "AAAA", "CNAME", "HTTPS", "MX", "NS", "SOA", "TXT")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a server name or Host (None: it can): ASCII or IDNA,
    labels of letters, digits, - and _, 253 characters at most, no control character."""
    if not name or not name.isprintable() or any(c.isspace() for c in name):
        return "a name is 1 to 253 printable characters without spaces"
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return "not a name IDNA can encode (a label of 1 to 63 characters)"
    if not _NAME.fullmatch(ascii_name):
        return "letters, digits, - and _ between the dots, 253 characters at most"
    return None


def client_hello(name: str) -> bytes:
    """The first flight of a TLS client naming ``name`` (SNI): what a browser or curl
    sends after the TCP handshake, made by OpenSSL through Python's ssl module."""
    import ssl

    # The client context's defaults (protocols, ciphers, extensions) without loading the
    # system's CA store (31 ms a hello, measured; 0.2 ms without): no trust decision is
    # made, the answer is data.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=name.encode("idna").decode())
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello
        tls.do_handshake()
    return outgoing.read()


def http_get(name: str, path: str = "/") -> bytes:
    """An HTTP/1.1 GET for ``path`` with ``Host: name``, closing after the answer."""
    host = name.encode("idna").decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: reachtest\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode()


def dns_query(name: str, query_type: str = "A", ident: int = 0) -> bytes:
    """A recursive DNS query for ``name`` (IDNA) of ``query_type``, with ID ``ident``."""
    import dns.message

    query = dns.message.make_query(name.encode("idna").decode(), query_type, id=ident)
    return query.to_wire()


def dns_answer(query: bytes, data: bytes) -> tuple[str, bytes] | None:
    """(``dns-RCODE``, a bounded text of the answer: its code and records) when ``data``
    is a response to ``query`` (same ID and question); None for anything else (a stray
    datagram is not the server's answer)."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rcode

    try:
        asked = dns.message.from_wire(query)
        got = dns.message.from_wire(data, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, IndexError):
        return None
    if got.id != asked.id or not got.flags & dns.flags.QR or got.question != asked.question:
        return None
    rcode = dns.rcode.to_text(got.rcode())
    records = [f"{rrset.rdtype.name} {rdata.to_text()}" for rrset in got.answer for rdata in rrset]
    text = " ".join([rcode, *records])[:EXCERPT_BYTES]
    return f"dns-{rcode.lower()}", text.encode("ascii", "backslashreplace")


def request(kind: RequestKind, name: str, query_type: str = "A", ident: int = 0) -> bytes:
    if kind is RequestKind.DNS:
        return dns_query(name, query_type, ident)
    return client_hello(name) if kind is RequestKind.TLS else http_get(name)


def answer_kind(kind: RequestKind, data: bytes) -> str:
    """What the first bytes of an answer are: ``server-hello`` (a TLS handshake record),
    ``tls-alert``, ``http-NNN`` (a status line), or ``other`` (something else). (A DNS
    answer is told by ``dns_answer``: it needs the query.)"""
    if kind is RequestKind.TLS:
        if data[:1] == b"\x16" and len(data) >= 6 and data[5:6] == b"\x02":
            return "server-hello"
        if data[:1] == b"\x15":
            return "tls-alert"
        return "other"
    found = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return f"http-{found.group(1).decode()}" if found else "other"
