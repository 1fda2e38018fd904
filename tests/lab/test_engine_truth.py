"""The engine, with real packets, finds what every built-in scenario's ground truth says.

One run per scenario traces every flow of the truth to the server over IPv4 and IPv6 at
once. For each flow and TTL the responder and reply kind of every counted outcome must
be one the truth allows, every TTL up to where the flow ends must have been probed, a
TTL whose truth is an answer must have been answered at least once, and nothing
received may be left unmatched.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from reachtest.lab.scenarios import FlowTruth, GroundTruth
from reachtest.model import Extra, Outcome, Reason, ReplyKind, RunResult, TraceParams
from tests.lab.conftest import SINGLE_PATH_SCENARIOS, Lab, MakeLab, run_engine
from tests.lab.test_scenarios_truth import FINAL_KIND

TIMEOUT = ("timeout", None)


def allowed(
    lab: Lab, truth: GroundTruth, flow: FlowTruth, ttl: int, v6: bool
) -> set[tuple[str, str | None]]:
    """The (kind, responder) pairs the truth allows for one probe of ``flow`` at ``ttl``."""
    server = lab.server(v6)
    answers: set[tuple[str, str | None]]
    if flow.answer_ttl is not None and ttl >= flow.answer_ttl:
        kind = FINAL_KIND[flow.reason]
        if flow.reason is Reason.ADMIN_PROHIBITED and flow.reason_hop != truth.server_hop:
            assert flow.reason_hop is not None
            answers = {(kind, a) for a in lab.hop(flow.reason_hop, v6)}
        else:
            answers = {(kind, server)}
        if truth.ratelimited_server and kind == "port-unreachable":
            answers.add(TIMEOUT)  # the server rate-limits its ICMP errors too
    elif ttl <= flow.last_hop and ttl not in truth.silent_hops:
        answers = {("time-exceeded", a) for a in lab.hop(ttl, v6)}
        if ttl in truth.ratelimited_hops:
            answers.add(TIMEOUT)
    else:
        return {TIMEOUT}
    if truth.loses(flow.flow, ttl):
        answers.add(TIMEOUT)  # the probe or its answer crossed the lossy link or policer
    return answers


def last_ttl_to_probe(truth: GroundTruth, flow: FlowTruth) -> int:
    """Where a sweep of ``flow`` must have got to: its final answer, or one past the last
    hop that answers it (the first silent TTL), but not beyond the server."""
    if flow.answer_ttl is not None:
        return flow.answer_ttl
    return min(flow.last_hop + 1, truth.server_hop)


def trace(lab: Lab, rounds: int) -> RunResult:
    truth = lab.plan.scenario.truth
    params = TraceParams(
        rounds=rounds,
        interval_s=0.1,
        timeout_s=0.5,
        max_ttl=truth.server_hop + 3,
    )
    targets = [lab.server(False), lab.server(True)]
    return run_engine(lab, targets, [f.flow for f in truth.flows], params)


@pytest.mark.parametrize("name", SINGLE_PATH_SCENARIOS)
def test_engine_finds_the_ground_truth(make_lab: MakeLab, name: str) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    lossy = (
        truth.lossy_from_hop is not None
        or truth.light_loss_from_hop is not None
        or truth.policed is not None
    )
    rounds = 6 if lossy else 4
    result = trace(lab, rounds)
    assert result.stray_counts == (), f"unmatched replies: {result.strays[:5]}"
    extras = list(result.extras)
    if lossy:
        # The lossy link (or policer) also eats the client kernel's RST to a SYN-ACK, so the server
        # sends its SYN-ACK again a second later: a real duplicate, and recorded as one.
        extras = [
            o
            for o in extras
            if not (o.kind is ReplyKind.TCP_SYN_ACK and o.extra is Extra.DUPLICATE)
        ]
    assert not extras, f"duplicates or late replies in the lab: {extras[:5]}"
    seen: dict[tuple[bool, str, int], list[Outcome]] = defaultdict(list)
    for outcome in result.outcomes:
        seen[(":" in outcome.target, outcome.flow.label, outcome.ttl)].append(outcome)
    problems = []
    lossy_sent = lossy_answered = 0
    for v6 in (False, True):
        family = "IPv6" if v6 else "IPv4"
        for flow in truth.flows:
            for ttl in range(1, truth.server_hop + 4):
                want = allowed(lab, truth, flow, ttl, v6)
                got = seen.get((v6, flow.flow.label, ttl), [])
                # Probes to a rate-limited router are paced within its budget: some
                # rounds hold theirs back (at least one goes).
                least = 1 if ttl in truth.ratelimited_hops else rounds
                if ttl <= last_ttl_to_probe(truth, flow) and len(got) < least:
                    problems.append(
                        f"{family} {flow.flow} ttl {ttl}: {len(got)} probes, want {least}"
                    )
                wrong = {(str(o.kind), o.responder) for o in got} - want
                if wrong:
                    problems.append(f"{family} {flow.flow} ttl {ttl}: got {wrong}, want {want}")
                answered = [o for o in got if o.responder is not None]
                must_answer = (
                    ttl <= last_ttl_to_probe(truth, flow) and ttl not in truth.ratelimited_hops
                )
                if must_answer and truth.loses(flow.flow, ttl) and want - {TIMEOUT}:
                    # Loss on purpose: a cell may lose every round by chance (20% loss,
                    # 6 rounds: 1 in 15,000 per cell, ~0.5% per run); the lossy cells
                    # together must still answer a quarter of their probes (a policed
                    # flow loses both ways: CI saw 17 of 36 answered).
                    lossy_sent += len(got)
                    lossy_answered += len(answered)
                elif got and want - {TIMEOUT} and must_answer and not answered:
                    problems.append(
                        f"{family} {flow.flow} ttl {ttl}: no answer in {len(got)} rounds"
                    )
    if lossy_sent and lossy_answered < lossy_sent / 4:
        problems.append(f"past the loss: {lossy_answered} of {lossy_sent} probes answered")
    assert not problems, "\n".join(problems)


def test_rtts_come_from_kernel_timestamps_and_are_plausible(make_lab: MakeLab) -> None:
    lab = make_lab("clean", hops=2)
    result = trace(lab, rounds=2)
    # answers from kernels (not the user-space DNS/NTP responders, which take longer)
    rtts = sorted(
        o.rtt_ns for o in result.outcomes if o.rtt_ns is not None and str(o.kind) != "udp-reply"
    )
    assert rtts, "nothing answered"
    # veth round trips are tens of microseconds; a clock mix-up gives seconds or < 0
    assert rtts[0] > 0 and rtts[-1] < 1_000_000_000, (rtts[0], rtts[-1])
    assert rtts[len(rtts) // 2] < 2_000_000, f"median {rtts[len(rtts) // 2]} ns"
