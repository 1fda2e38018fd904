"""The analysis on hand-built outcomes: every rule, the edge cases, and invariants."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

from reachtest.analysis.accumulate import accumulate
from reachtest.analysis.analyse import TargetAnalysis, analyse
from reachtest.analysis.stats import MS_COLUMNS
from reachtest.analysis.summary import render_text, sentence
from reachtest.model import (
    ICMP_FLOW,
    Extra,
    FindingKind,
    FlowSpec,
    HopBudget,
    Outcome,
    Reason,
    ReplyKind,
    ServiceState,
    Severity,
    StopReason,
    TraceParams,
    tcp,
    udp,
)

if TYPE_CHECKING:
    import pandas as pd

TARGET = "198.18.6.2"
HOPS = 5  # routers 198.18.1.2 .. 198.18.5.2, the target at TTL 6


def router(ttl: int) -> str:
    return f"198.18.{ttl}.2"


FINAL = {
    "icmp": ReplyKind.ECHO_REPLY,
    "tcp": ReplyKind.TCP_SYN_ACK,
    "udp": ReplyKind.UDP_REPLY,
}
Answer = tuple[ReplyKind, str | None] | None
Rule = Callable[[FlowSpec, int, int], Answer | str]


def clean(flow: FlowSpec, ttl: int, rnd: int) -> Answer:
    """A clean path: time-exceeded from each router, the open service at the target."""
    if ttl <= HOPS:
        return (ReplyKind.TIME_EXCEEDED, router(ttl))
    return (FINAL[str(flow.protocol)], TARGET)


NAT_OUTSIDE = "198.18.9.9"


def run(
    rule: Rule | None = None,
    flows: tuple[FlowSpec, ...] = (ICMP_FLOW, tcp(443), tcp(80)),
    rounds: int = 10,
    max_ttl: int = HOPS + 1,
    changed: tuple[str, ...] = (),
    proofs: bool = True,
) -> list[Outcome]:
    """Outcomes of every flow x TTL x round; ``rule`` returns an answer, None (timeout),
    or "clean" to fall back to the clean path. With ``proofs``, as the engine does: a flow
    silent at the TTL after its last answer, where another flow met a router, is probed
    there once more (a proof probe, after the last round)."""

    def outcome(flow: FlowSpec, ttl: int, rnd: int, proof: bool = False) -> Outcome:
        answer = rule(flow, ttl, rnd) if rule else "clean"
        if answer == "clean":
            answer = clean(flow, ttl, rnd)
        sent = 1_000_000_000 * rnd + 1000 * ttl
        if answer is None:
            return Outcome(target=TARGET, flow=flow, ttl=ttl, round=rnd, probe_id=ttl,
                           sent_ns=sent, kind=ReplyKind.TIMEOUT, proof=proof)  # fmt: skip
        assert not isinstance(answer, str)
        kind, responder = answer
        quoted = changed if kind is ReplyKind.TIME_EXCEEDED and ttl > 2 else ()
        return Outcome(
            target=TARGET, flow=flow, ttl=ttl, round=rnd, probe_id=ttl, sent_ns=sent,
            kind=kind, responder=responder, recv_ns=sent + 100_000 * ttl + rnd,
            quote_changed=quoted, proof=proof,
            quote_src=NAT_OUTSIDE if "src" in quoted else None,
            quote_port=40000 if "port" in quoted else None,
        )  # fmt: skip

    out = [
        outcome(flow, ttl, rnd)
        for rnd in range(rounds)
        for flow in flows
        for ttl in range(1, max_ttl + 1)
    ]
    if proofs:
        routers = {o.ttl for o in out if o.kind is ReplyKind.TIME_EXCEEDED and o.responder}
        for flow in flows:
            proved: set[int] = set()
            while True:  # an answered proof moves the flow's last answer: maybe another
                last = max((o.ttl for o in out if o.flow == flow and o.responder), default=0)
                ttl = last + 1
                if ttl > max_ttl or ttl not in routers or ttl in proved:
                    break
                proved.add(ttl)
                out.append(outcome(flow, ttl, rounds, proof=True))
    return out


def only(outcomes: list[Outcome]) -> TargetAnalysis:
    analysis = analyse(outcomes, TraceParams(max_ttl=HOPS + 1))
    assert len(analysis.targets) == 1
    return analysis.targets[0]


def verdict(t: TargetAnalysis, flow: FlowSpec) -> tuple[object, ...]:
    v = next(v for v in t.services if v.flow == flow)
    return (v.state, v.reason, v.reason_address, v.reason_hop, v.reached)


def kinds(t: TargetAnalysis) -> set[tuple[FindingKind, str | None, int | None, int | None]]:
    return {(f.kind, str(f.flow) if f.flow else None, f.first_hop, f.last_hop) for f in t.findings}


# -- verdicts and paths ------------------------------------------------------------------------


def test_a_clean_path_has_open_services_and_no_findings() -> None:
    t = only(run())
    assert t.host.reachable and t.host.distance == 6
    assert verdict(t, tcp(443)) == (ServiceState.OPEN, Reason.SYN_ACK, TARGET, 6, True)
    assert verdict(t, ICMP_FLOW) == (None, Reason.ECHO_REPLY, TARGET, 6, True)
    assert t.findings == ()
    assert {p.stop for p in t.paths} == {StopReason.REACHED_OPEN, StopReason.REACHED_ANSWERED}


WEB = tcp(443)


def dropped_after(hop: int, flow: FlowSpec = WEB) -> Rule:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return None if f == flow and ttl > hop else "clean"

    return rule


def test_silent_drop_is_placed_between_the_filter_and_the_next_hop() -> None:
    t = only(run(dropped_after(3)))
    assert verdict(t, tcp(443)) == (ServiceState.FILTERED, Reason.NO_RESPONSE, None, None, False)
    [block] = [f for f in t.findings if f.flow == tcp(443)]
    assert (block.kind, block.first_hop, block.last_hop, block.responder) == (
        FindingKind.BLOCKED_SILENTLY,
        3,
        4,
        router(3),
    )
    assert block.severity is Severity.CRITICAL and block.confidence == 1.0
    refs = {(e.flow, e.ttl, e.kind, e.responder) for e in block.evidence}
    assert (ICMP_FLOW, 4, ReplyKind.TIME_EXCEEDED, router(4)) in refs
    assert (tcp(443), 4, ReplyKind.TIMEOUT, None) in refs


def test_a_silent_hop_right_after_the_filter_widens_the_range() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if ttl == 4:
            return None  # hop 4 answers nobody
        return None if f == tcp(443) and ttl > 3 else "clean"

    t = only(run(rule))
    block = next(f for f in t.findings if f.flow == tcp(443))
    assert (block.kind, block.first_hop, block.last_hop) == (FindingKind.BLOCKED_SILENTLY, 3, 5)
    assert "cannot be placed closer" in block.note
    assert (FindingKind.SILENT_HOP, None, 4, 4) in kinds(t)


def test_a_filter_on_the_last_hop_means_no_answer_at_the_target() -> None:
    t = only(run(dropped_after(HOPS)))
    assert (FindingKind.NO_ANSWER_AT_TARGET, "tcp/443", HOPS, 6) in kinds(t)


def test_a_target_that_answers_icmp_only() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return None if f != ICMP_FLOW and ttl > HOPS else "clean"

    t = only(run(rule, flows=(ICMP_FLOW, tcp(443), udp(53))))
    assert t.host.reachable and t.host.ping_answers_services_blocked
    assert verdict(t, tcp(443))[0] is ServiceState.FILTERED
    assert verdict(t, udp(53))[0] is ServiceState.OPEN_FILTERED
    found = {f.flow.label: f for f in t.findings if f.flow}
    assert found["tcp/443"].kind is FindingKind.NO_ANSWER_AT_TARGET
    assert found["tcp/443"].severity is Severity.CRITICAL
    assert found["udp/53"].severity is Severity.WARNING and "open|filtered" in found["udp/53"].note


def test_udp_silence_is_open_filtered_not_filtered() -> None:
    t = only(run(dropped_after(2, udp(53)), flows=(ICMP_FLOW, udp(53))))
    assert verdict(t, udp(53))[:2] == (ServiceState.OPEN_FILTERED, Reason.NO_RESPONSE)
    assert (FindingKind.BLOCKED_SILENTLY, "udp/53", 2, 3) in kinds(t)


def test_ping_blocked_while_services_answer() -> None:
    t = only(run(dropped_after(HOPS, ICMP_FLOW)))
    assert t.host.reachable and t.host.ping_blocked_services_answer
    assert verdict(t, ICMP_FLOW) == (None, Reason.NO_RESPONSE, None, None, False)
    assert (FindingKind.PING_BLOCKED, "icmp", HOPS, 6) in kinds(t)


def test_admin_prohibited_names_the_filtering_router() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if f == tcp(443) and ttl > 2:
            return (ReplyKind.ADMIN_PROHIBITED, router(2))
        return "clean"

    t = only(run(rule))
    assert verdict(t, tcp(443)) == (
        ServiceState.FILTERED, Reason.ADMIN_PROHIBITED, router(2), 2, False
    )  # fmt: skip
    assert (FindingKind.BLOCKED_PROHIBITED, "tcp/443", 2, 2) in kinds(t)
    path = next(p for p in t.paths if p.flow == tcp(443))
    assert (path.stop, path.stop_hop, path.stop_address) == (
        StopReason.ADMIN_PROHIBITED,
        2,
        router(2),
    )


def test_a_target_that_rejects_everything_itself_is_the_rejecting_hop() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return (ReplyKind.ADMIN_PROHIBITED, TARGET) if ttl > HOPS else "clean"

    t = only(run(rule, flows=(tcp(443),)))
    assert verdict(t, tcp(443)) == (
        ServiceState.FILTERED, Reason.ADMIN_PROHIBITED, TARGET, HOPS + 1, False
    )  # fmt: skip


def test_rst_from_the_target_is_closed_rst_on_the_way_is_a_middlebox() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if f == tcp(9) and ttl > HOPS:
            return (ReplyKind.TCP_RST, TARGET)  # the target: port closed
        if f == tcp(8080) and ttl > 3:
            return (ReplyKind.TCP_RST, TARGET)  # forged by router 3
        return "clean"

    t = only(run(rule, flows=(ICMP_FLOW, tcp(9), tcp(8080))))
    assert verdict(t, tcp(9)) == (ServiceState.CLOSED, Reason.RESET, TARGET, 6, True)
    assert verdict(t, tcp(8080)) == (ServiceState.CLOSED, Reason.RESET, TARGET, 3, False)
    forged = next(f for f in t.findings if f.flow == tcp(8080))
    assert (forged.kind, forged.first_hop, forged.last_hop, forged.responder) == (
        FindingKind.FORGED_RESET,
        3,
        4,
        router(3),
    )
    assert not any(f.flow == tcp(9) for f in t.findings)


def test_a_flow_over_a_longer_branch_moves_no_other_flows_answer_to_a_middlebox() -> None:
    # tcp/80 is hashed onto a branch one router longer (198.18.33.2 at hop 4): it meets
    # routers 4 and 5 one TTL later and the target at TTL 7. The others' answers at TTL 6
    # are the target's own, not forged by a box before router 6.
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if f != tcp(80) or ttl <= 3:
            return "clean"
        if ttl == 4:
            return (ReplyKind.TIME_EXCEEDED, "198.18.33.2")
        if ttl <= HOPS + 1:
            return (ReplyKind.TIME_EXCEEDED, router(ttl - 1))
        return (ReplyKind.TCP_SYN_ACK, TARGET)

    t = only(run(rule, max_ttl=HOPS + 2))
    assert verdict(t, tcp(443)) == (ServiceState.OPEN, Reason.SYN_ACK, TARGET, 6, True)
    assert verdict(t, tcp(80)) == (ServiceState.OPEN, Reason.SYN_ACK, TARGET, 7, True)
    assert t.host.reachable and t.host.distance == 6
    assert not [f for f in t.findings if f.kind is FindingKind.FORGED_RESET or f.responder]

    # A router at TTL 6 that no flow met before is beyond where tcp/443 was answered:
    # that answer came from a box on the way (the rule this must not weaken).
    def injected(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if f == tcp(443) and ttl > 3:
            return (ReplyKind.TCP_RST, TARGET)
        return "clean"

    t = only(run(injected))
    assert verdict(t, tcp(443)) == (ServiceState.CLOSED, Reason.RESET, TARGET, 3, False)


def test_a_syn_ack_on_the_way_is_a_syn_proxy() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return (ReplyKind.TCP_SYN_ACK, TARGET) if f == tcp(443) and ttl > 2 else "clean"

    t = only(run(rule))
    assert (FindingKind.SYN_PROXY, "tcp/443", 2, 3) in kinds(t)
    assert verdict(t, tcp(443))[0] is ServiceState.OPEN and not verdict(t, tcp(443))[4]


def test_a_host_nothing_reaches() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return None if ttl > 3 else "clean"

    t = only(run(rule))
    assert not t.host.reachable and t.host.distance is None
    [dark] = [f for f in t.findings if f.kind is FindingKind.HOST_NOT_REACHED]
    assert (dark.first_hop, dark.responder) == (3, router(3))


def test_unreachable_keeps_its_icmp_code() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return (ReplyKind.HOST_UNREACHABLE, router(4)) if f == tcp(443) and ttl > 4 else "clean"

    outcomes = [
        o
        if o.kind is not ReplyKind.HOST_UNREACHABLE
        else Outcome(**{**_fields(o), "icmp_type": 3, "icmp_code": 1})
        for o in run(rule)
    ]
    t = only(outcomes)
    assert verdict(t, tcp(443))[:2] == (ServiceState.FILTERED, Reason.HOST_UNREACH)
    finding = next(f for f in t.findings if f.flow == tcp(443))
    assert finding.kind is FindingKind.UNREACHABLE and finding.note == "ICMP code 1"


def _fields(o: Outcome) -> dict[str, object]:
    return {name: getattr(o, name) for name in o.__slots__}  # type: ignore[attr-defined]


def test_gap_limit_and_max_ttl_stop_reasons() -> None:
    def dark(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return None if ttl > 2 else "clean"

    t = analyse(
        run(dark, flows=(ICMP_FLOW,), max_ttl=9), TraceParams(max_ttl=30, gap_limit=5)
    ).targets[0]
    assert t.paths[0].stop is StopReason.GAP_LIMIT
    t = analyse(
        run(
            lambda f, ttl, r: (ReplyKind.TIME_EXCEEDED, f"198.18.{ttl}.2"),
            flows=(ICMP_FLOW,),
            max_ttl=8,
        ),
        TraceParams(max_ttl=8),
    ).targets[0]
    assert t.paths[0].stop is StopReason.MAX_TTL


# -- loss that is and is not loss -------------------------------------------------------------


def lossy(at: Callable[[int], bool], pct: float, seed: int = 1) -> Rule:
    rng = random.Random(seed)

    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return None if at(ttl) and rng.random() < pct else "clean"

    return rule


def test_loss_only_at_hop_3_is_rate_limiting() -> None:
    t = only(run(lossy(lambda ttl: ttl == 3, 0.7), rounds=30))
    assert {(f.kind, f.first_hop) for f in t.findings} == {(FindingKind.RATE_LIMITING, 3)}
    assert all("not forwarding loss" in f.note for f in t.findings)


def test_one_flow_of_three_losing_at_a_hop_is_no_rate_limiting() -> None:
    """A router limits all its ICMP errors, so loss on one flow alone is chance, not a limit."""
    one = lossy(lambda ttl: ttl == 3, 0.7)

    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return one(f, ttl, rnd) if f == tcp(443) else "clean"

    assert not [f for f in only(run(rule, rounds=30)).findings]
    two = only(run(lambda f, ttl, rnd: rule(f, ttl, rnd) if f != ICMP_FLOW else one(f, ttl, rnd),
                   rounds=30))  # fmt: skip
    assert {(f.kind, f.first_hop) for f in two.findings} == {(FindingKind.RATE_LIMITING, 3)}


def test_loss_from_hop_3_onwards_is_one_finding_for_the_link_listing_its_flows() -> None:
    t = only(run(lossy(lambda ttl: ttl >= 3, 0.3), rounds=30))
    assert [(f.kind, f.flow, f.last_hop) for f in t.findings] == [
        (FindingKind.FORWARDING_LOSS, None, 3)
    ]
    (link,) = t.findings
    assert "icmp, tcp/80, tcp/443 lost from TTL 3 on" in link.note
    assert {e.flow for e in link.evidence} == {ICMP_FLOW, tcp(443), tcp(80)}
    assert "the path loses packets from hop 3 on, for every flow" in render_text(
        analyse(run(lossy(lambda ttl: ttl >= 3, 0.3), rounds=30), TraceParams(max_ttl=HOPS + 1))
    )


def test_pooled_flows_find_link_loss_that_no_flow_shows_alone() -> None:
    """10% loss from hop 4, 10 rounds of four flows: each flow alone has too few losses
    for a finding; the four together show the link (seeds where no flow alone finds it)."""
    flows = (ICMP_FLOW, tcp(443), tcp(80), udp(53))
    pooled_only = 0
    for seed in range(40):
        outcomes = run(lossy(lambda ttl: ttl >= 4, 0.10, seed), flows=flows, rounds=10)
        t = only(outcomes)
        loss = [f for f in t.findings if f.kind is FindingKind.FORWARDING_LOSS]
        assert all(f.flow is None and f.last_hop >= 4 for f in loss), loss  # never early
        single = [
            only([o for o in outcomes if o.flow == flow]).findings for flow in flows
        ]  # fmt: skip
        if loss and not any(f.kind is FindingKind.FORWARDING_LOSS for fs in single for f in fs):
            pooled_only += 1
    assert pooled_only >= 10, pooled_only


def test_loss_on_one_port_only_is_its_own_finding_not_the_links() -> None:
    rng = random.Random(3)

    def policer(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return None if f == tcp(443) and ttl >= 3 and rng.random() < 0.3 else "clean"

    flows = (ICMP_FLOW, tcp(443), tcp(80), udp(53))
    t = only(run(policer, flows=flows, rounds=20))
    loss = [f for f in t.findings if f.kind is FindingKind.FORWARDING_LOSS]
    assert [(f.flow, f.last_hop) for f in loss] == [(tcp(443), 3)]
    assert "a policer or filter for tcp/443, not the link" in loss[0].note


def test_no_loss_no_loss_findings() -> None:
    assert not [
        f for f in only(run(rounds=30)).findings if "loss" in str(f.kind) or "rate" in str(f.kind)
    ]


# -- ECMP, rewriting, silent hops ---------------------------------------------------------------


def test_ecmp_across_flows_is_one_finding_over_the_branch() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if ttl in (3, 4) and f == tcp(443):
            return (ReplyKind.TIME_EXCEEDED, f"198.18.{100 + ttl}.2")  # the other branch
        return "clean"

    t = only(run(rule))
    [split] = [f for f in t.findings if f.kind is FindingKind.ECMP]
    assert (split.first_hop, split.last_hop) == (3, 4)
    assert "198.18.103.2: tcp/443" in split.note
    # Each verdict holds for its own flow's branch: the finding says what judges them all.
    assert "(ECMP): each verdict holds for the branch its flow's hash takes; --mda judges" in (
        sentence(split)
    )


def test_a_branch_that_answers_one_flow_less_at_the_next_hop_is_still_one_divergence() -> None:
    # The lab's ECMP: hop 3 is two routers, hop 4 one router answering from the branch a
    # probe came in on. One flow's answers lost at hop 4 change how the flows group there;
    # it is the same divergence, not a second one.
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if ttl == 4 and f == tcp(80):
            return None
        if ttl in (3, 4) and f == tcp(443):
            return (ReplyKind.TIME_EXCEEDED, f"198.18.{100 + ttl}.2")
        return "clean"

    [split] = [f for f in only(run(rule)).findings if f.kind is FindingKind.ECMP]
    assert (split.first_hop, split.last_hop) == (3, 4)


def test_several_routers_within_one_flow_are_named() -> None:
    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if ttl == 2 and f == ICMP_FLOW and rnd % 2:
            return (ReplyKind.TIME_EXCEEDED, "198.18.102.2")
        return "clean"

    [split] = [f for f in only(run(rule)).findings if f.kind is FindingKind.ECMP]
    assert "within one flow: icmp" in split.note


def test_rewritten_quotes_are_reported_before_the_hop() -> None:
    t = only(run(changed=("tos",)))
    assert {(f.kind, f.last_hop) for f in t.findings} == {(FindingKind.QUOTE_REWRITTEN, 3)}
    assert len(t.findings) == 3  # one per flow: DSCP may be rewritten for some flows only


def test_a_nat_that_leaves_quotes_translated_is_one_finding_between_two_hops() -> None:
    t = only(run(changed=("src", "port")))
    [nat] = t.findings
    assert (nat.kind, nat.flow, nat.first_hop, nat.last_hop) == (FindingKind.NAT, None, 2, 3)
    assert f"source address {NAT_OUTSIDE} and another source port" in nat.note
    assert "icmp, tcp/80, tcp/443" in nat.note
    assert sentence(nat).startswith("a NAT between hop 2 and hop 3 rewrites our source")


# -- the table, statistics and invariants --------------------------------------------------------


def test_duplicates_and_late_replies_are_not_counted() -> None:
    outcomes = run(rounds=2)
    extra = Outcome(**{**_fields(outcomes[0]), "extra": Extra.DUPLICATE})
    accumulated = accumulate([*outcomes, extra])
    assert (accumulated.counted, accumulated.extras) == (len(outcomes), 1)
    assert accumulated.hop_stats().snt.sum() == len(outcomes)


def test_hop_stats_are_mtrs_figures() -> None:
    outcomes = run(rounds=4)
    stats = accumulate(outcomes).hop_stats()
    row = stats[(stats.flow == "icmp") & (stats.ttl == 2)].iloc[0]
    assert (row.snt, row.rcv, row.loss_pct) == (4, 4, 0.0)
    assert row.best_ms <= row.avg_ms <= row.wrst_ms
    assert row.responders == ((router(2), 4),)
    assert row.kinds == (("time-exceeded", 4),)
    # RTTs 0.2, 0.200001, 0.200002, 0.200003 ms: jitter 1e-6 ms each step
    assert math.isclose(row.jitter_ms, 1e-6, abs_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.floats(0.0, 1.0), st.integers(1, 12))
def test_invariants_and_order_independence(seed: int, pct: float, rounds: int) -> None:
    outcomes = run(lossy(lambda ttl: ttl >= 2, pct, seed), rounds=rounds)
    stats = accumulate(outcomes).hop_stats()
    assert ((stats.loss_pct >= 0) & (stats.loss_pct <= 100)).all()
    assert (stats.rcv <= stats.snt).all()
    answered = stats[stats.rcv > 0]
    assert (answered.best_ms <= answered.avg_ms + 1e-9).all()
    assert (answered.avg_ms <= answered.wrst_ms + 1e-9).all()
    shuffled = outcomes[:]
    random.Random(seed).shuffle(shuffled)
    a, b = analyse(outcomes), analyse(shuffled)
    assert render_text(a) == render_text(b)
    # Jitter and "last" follow the order replies come back (as mtr's do); the rest not.
    same_frames(a.hops, b.hops, skip=("last_ms", "jitter_ms", "javg_ms", "jmax_ms", "jint_ms"))


def same_frames(a: pd.DataFrame, b: pd.DataFrame, skip: tuple[str, ...] = ()) -> None:
    """Equal row for row: counts, responders and kinds exactly, milliseconds to 1e-9."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for column in a.columns:
        if column in skip:
            continue
        for x, y in zip(a[column], b[column], strict=True):
            if column in MS_COLUMNS or column == "loss_pct":
                assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, abs_tol=1e-9), (
                    column, x, y,
                )  # fmt: skip
            else:
                assert x == y, (column, x, y)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.floats(0.0, 1.0), st.integers(1, 30))
