"""The matcher: exact attribution from real reply bytes, strays with reasons, and purity."""

from __future__ import annotations

import struct

import pytest

from reachtest.engine.matcher import (
    ANSWERED,
    OUTSTANDING,
    FlowEntry,
    FlowKey,
    SentProbe,
    flow_key,
    match,
    service_key,
)
from reachtest.model import FlowSpec, Protocol, StrayReason, tcp, udp
from reachtest.packet import replies
from reachtest.packet.build import ProbeTemplate
from reachtest.packet.parse import Parsed, parse

SRC = {4: "198.18.1.1", 6: "2001:db8:0:1::1"}
DST = {4: "198.18.6.2", 6: "2001:db8:0:6::2"}
HOP = {4: "198.18.3.2", 6: "2001:db8:0:3::2"}
TE = {4: 11, 6: 3}


def setup(family: int, flow: FlowSpec, sent: int = 5) -> tuple[dict[FlowKey, FlowEntry], FlowEntry]:
    template = ProbeTemplate(
        src=SRC[family], dst=DST[family], protocol=flow.protocol, sport=40001, dport=flow.port or 0
    )
    entry = FlowEntry(DST[family], flow, template, flow_key(template))
    for k in range(sent):
        entry.by_k[k] = SentProbe(entry, k + 1, 0, k, template.codec.b(k), 1000 + k, 10**9)
    return {entry.key: entry}, entry


def parsed(data: bytes) -> Parsed:
    got = parse(data)
    assert got is not None
    return got


FLOWS = [FlowSpec(protocol=Protocol.ICMP), tcp(443), udp(53), udp(123), udp(9)]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("flow", FLOWS, ids=str)
def test_time_exceeded_names_exactly_its_probe(family: int, flow: FlowSpec) -> None:
    flows, entry = setup(family, flow)
    probe = entry.template.build(3, 2)
    found = match(
        parsed(replies.icmp_error(probe, responder=HOP[family], icmp_type=TE[family])), 5000, flows
    )
    assert found.reason is None and found.probe is entry.by_k[2] and found.exact
    assert found.changed == ()


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("flow", FLOWS, ids=str)
def test_the_targets_own_answer_names_exactly_its_probe(family: int, flow: FlowSpec) -> None:
    flows, entry = setup(family, flow)
    probe = entry.template.build(9, 4)
    if flow.protocol is Protocol.ICMP:
        answer = replies.echo_reply(probe)
    elif flow.protocol is Protocol.TCP:
        answer = replies.tcp_reply(probe, syn_ack=True)
    else:
        payload = bytes(probe[(20 if family == 4 else 40) + 8 :])
        answer = replies.udp_reply(probe, replies.service_answer(flow.port or 0, payload))
    found = match(parsed(answer), 5000, flows)
    if flow == udp(9):  # a plain UDP answer names no probe, only its flow: the oldest
        assert found.probe is entry.by_k[0] and not found.exact
    else:
        assert found.probe is entry.by_k[4] and found.exact


def test_a_plain_udp_answer_goes_to_the_oldest_unanswered_probe_that_can_have_reached() -> None:
    flows, entry = setup(4, udp(9))  # k = 0..4 with TTL 1..5
    entry.by_k[0].state = ANSWERED
    probe = entry.template.build(9, 4)
    found = match(parsed(replies.udp_reply(probe, b"hi")), 5000, flows)
    assert found.probe is entry.by_k[1] and not found.exact  # the oldest left
    entry.hop_at = {1: "198.18.1.2", 2: "198.18.2.2"}  # routers answered TTL 1 and 2
    found = match(parsed(replies.udp_reply(probe, b"hi")), 5000, flows)
    assert found.probe is entry.by_k[2]  # TTL 3
    entry.terminal_ttl = 4  # the target answered TTL 4: probes with TTL 1..3 cannot have
    found = match(parsed(replies.udp_reply(probe, b"hi")), 5000, flows)
    assert found.probe is entry.by_k[3] and not found.exact


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(
    ("port", "answer"),
    [
        (123, bytes([0x24]) + bytes(47)),  # NTP that leaves the origin timestamp zero
        (123, b"\x24" + bytes(39) + b"\xde\xad\xbe\xef" + bytes(4)),  # a wrong origin
        (53, b"\x12\x34\x81\x80" + bytes(8)),  # DNS with another query ID
        (53, b"x"),  # too short to hold any ID
        (7, b"anything"),  # an echo of something else
    ],
)
def test_any_datagram_from_the_service_is_its_answer_inexact_without_identity(
    family: int, port: int, answer: bytes
) -> None:
    flows, entry = setup(family, udp(port))
    probe = entry.template.build(9, 4)
    found = match(parsed(replies.udp_reply(probe, answer)), 5000, flows)
    assert found.reason is None and found.probe is entry.by_k[0] and not found.exact


