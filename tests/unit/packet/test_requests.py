"""Application requests as bytes (packet/requests.py): a real ClientHello that scapy's
TLS layer reads with the SNI asked for, an HTTP GET, names checked, answers told apart."""

from __future__ import annotations

import pytest

from reachtest.packet.requests import (
    RequestKind,
    answer_kind,
    client_hello,
    dns_answer,
    dns_query,
    http_get,
    name_problem,
    request,
)


def server_names(hello: bytes) -> list[bytes]:
    """The SNI host names of a ClientHello, read by its RFC 8446 layout."""
    body = hello[5 + 4 :]  # record header, handshake header
    at = 2 + 32  # legacy version, random
    at += 1 + body[at]  # session id
    at += 2 + int.from_bytes(body[at : at + 2], "big")  # cipher suites
    at += 1 + body[at]  # compression methods
    end = at + 2 + int.from_bytes(body[at : at + 2], "big")
    at += 2
    names = []
    while at < end:
        kind, size = (
            int.from_bytes(body[at : at + 2], "big"),
            int.from_bytes(body[at + 2 : at + 4], "big"),
        )
        if kind == 0:  # server_name: list length, then (type 0, length, name)
            item = body[at + 4 + 2 :]
            names.append(item[3 : 3 + int.from_bytes(item[1:3], "big")])
        at += 4 + size
    return names


def test_the_client_hello_carries_the_server_name() -> None:
    hello = client_hello("blocked.example")
    assert hello[:1] == b"\x16" and hello[5:6] == b"\x01"  # handshake record, ClientHello
    assert server_names(hello) == [b"blocked.example"]
    assert client_hello("b\u00fccher.example").count(b"xn--bcher-kva.example") == 1  # IDNA


def test_the_http_request_names_the_host() -> None:
    assert http_get("allowed.example").startswith(b"GET / HTTP/1.1\r\nHost: allowed.example\r\n")
    assert request(RequestKind.HTTP, "x.example") == http_get("x.example")


@pytest.mark.parametrize(
    "bad", ["", "a b", "a\x00b", "x" * 254, "a..b", "-a.example", "a\nb", "\x1b[2J"]
)
def test_names_that_cannot_be_sent_are_refused(bad: str) -> None:
    assert name_problem(bad) is not None


@pytest.mark.parametrize("good", ["blocked.example", "a", "xn--bcher-kva.example", "a_b.c"])
def test_names_that_can_be_sent_pass(good: str) -> None:
    assert name_problem(good) is None


def test_answers_are_told_apart() -> None:
    assert answer_kind(RequestKind.TLS, b"\x16\x03\x03\x00\x40\x02rest") == "server-hello"
    assert answer_kind(RequestKind.TLS, b"\x15\x03\x03\x00\x02\x02\x28") == "tls-alert"
    assert answer_kind(RequestKind.HTTP, b"HTTP/1.1 403 Forbidden\r\n") == "http-403"
    assert answer_kind(RequestKind.HTTP, b"<html>blocked</html>") == "other"


def test_a_dns_answer_counts_only_for_its_query() -> None:
    """Same ID and question, a response: its code and records as bounded text; a stray
    datagram, another ID, another question or the query itself: not an answer."""
    import dns.message
    import dns.rrset

    query = dns_query("bücher.example", "AAAA", 4242)
    parsed = dns.message.from_wire(query)
    assert parsed.id == 4242 and parsed.question[0].name.to_text() == "xn--bcher-kva.example."
    response = dns.message.make_response(parsed)
    response.answer.append(
        dns.rrset.from_text("xn--bcher-kva.example.", 60, "IN", "AAAA", "2001:db8::1")
    )
    assert dns_answer(query, response.to_wire()) == ("dns-noerror", b"NOERROR AAAA 2001:db8::1")
    other = dns.message.make_response(dns.message.from_wire(dns_query("x.example", "AAAA", 4242)))
    assert dns_answer(query, other.to_wire()) is None
    response.id = 1
    assert dns_answer(query, response.to_wire()) is None
    assert dns_answer(query, query) is None and dns_answer(query, b"\xff" * 40) is None
    huge = dns.message.make_response(parsed)
    huge.answer.append(
        dns.rrset.from_text_list(
            "xn--bcher-kva.example.", 60, "IN", "TXT", ['"' + "\x1b" * 200 + '"'] * 5
        )
    )
    kind, text = dns_answer(query, huge.to_wire()) or ("", b"")
    assert kind == "dns-noerror" and len(text) <= 256 and b"\x1b" not in text
