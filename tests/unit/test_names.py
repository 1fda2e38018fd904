"""Reverse DNS with dnspython against a real DNS server on loopback (the lab's zone
answering): names found, unknown addresses left nameless, a dead server costs at most
its timeout, and nothing is asked twice."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from reachtest.lab.services import Zone
from reachtest.names import ReverseNames


class LoopbackDns:
    """A DNS server on 127.0.0.1 (a random port) answering from a zone; counts queries.
    With ``answer=False`` it swallows every query."""

    def __init__(self, zone: Zone, answer: bool = True) -> None:
        self.zone = zone
        self.answer = answer
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            self.queries += 1
            reply = self.zone.answer(data) if self.answer else None
            if reply is not None:
                self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


ZONE = Zone(
    {
        "r1.lab.reachtest.test": ["198.18.1.2", "2001:db8:0:1::2"],
        "server.lab.reachtest.test": ["198.18.6.2"],
    }
)


@pytest.fixture
def dns_server() -> Iterator[LoopbackDns]:
    server = LoopbackDns(ZONE)
    try:
        yield server
    finally:
        server.close()


def test_names_of_known_addresses_both_families(dns_server: LoopbackDns) -> None:
    with ReverseNames(nameservers=["127.0.0.1"], port=dns_server.port) as names:
        for address in ("198.18.1.2", "2001:db8:0:1::2", "198.18.6.2", "198.18.9.9"):
            names.submit(address)
        found = names.settle(2.0)
    assert found == {
        "198.18.1.2": "r1.lab.reachtest.test",
        "2001:db8:0:1::2": "r1.lab.reachtest.test",
        "198.18.6.2": "server.lab.reachtest.test",
    }


def test_each_address_is_asked_once(dns_server: LoopbackDns) -> None:
    with ReverseNames(nameservers=["127.0.0.1"], port=dns_server.port) as names:
        for _ in range(20):
            names.submit("198.18.1.2")
        names.settle(2.0)
    assert dns_server.queries == 1


def test_a_silent_server_costs_at_most_the_timeout() -> None:
    server = LoopbackDns(ZONE, answer=False)
    try:
        with ReverseNames(nameservers=["127.0.0.1"], port=server.port, timeout_s=0.3) as names:
            started = time.monotonic()
            names.submit("198.18.1.2")
            names.submit("198.18.6.2")
            assert names.names() == {}  # submit never waits
            found = names.settle()
            waited = time.monotonic() - started
    finally:
        server.close()
    assert found == {}
    assert waited < 1.5
    assert server.queries >= 2