def test_an_answer_from_the_service_before_any_probe_is_a_stray() -> None:
    flows, entry = setup(4, udp(123))
    probe = entry.template.build(9, 4)
    found = match(parsed(replies.udp_reply(probe, bytes(48))), 500, flows)  # before k=0 left
    assert found.probe is None and found.reason is StrayReason.UNKNOWN_PROBE


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("delta", [1, 0x10000, 0x7654321])
def test_a_syn_ack_with_an_off_ack_counts_inexact_and_an_rst_never(family: int, delta: int) -> None:
    """A middlebox that rewrote the SYN's sequence and did not translate the ack back:
    the service still answered. A reset with an off ack is a blind or forged one."""
    flows, entry = setup(family, tcp(443))
    probe = bytearray(entry.template.build(9, 4))
    hl = 20 if family == 4 else 40
    seq = struct.unpack_from("!I", probe, hl + 4)[0]
    struct.pack_into("!I", probe, hl + 4, (seq + delta) & 0xFFFFFFFF)
    syn_ack = match(parsed(replies.tcp_reply(probe, syn_ack=True)), 5000, flows)
    assert syn_ack.reason is None and syn_ack.probe is entry.by_k[0]
    assert not syn_ack.exact and syn_ack.changed == ("ack",)
    reset = match(parsed(replies.tcp_reply(probe, syn_ack=False)), 5000, flows)
    assert reset.probe is None
    assert reset.reason in (StrayReason.INCONSISTENT, StrayReason.UNKNOWN_PROBE)


@pytest.mark.parametrize("family", [4, 6])
def test_a_quote_with_one_identity_field_off_is_inconsistent(family: int) -> None:
    flows, entry = setup(family, tcp(443))
    probe = bytearray(entry.template.build(3, 2))
    hl = 20 if family == 4 else 40
    seq = struct.unpack_from("!I", probe, hl + 4)[0]
    struct.pack_into("!I", probe, hl + 4, seq + 1)  # low half (b) off by one
    found = match(
        parsed(replies.icmp_error(probe, responder=HOP[family], icmp_type=TE[family])), 5000, flows
    )
    assert found.probe is None and found.reason is StrayReason.INCONSISTENT


def test_an_ipv4_id_that_disagrees_with_the_transport_identity_is_inconsistent() -> None:
    flows, entry = setup(4, udp(53))
    probe = bytearray(entry.template.build(3, 2))
    probe[4:6] = struct.pack("!H", entry.template.codec.b(3))  # another probe's IP ID
    found = match(parsed(replies.icmp_error(probe, responder=HOP[4], icmp_type=11)), 5000, flows)
    assert found.reason is StrayReason.INCONSISTENT


def test_an_echo_reply_with_a_wrong_payload_word_is_inconsistent() -> None:
    flows, entry = setup(6, FlowSpec(protocol=Protocol.ICMP))
    probe = bytearray(entry.template.build(9, 1))
    probe[48:50] = b"\x00\x01"
    found = match(parsed(replies.echo_reply(probe)), 5000, flows)
    assert found.reason is StrayReason.INCONSISTENT


def test_a_probe_never_sent_is_unknown() -> None:
    flows, entry = setup(4, tcp(443), sent=3)
    probe = entry.template.build(3, 7)  # k=7 was never sent
    found = match(parsed(replies.tcp_reply(probe, syn_ack=False)), 5000, flows)
    assert found.reason is StrayReason.UNKNOWN_PROBE


def test_errors_about_other_flows_and_unrelated_packets_are_strays() -> None:
    flows, _entry = setup(4, tcp(443))
    other = ProbeTemplate(src=SRC[4], dst=DST[4], protocol=Protocol.TCP, sport=40001, dport=80)
    error = replies.icmp_error(other.build(3, 1), responder=HOP[4], icmp_type=11)
    assert match(parsed(error), 5000, flows).reason is StrayReason.UNKNOWN_FLOW
    assert match(
        parsed(replies.tcp_reply(other.build(9, 1), syn_ack=True)), 5000, flows
    ).reason is (StrayReason.UNRELATED)


def test_a_reply_received_before_its_probe_was_sent_is_a_stray() -> None:
    flows, entry = setup(4, tcp(443))
    reply = replies.tcp_reply(entry.template.build(9, 2), syn_ack=True)
    assert match(parsed(reply), 999, flows).reason is StrayReason.EARLY


def test_quoted_fields_changed_on_the_way_are_reported() -> None:
    flows, entry = setup(4, udp(53))
    probe = bytearray(entry.template.build(3, 2))
    probe[1] = 0x20  # DSCP rewritten
    probe[12:16] = bytes([203, 0, 113, 9])  # source NAT
    found = match(parsed(replies.icmp_error(probe, responder=HOP[4], icmp_type=11)), 5000, flows)
    assert found.probe is entry.by_k[2] and found.changed == ("src", "tos=0x20")


def test_a_clamped_mss_in_a_quoted_syn_is_reported_with_its_value() -> None:
    flows, entry = setup(4, tcp(443))
    probe = bytearray(entry.template.build(3, 2))
    assert probe[40:44] == b"\x02\x04\x05\xb4"  # MSS 1460, the first option
    probe[42:44] = (1200).to_bytes(2, "big")
    found = match(parsed(replies.icmp_error(probe, responder=HOP[4], icmp_type=11)), 5000, flows)
    assert found.probe is entry.by_k[2] and found.changed == ("mss=1200",)
    intact = match(
        parsed(replies.icmp_error(entry.template.build(4, 3), responder=HOP[4], icmp_type=11)),
        5000, flows,
    )  # fmt: skip
    assert intact.changed == ()


