"""Engine + analysis, with real packets, conclude exactly each scenario's ground truth.

For every built-in scenario, IPv4 and IPv6 in one run: per flow the verdict (state,
reason, the hop that gave it, reached or not) and the last hop that answered equal the
truth; the findings are exactly the ones the truth implies, at the right hops: the
silent drop after its router, the rejecting router, the forging router, ping blocked
at the target, the silent hop, the rate-limited hop as rate limiting, the lossy link as
forwarding loss from its hop, the ECMP hop.
"""

from __future__ import annotations

import pytest

from reachtest.analysis.analyse import TargetAnalysis, analyse
from reachtest.lab.scenarios import SCENARIOS, FlowTruth, GroundTruth
from reachtest.model import FindingKind, FlowSpec, Protocol, Reason, TraceParams, tcp
from tests.lab.conftest import MakeLab, run_engine

Expected = set[tuple[FindingKind, str | None, int | None]]


def expected_findings(truth: GroundTruth) -> Expected:
    """(kind, flow, hop) of every finding the truth implies."""
    want: Expected = set()
    for flow in truth.flows:
        label = flow.flow.label
        if flow.reason is Reason.NO_RESPONSE:
            if flow.flow.protocol is Protocol.ICMP:
                want.add((FindingKind.PING_BLOCKED, label, flow.last_hop))
            elif flow.last_hop == truth.hops:
                want.add((FindingKind.NO_ANSWER_AT_TARGET, label, flow.last_hop))
            else:
                want.add((FindingKind.BLOCKED_SILENTLY, label, flow.last_hop))
        elif flow.reason is Reason.ADMIN_PROHIBITED and not flow.reached:
            want.add((FindingKind.BLOCKED_PROHIBITED, label, flow.reason_hop))
        elif flow.reason is Reason.RESET and not flow.reached:
            want.add((FindingKind.FORGED_RESET, label, flow.reason_hop))
    for hop in truth.silent_hops:
        want.add((FindingKind.SILENT_HOP, None, hop))
    if truth.ecmp_hop is not None:
        want.add((FindingKind.ECMP, None, truth.ecmp_hop))
    return want


def found_findings(target: TargetAnalysis, truth: GroundTruth) -> Expected:
    """The findings about the truth's flows (per-flow loss findings are checked apart)."""
    labels = {f.flow.label for f in truth.flows}
    loss = {FindingKind.RATE_LIMITING, FindingKind.FORWARDING_LOSS}
    return {
        (f.kind, f.flow.label if f.flow else None, f.first_hop)
        for f in target.findings
        if f.kind not in loss and (f.flow is None or f.flow.label in labels)
    }


def check_flow(target: TargetAnalysis, truth: FlowTruth) -> list[str]:
    verdict = next(v for v in target.services if v.flow == truth.flow)
    path = next(p for p in target.paths if p.flow == truth.flow)
    got = (verdict.state, verdict.reason, verdict.reason_hop, verdict.reached, path.last_hop)
    want = (truth.state, truth.reason, truth.reason_hop, truth.reached, truth.last_hop)
    return [] if got == want else [f"{target.target} {truth.flow}: got {got}, want {want}"]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_analysis_concludes_the_ground_truth(make_lab: MakeLab, name: str) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    flows: list[FlowSpec] = [f.flow for f in truth.flows]
    if truth.ecmp_hop is not None:
        flows += [tcp(p) for p in range(1000, 1008)]  # enough flows to use both routers
    noisy = truth.lossy_from_hop is not None or bool(truth.ratelimited_hops)
    params = TraceParams(
        rounds=40 if noisy else 8,
        interval_s=0.05 if noisy else 0.1,
        timeout_s=0.5,
        max_ttl=truth.server_hop + 3,
    )
    result = run_engine(lab, [lab.server(False), lab.server(True)], flows, params)
    analysis = analyse(result.outcomes, result.params)
    problems: list[str] = []
    for target in analysis.targets:
        assert target.host.reachable and target.host.distance == truth.server_hop
        for flow in truth.flows:
            problems += check_flow(target, flow)
        got, want = found_findings(target, truth), expected_findings(truth)
        if got != want:
            problems.append(
                f"{target.target} findings: got {sorted(map(str, got))}, "
                f"want {sorted(map(str, want))}"
            )
        problems += check_loss(target, truth)
    assert not problems, "\n".join(problems)


def check_loss(target: TargetAnalysis, truth: GroundTruth) -> list[str]:
    rate = {
        (str(f.flow), f.first_hop) for f in target.findings if f.kind is FindingKind.RATE_LIMITING
    }
    forwarding = {
        (str(f.flow), f.last_hop) for f in target.findings if f.kind is FindingKind.FORWARDING_LOSS
    }
    problems = []
    if truth.ratelimited_hops:
        hop = truth.ratelimited_hops[0]
        if not rate or {h for _, h in rate} != {hop}:
            problems.append(f"{target.target}: rate limiting found at {rate}, want hop {hop}")
    elif rate:
        problems.append(f"{target.target}: rate limiting found where there is none: {rate}")
    if truth.lossy_from_hop is not None:
        want = {(str(f.flow), truth.lossy_from_hop) for f in truth.flows}
        if forwarding != want:
            problems.append(
                f"{target.target}: forwarding loss at {sorted(forwarding)}, want {sorted(want)}"
            )
    elif forwarding:
        problems.append(f"{target.target}: forwarding loss found where there is none: {forwarding}")
    return problems
