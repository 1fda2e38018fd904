"""The lab's DNS and NTP responders, byte for byte (no root needed)."""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
import dns.reversename
from hypothesis import given
from hypothesis import strategies as st

from reachtest.lab.services import Zone, ntp_answer

ZONE = Zone({"r3.lab.reachtest.test": ["198.18.3.2", "2001:db8:0:3::2", "198.18.4.1"]})


def ask(name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    wire = ZONE.answer(query.to_wire())
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == query.id
    return reply


def test_forward_lookups_give_the_primary_address_per_family() -> None:
    assert [r.to_text() for r in ask("r3.lab.reachtest.test.", "A").answer[0]] == ["198.18.3.2"]
    assert [r.to_text() for r in ask("R3.lab.reachtest.test.", "AAAA").answer[0]] == [
        "2001:db8:0:3::2"
    ]


def test_every_address_has_a_ptr() -> None:
    for address in ("198.18.3.2", "198.18.4.1", "2001:db8:0:3::2"):
        reply = ask(dns.reversename.from_address(address).to_text(), "PTR")
        assert reply.answer[0][0].to_text() == "r3.lab.reachtest.test."


def test_unknown_names_are_nxdomain() -> None:
    assert ask("example.com.", "A").rcode() == dns.rcode.NXDOMAIN
    assert (
        ask(dns.reversename.from_address("192.0.2.1").to_text(), "PTR").rcode()
        == dns.rcode.NXDOMAIN
    )


@given(st.binary(max_size=64))
def test_garbage_gets_no_answer_and_no_exception(data: bytes) -> None:
    result = ZONE.answer(data)
    if result is not None:
        dns.message.from_wire(result)


def test_ntp_reply_is_a_server_packet_that_echoes_the_client_time() -> None:
    request = bytearray(48)
    request[0] = (4 << 3) | 3
    struct.pack_into("!II", request, 40, 0xE0000000, 0x12345678)
    reply = ntp_answer(bytes(request), now_s=1_700_000_000.5)
    assert reply is not None and len(reply) == 48
    assert reply[0] == (4 << 3) | 4 and reply[1] == 2
    assert reply[24:32] == bytes(request[40:48])
    seconds, fraction = struct.unpack_from("!II", reply, 40)
    assert seconds == 1_700_000_000 + 2208988800 and fraction == 2**31


@given(st.binary(max_size=100))
def test_ntp_answers_only_client_requests(data: bytes) -> None:
    reply = ntp_answer(data)
    if reply is not None:
        assert len(data) >= 48 and data[0] & 0x7 == 3