def test_streaming_statistics_equal_the_whole_table_ones(
    seed: int, pct: float, rounds: int
) -> None:
    """The accumulators, fed the outcomes in round order, give what the whole outcome
    table grouped in pandas gave (the statistics before they streamed): every column."""
    from tests.unit.analysis.reference_stats import hop_stats, outcome_table

    rng = random.Random(seed)

    def jittery(flow: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        return None if ttl >= 3 and rng.random() < pct else "clean"

    outcomes = run(jittery, rounds=rounds)
    # RTTs that vary, so that mean, stdev and jitter have something to show
    outcomes = [
        o
        if o.recv_ns is None
        else Outcome(**{**_fields(o), "recv_ns": o.recv_ns + rng.randrange(10**7)})
        for o in outcomes
    ]
    outcomes.sort(key=lambda o: (o.round, o.sent_ns))
    same_frames(accumulate(outcomes).hop_stats(), hop_stats(outcome_table(outcomes)))


def test_summary_says_it_in_words() -> None:
    text = render_text(analyse(run(dropped_after(3))))
    assert "tcp/443 is silently dropped after hop 3 (198.18.3.2), before hop 4" in text
    assert "tcp/443    filtered" in text


def test_an_empty_run_analyses_to_nothing() -> None:
    analysis = analyse([])
    assert analysis.targets == () and analysis.findings == () and analysis.hops.empty


# -- proof and rate limiting ---------------------------------------------------------------


def test_a_silence_no_proof_probe_confirmed_is_a_warning_that_says_so() -> None:
    t = only(run(dropped_after(3), proofs=False))
    [block] = [f for f in t.findings if f.flow == tcp(443)]
    assert block.kind is FindingKind.BLOCKED_SILENTLY and block.severity is Severity.WARNING
    assert "not proven" in block.note


def test_a_proof_probe_that_answers_means_no_block() -> None:
    # tcp/443 gets nothing beyond hop 3 in the rounds (a starved budget), but its proof
    # probe at TTL 4, sent alone, is answered: the router forwards it.
    # (The target ignores tcp/443, so nothing else shows that the routers forward it.)
    def starved(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if f == WEB and (ttl > HOPS or (ttl > 3 and rnd < 10)):
            return None
        return "clean"

    budgets = [
        HopBudget(address=router(h), limited=True, rate_per_s=1.0, burst=6, answered=20,
                  missed=10, held=10)
        for h in (4, 5)
    ]  # fmt: skip
    [t] = analyse(run(starved), TraceParams(max_ttl=HOPS + 1), budgets).targets
    assert not [f for f in t.findings if f.kind is FindingKind.BLOCKED_SILENTLY]
    assert not [f for f in t.findings if f.kind is FindingKind.FORWARDING_LOSS]
    [quiet] = [f for f in t.findings if f.flow == WEB]
    assert (quiet.kind, quiet.first_hop) == (FindingKind.NO_ANSWER_AT_TARGET, HOPS)
    # Without the proofs the same rounds read as a block after hop 3, unproven.
    [guess] = [f for f in only(run(starved, proofs=False)).findings if f.flow == WEB]
    assert (guess.kind, guess.first_hop, guess.severity) == (
        FindingKind.BLOCKED_SILENTLY,
        3,
        Severity.WARNING,
    )


def test_no_block_is_called_before_any_silence_is_seen() -> None:
    # The probes beyond hop 3 are still in flight: nothing has timed out yet.
    outcomes = [o for o in run() if not (o.flow == WEB and o.ttl > 3)]
    t = only(outcomes)
    assert not [f for f in t.findings if f.kind is FindingKind.BLOCKED_SILENTLY]


def limiting(hop: int, every: int) -> Rule:
    """Router ``hop`` answers a service flow's probe only every ``every`` rounds; ICMP
    (the engine's reference flow, paced first) always."""

    def rule(f: FlowSpec, ttl: int, rnd: int) -> Answer | str:
        if ttl == hop and f != ICMP_FLOW and rnd % every:
            return None
        return "clean"

    return rule


def test_a_router_the_engine_found_limited_is_one_finding_for_every_flow() -> None:
    budget = HopBudget(
        address=router(2), limited=True, rate_per_s=1.0, burst=6, answered=14, missed=9, held=12
    )
    outcomes = run(limiting(2, 3))
    analysis = analyse(outcomes, TraceParams(max_ttl=HOPS + 1), [budget])
    [t] = analysis.targets
    [rate] = [f for f in t.findings if f.kind is FindingKind.RATE_LIMITING]
    assert (rate.flow, rate.first_hop, rate.responder) == (None, 2, router(2))
    assert "about 1 answer/s after a burst of 6" in rate.note and "12 probes held back" in rate.note
    assert {e.flow for e in rate.evidence} == {ICMP_FLOW, tcp(443), tcp(80)}
    assert t.limited == {("tcp/443", 2): 6, ("tcp/80", 2): 6}
    assert not [f for f in t.findings if f.kind is FindingKind.FORWARDING_LOSS]
    assert "rate-limits its ICMP errors" in render_text(analysis)


def test_rate_limiting_without_the_engines_word_is_found_from_the_numbers() -> None:
    # No budget record (an older run): loss at one hop that later hops do not show, on
    # most flows, is still one finding for the router.
    t = only(run(limiting(2, 3), flows=(ICMP_FLOW, tcp(443), tcp(80), udp(53)), rounds=30))
    rate = [f for f in t.findings if f.kind is FindingKind.RATE_LIMITING]
    assert [(f.flow, f.first_hop) for f in rate] == [(None, 2)]
    assert ("udp/53", 2) in t.limited
