"""Engine + analysis, with real packets, conclude exactly each scenario's ground truth.

For every built-in scenario, IPv4 and IPv6 in one run: per flow the verdict (state,
reason, the hop that gave it, reached or not) and the last hop that answered equal the
truth; the findings are exactly the ones the truth implies, at the right hops: the
silent drop after its router, the rejecting router, the forging router, ping blocked
at the target, the silent hop, the rate-limited hops as rate limiting (one finding per
router), the lossy link as forwarding loss from its hop, the ECMP hop, the NAT that
leaves quotes translated (and none for the one that restores them). And no cell of a
flow that gets past a hop shows more than 20% non-answers that no finding explains.
"""

from __future__ import annotations

from collections import Counter

import pytest

from reachtest.analysis.analyse import TargetAnalysis, analyse
from reachtest.lab.scenarios import FlowTruth, GroundTruth
from reachtest.model import FindingKind, FlowSpec, Outcome, Protocol, Reason, TraceParams, tcp
from tests.lab.conftest import SINGLE_PATH_SCENARIOS, MakeLab, run_engine

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
    if truth.ack_rewritten:  # every open TCP service answers with an off ack
        for flow in truth.flows:
            if flow.flow.protocol is Protocol.TCP and flow.reason is Reason.SYN_ACK:
                want.add((FindingKind.SEQUENCE_REWRITTEN, flow.flow.label, None))
    if truth.nat_seen:  # between the NAT's hop (quotes as sent) and the next (translated)
        want.add((FindingKind.NAT, None, truth.nat_hop))
    for hop, field, _value in truth.rewrites:  # quotes change after the rewriting router
        for flow in truth.flows:
            if field != "mss" or flow.flow.protocol is Protocol.TCP:
                want.add((FindingKind.QUOTE_REWRITTEN, flow.flow.label, hop))
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


@pytest.mark.parametrize("name", SINGLE_PATH_SCENARIOS)
def test_analysis_concludes_the_ground_truth(make_lab: MakeLab, name: str) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    flows: list[FlowSpec] = [f.flow for f in truth.flows]
    if truth.ecmp_hop is not None:
        flows += [tcp(p) for p in range(1000, 1008)]  # enough flows to use both routers
    noisy = truth.noisy
    params = TraceParams(
        rounds=40 if noisy else 8,
        interval_s=0.05 if noisy else 0.1,
        timeout_s=0.5,
        max_ttl=truth.server_hop + 3,
    )
    result = run_engine(lab, [lab.server(False), lab.server(True)], flows, params)
    analysis = analyse(result.outcomes, result.params, result.budgets)
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
        problems += unexplained_cells(target, result.outcomes)
    assert not problems, "\n".join(problems)


def unexplained_cells(target: TargetAnalysis, outcomes: tuple[Outcome, ...]) -> list[str]:
    """Cells (flow, TTL) before the target where the flow gets past the hop (an answer
    there or beyond) yet more than 20% of its probes went unanswered, and no finding
    (rate limiting, forwarding loss, a silent hop) covers that hop."""
    sent: Counter[tuple[str, int]] = Counter()
    lost: Counter[tuple[str, int]] = Counter()
    reach: dict[str, int] = {}
    for o in outcomes:
        if o.target != target.target or o.extra is not None:
            continue
        sent[(o.flow.label, o.ttl)] += 1
        if o.responder is None:
            lost[(o.flow.label, o.ttl)] += 1
        else:
            reach[o.flow.label] = max(reach.get(o.flow.label, 0), o.ttl)
    covered: set[int] = set()
    for f in target.findings:
        if f.kind in (FindingKind.RATE_LIMITING, FindingKind.SILENT_HOP) and f.first_hop:
            covered.add(f.first_hop)
        if f.kind is FindingKind.FORWARDING_LOSS and f.last_hop:
            covered |= set(range(f.last_hop, 256))
    distance = target.host.distance or 0
    return [
        f"{target.target} {flow} at TTL {ttl}: {lost[flow, ttl]}/{n} unanswered, unexplained"
        for (flow, ttl), n in sorted(sent.items())
        if ttl < distance
        and ttl <= reach.get(flow, 0)
        and lost[flow, ttl] > 0.2 * n
        and ttl not in covered
    ]


def check_loss(target: TargetAnalysis, truth: GroundTruth) -> list[str]:
    rate = {
        (str(f.flow), f.first_hop) for f in target.findings if f.kind is FindingKind.RATE_LIMITING
    }
    forwarding = {
        (str(f.flow), f.last_hop) for f in target.findings if f.kind is FindingKind.FORWARDING_LOSS
    }
    problems = []
    if truth.ratelimited_hops:
        want_hops = set(truth.ratelimited_hops)
        if {h for _, h in rate} != want_hops or any(flow != "None" for flow, _ in rate):
            problems.append(
                f"{target.target}: rate limiting found at {rate}, want one finding per hop "
                f"(for every flow) at {sorted(want_hops)}"
            )
    elif rate:
        problems.append(f"{target.target}: rate limiting found where there is none: {rate}")
    if truth.lossy_from_hop is not None:
        # One finding for the lossy link, pooled over the flows that cross it.
        want = {("None", truth.lossy_from_hop)}
        if forwarding != want:
            problems.append(
                f"{target.target}: forwarding loss at {sorted(forwarding)}, want {sorted(want)}"
            )
        links = [f for f in target.findings if f.kind is FindingKind.FORWARDING_LOSS]
        listed = {str(e.flow) for f in links for e in f.evidence}
        if links and listed != {str(f.flow) for f in truth.flows}:
            problems.append(f"{target.target}: the lossy link lists {sorted(listed)}")
    elif truth.policed is not None:
        # The policed flow's own finding, not the link's: the other flows pass cleanly.
        want = {(str(truth.policed), truth.policed_from_hop)}
        notes = [f.note for f in target.findings if f.kind is FindingKind.FORWARDING_LOSS]
        if forwarding != want or not all("a policer or filter for" in n for n in notes):
            problems.append(
                f"{target.target}: forwarding loss at {sorted(forwarding)} ({notes}), "
                f"want {sorted(want)} as a policer"
            )
    elif truth.light_loss_from_hop is not None:
        early = {(flow, hop) for flow, hop in forwarding if hop < truth.light_loss_from_hop}
        if early:
            problems.append(f"{target.target}: forwarding loss before the lossy link: {early}")
    elif forwarding:
        problems.append(f"{target.target}: forwarding loss found where there is none: {forwarding}")
    return problems