def test_matching_changes_nothing() -> None:
    flows, entry = setup(4, tcp(443))
    before = {k: (p.state, p.sent_ns) for k, p in entry.by_k.items()}
    reply = parsed(replies.tcp_reply(entry.template.build(9, 2), syn_ack=True))
    assert match(reply, 5000, flows) == match(reply, 5000, flows)
    assert {k: (p.state, p.sent_ns) for k, p in entry.by_k.items()} == before
    assert all(p.state == OUTSTANDING for p in entry.by_k.values())


OUTSIDE = {4: "198.18.3.1", 6: "2001:db8:0:3::1"}


def translated(probe: bytes, family: int, *, port_xor: int = 0x4000, fix_l4: bool = True) -> bytes:
    """``probe`` as a source NAT sends it on: another source address and port (or echo
    identifier), checksums recomputed by scapy (the oracle for the incremental update a
    NAT makes); with ``fix_l4`` false the transport checksum is left as it was."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    pkt = IP(probe) if family == 4 else IPv6(probe)
    pkt.src = OUTSIDE[family]
    layer = next(pkt[t] for t in (TCP, UDP, ICMP, ICMPv6EchoRequest) if pkt.haslayer(t))
    if isinstance(layer, TCP | UDP):
        layer.sport ^= port_xor
    else:
        layer.id ^= port_xor
    if family == 4:
        del pkt.chksum
    if fix_l4:
        delattr(layer, "cksum" if isinstance(layer, ICMPv6EchoRequest) else "chksum")
    return bytes(pkt)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("flow", FLOWS, ids=str)
def test_a_quote_a_nat_did_not_restore_names_its_probe(family: int, flow: FlowSpec) -> None:
    flows, entry = setup(family, flow)
    services = {service_key(entry.key): [entry]}
    quote = translated(bytes(entry.template.build(3, 2)), family)
    error = parsed(replies.icmp_error(quote, responder=HOP[family], icmp_type=TE[family]))
    assert match(error, 5000, flows).reason is StrayReason.UNKNOWN_FLOW  # without the index
    found = match(error, 5000, flows, services)
    assert found.probe is entry.by_k[2] and found.exact
    assert found.changed == ("src", "port")


@pytest.mark.parametrize("family", [4, 6])
def test_a_nat_that_leaves_the_udp_checksum_as_it_was_is_matched_too(family: int) -> None:
    flows, entry = setup(family, udp(53))
    quote = translated(bytes(entry.template.build(3, 2)), family, fix_l4=False)
    error = parsed(replies.icmp_error(quote, responder=HOP[family], icmp_type=TE[family]))
    found = match(error, 5000, flows, {service_key(entry.key): [entry]})
    assert found.probe is entry.by_k[2] and found.changed == ("src", "port")


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("flow", FLOWS, ids=str)
def test_a_translated_quote_with_an_identity_field_off_stays_a_stray(
    family: int, flow: FlowSpec
) -> None:
    flows, entry = setup(family, flow)
    services = {service_key(entry.key): [entry]}
    sent = bytes(entry.template.build(3, 2))
    hl = 20 if family == 4 else 40
    for offset in _identity_offsets(entry.template, family, hl):
        probe = bytearray(sent)
        probe[offset + 1] ^= 0x01
        quote = translated(bytes(probe), family)
        error = parsed(replies.icmp_error(quote, responder=HOP[family], icmp_type=TE[family]))
        found = match(error, 5000, flows, services)
        assert found.probe is None and found.reason is StrayReason.UNKNOWN_FLOW, offset


def _identity_offsets(template: ProbeTemplate, family: int, hl: int) -> list[int]:
    """Where the identity words of a built probe travel (before a NAT touches it)."""
    offsets = [4] if family == 4 else []  # the IPv4 ID
    proto = template.protocol
    if proto is Protocol.TCP:
        return [*offsets, hl + 4, hl + 6]  # both halves of the sequence number
    if proto is Protocol.UDP:
        return [*offsets, hl + 8 + template.b_offset]  # the payload word (a: the checksum)
    return [*offsets, hl + 6, hl + 8 + template.b_offset]  # sequence, payload word


def test_a_translated_quote_for_another_target_or_port_stays_a_stray() -> None:
    flows, entry = setup(4, tcp(443))
    services = {service_key(entry.key): [entry]}
    probe = bytearray(entry.template.build(3, 2))
    for offset, value in ((16, bytes([198, 18, 9, 9])), (22, b"\x01\xbc")):
        moved = bytearray(probe)
        moved[offset : offset + len(value)] = value
        quote = translated(bytes(moved), 4)
        error = parsed(replies.icmp_error(quote, responder=HOP[4], icmp_type=11))
        assert match(error, 5000, flows, services).reason is StrayReason.UNKNOWN_FLOW
