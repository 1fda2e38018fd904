"""A box that rewrites TCP sequence numbers and does not translate the SYN-ACK's ack
back, on the simulated network: the service still answered, so the port is open (each
answer inexact, to the oldest round's highest outstanding TTL), the analysis says what
happened, and the reports show it. (The lab scenario tcp-seq-rewrite does it with real
packets.)"""

from __future__ import annotations

import pytest

from reachtest.analysis.analyse import analyse
from reachtest.engine.simulated import SimHop, SimPath, SimulatedNetwork
from reachtest.engine.tracer import Tracer
from reachtest.model import FindingKind, ReplyKind, ServiceState, TraceParams, tcp
from reachtest.report.record import validate_record
from tests.unit.report.conftest import FLOWS, OPEN, TARGET


@pytest.mark.parametrize("alone", [False, True], ids=["with-icmp", "tcp-alone"])
@pytest.mark.parametrize("ack_xor", [0, 0x10000, 1])
@pytest.mark.parametrize("fast", [False, True])
def test_syn_acks_with_an_off_ack_are_open_at_the_right_ttl(
    ack_xor: int, alone: bool, fast: bool
) -> None:
    """Also alone (no other flow tells the target's distance) and with --fast (every TTL
    up to 9 at once): no answer goes to a probe below the target, none is a stray."""
    hops = tuple(SimHop(address=f"198.18.{i}.2") for i in range(1, 6))
    path = SimPath(target=TARGET, hops=hops, open=OPEN, ack_xor=ack_xor)
    params = TraceParams(rounds=5, interval_s=0.1, timeout_s=0.5, max_ttl=9, fast=fast)
    flows = (tcp(443), tcp(80)) if alone else FLOWS
    result = Tracer(SimulatedNetwork(paths=(path,)), [TARGET], flows, params).run()
    assert result.stray_counts == () and result.extras == ()
    answers = [o for o in result.outcomes if o.kind is ReplyKind.TCP_SYN_ACK]
    assert answers and min(o.ttl for o in answers) == 6  # the target's distance
    beyond = [o for o in result.outcomes if o.flow.protocol.value == "tcp" and o.ttl >= 6]
    assert all(o.kind is ReplyKind.TCP_SYN_ACK for o in beyond)  # each probe there: one
    assert all(o.exact is (ack_xor == 0) for o in answers)
    analysis = analyse(result.outcomes, params)
    (target,) = analysis.targets
    states = {v.flow: v.state for v in target.services}
    assert states[tcp(443)] is states[tcp(80)] is ServiceState.OPEN
    flagged = {f.flow for f in target.findings if f.kind is FindingKind.SEQUENCE_REWRITTEN}
    assert flagged == ({tcp(443), tcp(80)} if ack_xor else set())
    assert {f.kind for f in target.findings} <= {FindingKind.SEQUENCE_REWRITTEN}


def test_the_finding_reaches_the_record_and_reports() -> None:
    from reachtest.report.markdown import render_markdown
    from reachtest.report.record import RunMeta, build_record
    from reachtest.report.terminal import render_text
    from reachtest.report.view import build_view
    from tests.unit.report.conftest import FINISHED, STARTED

    hops = tuple(SimHop(address=f"198.18.{i}.2") for i in range(1, 6))
    path = SimPath(target=TARGET, hops=hops, open=OPEN, ack_xor=0x10000)
    params = TraceParams(rounds=3, interval_s=0.1, timeout_s=0.5, max_ttl=9)
    result = Tracer(SimulatedNetwork(paths=(path,)), [TARGET], FLOWS, params).run()
    meta = RunMeta(command=("reachtest",), started=STARTED, finished=FINISHED, hosts={}, names={})
    record = build_record(result, analyse(result.outcomes, params), meta)
    validate_record(record)
    kinds = [f["kind"] for f in record["targets"][0]["findings"]]
    assert kinds.count("sequence-rewritten") == 2
    view = build_view(record)
    for text in (render_text(view, width=200), render_markdown(view)):
        assert "tcp/443: a box on the path rewrites TCP sequence numbers" in text
