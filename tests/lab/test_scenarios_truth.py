"""Every built-in scenario behaves as its ground truth says, checked with plain sockets.

For each flow of the truth, probes with TTL 1 .. the server's distance, over IPv4 and
IPv6, must get: time-exceeded from the hop's router up to the last answering hop
(nothing at silent hops), then the flow's final answer from the TTL the truth names, or
nothing at all for a silently dropped flow.
"""

from __future__ import annotations

import pytest

from reachtest.lab import netns
from reachtest.lab.scenarios import FlowTruth, GroundTruth
from reachtest.model import Protocol, Reason
from tests.lab import netprobe
from tests.lab.conftest import SINGLE_PATH_SCENARIOS, Lab, MakeLab

FINAL_KIND = {
    Reason.ECHO_REPLY: "echo-reply",
    Reason.SYN_ACK: "tcp-syn-ack",
    Reason.RESET: "tcp-rst",
    Reason.UDP_RESPONSE: "udp-reply",
    Reason.PORT_UNREACH: "port-unreachable",
    Reason.ADMIN_PROHIBITED: "admin-prohibited",
    Reason.NO_RESPONSE: "timeout",
}
#: Tries for an answer that may be lost on purpose (lossy link, policer) before the
#: verdict: 6 tries at 30 % loss failed a CI run (policer, IPv6, TTL 4); 12 leave about
#: one chance in two million per probe. Only a lost answer is tried again: it costs
#: nothing where the truth is an answer that comes, or a silence.
TRIES = 12


def probe(truth: FlowTruth, dst: str, ttl: int) -> netprobe.Answer:
    flow = truth.flow
    if flow.protocol is Protocol.ICMP:
        return netprobe.echo_probe(dst, ttl=ttl, timeout_s=0.3)
    assert flow.port is not None
    if flow.protocol is Protocol.TCP:
        return netprobe.tcp_probe(dst, flow.port, ttl=ttl, timeout_s=0.3)
    payload = {53: netprobe.dns_query("server.example."), 123: netprobe.ntp_request()}
    data = payload.get(flow.port, b"reachtest")
    return netprobe.udp_probe(dst, flow.port, data, ttl=ttl, timeout_s=0.3)


def expected(
    lab: Lab, truth: GroundTruth, flow: FlowTruth, ttl: int, v6: bool
) -> set[netprobe.Answer]:
    """The answers the truth allows for one probe."""
    dst = lab.server(v6)
    if flow.answer_ttl is not None and ttl >= flow.answer_ttl:
        kind = FINAL_KIND[flow.reason]
        if flow.reason in (Reason.ADMIN_PROHIBITED,) and flow.reason_hop != truth.server_hop:
            assert flow.reason_hop is not None
            return {netprobe.Answer(kind, a) for a in lab.hop(flow.reason_hop, v6)}
        return {netprobe.Answer(kind, dst)}
    if ttl <= flow.last_hop and ttl not in truth.silent_hops:
        answers = {netprobe.Answer("time-exceeded", a) for a in lab.hop(ttl, v6)}
        if ttl in truth.ratelimited_hops:
            answers.add(netprobe.TIMEOUT)  # a rate-limited router may not answer every probe
        return answers
    return {netprobe.TIMEOUT}


@pytest.mark.parametrize("name", SINGLE_PATH_SCENARIOS)
def test_scenario_behaves_as_its_ground_truth(make_lab: MakeLab, name: str) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    mismatches = []
    with netns.entered(lab.client):
        for v6 in (False, True):
            for flow in truth.flows:
                for ttl in range(1, truth.server_hop + 1):
                    allowed = expected(lab, truth, flow, ttl, v6)
                    for _ in range(TRIES):
                        got = probe(flow, lab.server(v6), ttl)
                        if got in allowed or got != netprobe.TIMEOUT:
                            break
                    if got not in allowed:
                        family = "IPv6" if v6 else "IPv4"
                        mismatches.append(
                            f"{family} {flow.flow} ttl {ttl}: got {got}, want {allowed}"
                        )
    assert not mismatches, "\n".join(mismatches)
