"""A stateless source NAT that leaves the quotes of ICMP errors translated, on the
simulated network: the engine still attributes every time-exceeded (by the identity
fields, no unknown-flow stray), the analysis says where the NAT is, and the run record
(valid against the schema) and the reports show it. (Matching itself, with scapy as
the oracle for the translated checksums, is in tests/unit/engine/test_matcher.py; real
NATs, masquerading and stateless, v4 and v6, in the lab tests.)"""

from __future__ import annotations

import pytest

from reachtest.analysis.analyse import analyse
from reachtest.engine.simulated import NAT_PORT_XOR, SimHop, SimPath, SimulatedNetwork
from reachtest.engine.tracer import Tracer
from reachtest.model import FindingKind, Protocol, TraceParams
from reachtest.packet import replies
from reachtest.packet.build import ProbeTemplate
from reachtest.report.markdown import render_markdown
from reachtest.report.record import validate_record
from reachtest.report.terminal import render_text
from reachtest.report.view import build_view
from tests.unit.report.conftest import FLOWS, OPEN, TARGET, router, sim_record

OUTSIDE = "198.18.3.1"


def test_a_nat_that_leaves_quotes_translated_is_traced_through_and_reported() -> None:
    record = sim_record(
        {2: router(2, nat_to=OUTSIDE)}, open_=OPEN - {"udp/53"}, closed=frozenset({"udp/53"})
    )
    validate_record(record)
    flows = {f["flow"]: f for f in record["targets"][0]["flows"]}
    for label, flow in flows.items():
        hops = {h["ttl"]: h for h in flow["hops"]}
        assert all(hops[t]["rcv"] == hops[t]["snt"] for t in range(1, 6)), label
        for ttl in range(1, 6):
            shown = [s.get("translated") for s in hops[ttl]["samples"] if s["responder"]]
            if ttl <= 2:  # before the NAT, and its own time-exceeded: quotes as sent
                assert shown and not any(shown), (label, ttl)
            else:
                assert shown and all(t["address"] == OUTSIDE for t in shown), (label, ttl)
                assert all(t["port"] > 0 for t in shown)
    [nat] = [f for f in record["targets"][0]["findings"] if f["kind"] == "nat"]
    assert (nat["flow"], nat["first_hop"], nat["last_hop"]) == (None, 2, 3)
    assert OUTSIDE in nat["note"]
    view = build_view(record)
    for text in (render_text(view, width=200), render_markdown(view)):
        assert "a NAT between hop 2 and hop 3 rewrites our source" in text
    assert "udp/53" in flows and flows["udp/53"]["verdict"]["state"] == "closed"


def _hops(v6: bool, nat_to: str | None) -> tuple[SimHop, ...]:
    return tuple(
        SimHop(
            address=f"2001:db8:0:{i}::2" if v6 else f"198.18.{i}.2",
            nat_to=nat_to if i == 2 else None,
        )
        for i in range(1, 6)
    )


@pytest.mark.parametrize("v6", [False, True])
def test_every_error_through_the_nat_is_attributed_and_no_nat_is_found_without_one(
    v6: bool,
) -> None:
    target = "2001:db8:0:6::2" if v6 else TARGET
    params = TraceParams(rounds=4, interval_s=0.1, timeout_s=0.5, max_ttl=8)
    found = {}
    for nat_to in (None, "2001:db8:0:3::1" if v6 else OUTSIDE):
        path = SimPath(target=target, hops=_hops(v6, nat_to), open=OPEN)
        result = Tracer(SimulatedNetwork(paths=(path,)), [target], FLOWS, params).run()
        assert result.stray_counts == ()
        assert all(o.responder for o in result.outcomes if o.ttl <= 6)
        found[nat_to] = [f for f in analyse(result.outcomes, params).findings]
    assert not [f for f in found[None] if f.kind is FindingKind.NAT]
    assert [f.kind for f in found[nat_to]].count(FindingKind.NAT) == 1


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("protocol", [Protocol.TCP, Protocol.UDP, Protocol.ICMP], ids=str)
def test_the_simulated_nat_makes_packets_scapy_finds_correct(
    family: int, protocol: Protocol
) -> None:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    src, dst, out = (
        ("198.18.1.1", TARGET, OUTSIDE) if family == 4
        else ("2001:db8:0:1::1", "2001:db8:0:6::2", "2001:db8:0:3::1")
    )  # fmt: skip
    port = 0 if protocol is Protocol.ICMP else 443
    template = ProbeTemplate(src=src, dst=dst, protocol=protocol, sport=40001, dport=port)
    sent = template.build(3, 7)
    moved = replies.translated(sent, src=out, port_xor=NAT_PORT_XOR)
    pkt = IP(moved) if family == 4 else IPv6(moved)
    layer = next(pkt[t] for t in (TCP, UDP, ICMP, ICMPv6EchoRequest) if pkt.haslayer(t))
    assert pkt.src == out
    was = IP(bytes(sent)) if family == 4 else IPv6(bytes(sent))
    moved_port = layer.id if protocol is Protocol.ICMP else layer.sport
    was_layer = next(was[t] for t in (TCP, UDP, ICMP, ICMPv6EchoRequest) if was.haslayer(t))
    was_port = was_layer.id if protocol is Protocol.ICMP else was_layer.sport
    assert moved_port == was_port ^ NAT_PORT_XOR
    again = IP(moved) if family == 4 else IPv6(moved)
    if family == 4:
        del again.chksum
    checked = next(again[t] for t in (TCP, UDP, ICMP, ICMPv6EchoRequest) if again.haslayer(t))
    delattr(checked, "cksum" if isinstance(checked, ICMPv6EchoRequest) else "chksum")
    assert bytes(again) == moved  # scapy computes the same checksums
