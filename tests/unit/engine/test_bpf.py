"""The receive socket's kernel filter, run by the kernel itself: the program is attached
to one end of an AF_UNIX datagram socket pair (a classic BPF filter there sees each
datagram from its first byte, as a packet socket's sees the IP header) and packets are
sent through it. Every kind of answer to a probe passes, v4 and v6; other traffic does
not. No root, no network."""

from __future__ import annotations

import socket

import pytest

from reachtest.engine.bpf import MAX_TARGETS, attach, compiled, expression
from reachtest.model import ICMP_FLOW, FlowSpec, tcp, udp
from reachtest.packet import replies
from reachtest.packet.build import ProbeTemplate

SRC = {4: "198.18.1.1", 6: "2001:db8:0:1::1"}
DST = {4: "198.18.6.2", 6: "2001:db8:0:6::2"}
OTHER = {4: "198.18.9.9", 6: "2001:db8:0:9::9"}
HOP = {4: "198.18.3.2", 6: "2001:db8:0:3::2"}
FLOWS = (ICMP_FLOW, tcp(443), udp(53))


def passes(program: bytes, packets: dict[str, bytes]) -> dict[str, bool]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        attach(b.fileno(), program)
        b.setblocking(False)
        got = {}
        for name, packet in packets.items():
            a.send(packet)
            try:
                got[name] = b.recv(65535) == packet
            except BlockingIOError:
                got[name] = False
        return got


def probe(family: int, flow: FlowSpec, dst: str | None = None, sport: int = 40001) -> bytes:
    template = ProbeTemplate(
        src=SRC[family], dst=dst or DST[family], protocol=flow.protocol, sport=sport,
        dport=flow.port or 0,
    )  # fmt: skip
    return bytes(template.build(9, 3))


def packets(family: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(answers a run must see, traffic it need not)."""
    te = 3 if family == 6 else 11
    unreach = (1, 4) if family == 6 else (3, 3)
    answers = {
        "echo reply": replies.echo_reply(probe(family, ICMP_FLOW)),
        "time-exceeded (tcp)": replies.icmp_error(
            probe(family, tcp(443)), responder=HOP[family], icmp_type=te
        ),
        "port unreachable (udp)": replies.icmp_error(
            probe(family, udp(53)), responder=DST[family], icmp_type=unreach[0],
            icmp_code=unreach[1],
        ),
        "syn-ack": replies.tcp_reply(probe(family, tcp(443)), syn_ack=True),
        "rst": replies.tcp_reply(probe(family, tcp(443)), syn_ack=False),
        "udp answer": replies.udp_reply(probe(family, udp(53)), b"\x12\x34answer"),
    }  # fmt: skip
    others = {
        "syn-ack from another port": replies.tcp_reply(probe(family, tcp(22)), syn_ack=True),
        "udp from another port": replies.udp_reply(probe(family, udp(5353)), b"mdns"),
        "syn-ack from another host": replies.tcp_reply(
            probe(family, tcp(443), dst=OTHER[family]), syn_ack=True
        ),
        "udp from another host": replies.udp_reply(probe(family, udp(53), dst=OTHER[family]), b"x"),
    }
    return answers, others


@pytest.mark.parametrize("family", [4, 6])
def test_answers_pass_and_other_traffic_is_dropped_by_the_kernel(family: int) -> None:
    program = compiled(expression([DST[4], DST[6]], FLOWS))
    answers, others = packets(family)
    assert passes(program, answers) == dict.fromkeys(answers, True)
    assert passes(program, others) == dict.fromkeys(others, False)


@pytest.mark.parametrize("family", [4, 6])
def test_with_many_targets_the_filter_names_ports_only(family: int) -> None:
    targets = [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(MAX_TARGETS + 1)]
    text = expression([*targets, DST[4], DST[6]], FLOWS)
    assert "host" not in text
    program = compiled(text)
    assert len(program) // 8 < 4096
    answers, others = packets(family)
    assert passes(program, answers) == dict.fromkeys(answers, True)
    port_only = {k: v for k, v in others.items() if "another port" in k}
    assert passes(program, port_only) == dict.fromkeys(port_only, False)


def test_icmp_alone_passes_icmp_only() -> None:
    program = compiled(expression([DST[4]], [ICMP_FLOW]))
    answers, others = packets(4)
    got = passes(program, {**answers, **others})
    assert {k for k, v in got.items() if v} == {
        "echo reply", "time-exceeded (tcp)", "port unreachable (udp)",
    }  # fmt: skip


@pytest.mark.parametrize("targets", [1, MAX_TARGETS + 1])
def test_libpcap_called_directly_compiles_what_scapy_compiles(targets: int) -> None:
    """The program from libpcap through ctypes is byte for byte scapy's compile_filter's
    (which wraps the same libpcap call, at 0.4 s of import)."""
    import ctypes

    from scapy.arch.common import compile_filter

    from reachtest.engine.bpf import LINKTYPE_RAW

    hosts = [f"198.18.{6 + i // 250}.{2 + i % 250}" for i in range(targets)]
    text = expression(hosts, FLOWS)
    theirs = compile_filter(text, linktype=LINKTYPE_RAW)
    oracle = ctypes.string_at(ctypes.addressof(theirs.bf_insns.contents), theirs.bf_len * 8)
    assert compiled(text) == oracle


def test_an_expression_libpcap_refuses_is_one_error_and_no_filter() -> None:
    from reachtest.engine import bpf

    with pytest.raises(ValueError, match=r"libpcap: .*syntax error"):
        compiled("tcp and ((")
    assert "scapy" not in bpf.__dict__  # the filter costs no scapy import
