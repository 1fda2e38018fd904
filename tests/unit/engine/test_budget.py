"""Routers' ICMP budgets on a simulated network with token buckets: fairness between flows,
pacing within a learned budget, the learned rate and burst, and the proof probe."""

from __future__ import annotations

from collections import Counter

import pytest

from reachtest.engine.budget import fit
from reachtest.engine.simulated import SimHop, SimPath, SimulatedNetwork
from reachtest.engine.tracer import Tracer
from reachtest.model import (
    ICMP_FLOW,
    FlowSpec,
    Outcome,
    ReplyKind,
    RunResult,
    TraceParams,
    tcp,
    udp,
)

V4 = "198.18.6.2"
V6 = "2001:db8:0:6::2"
FLOWS = (ICMP_FLOW, tcp(443), tcp(80), udp(53))
SERVICES = frozenset({"icmp", "tcp/443", "tcp/80", "udp/53"})


def router(i: int, v6: bool) -> str:
    return f"2001:db8:0:{i}::2" if v6 else f"198.18.{i}.2"


def network(
    rates: tuple[tuple[float | None, int], ...],
    *,
    v6: bool = False,
    drop: dict[int, str] | None = None,
    open_: frozenset[str] = SERVICES,
) -> SimulatedNetwork:
    """A path of len(rates) routers; router i has bucket rates[i-1] (None: unlimited)."""
    drop = drop or {}
    hops = tuple(
        SimHop(
            address=router(i, v6),
            rate_per_s=rate,
            burst=burst,
            drop=frozenset({drop[i]}) if i in drop else frozenset(),
        )
        for i, (rate, burst) in enumerate(rates, start=1)
    )
    return SimulatedNetwork(paths=(SimPath(target=V6 if v6 else V4, hops=hops, open=open_),))


def trace(
    net: SimulatedNetwork,
    target: str = V4,
    flows: tuple[FlowSpec, ...] = FLOWS,
    **params: object,
) -> RunResult:
    params.setdefault("rounds", 10)
    params.setdefault("interval_s", 1.0)
    params.setdefault("timeout_s", 2.0)
    return Tracer(net, [target], flows, TraceParams(**params)).run()  # type: ignore[arg-type]


def cells(result: RunResult) -> tuple[Counter[tuple[str, int]], Counter[tuple[str, int]]]:
    sent: Counter[tuple[str, int]] = Counter()
    answered: Counter[tuple[str, int]] = Counter()
    for o in result.outcomes:
        sent[(o.flow.label, o.ttl)] += 1
        answered[(o.flow.label, o.ttl)] += o.responder is not None
    return sent, answered


LINUX = (1.0, 6)


@pytest.mark.parametrize("v6", [False, True])
def test_no_flow_starves_at_routers_that_answer_one_error_a_second(v6: bool) -> None:
    net = network((LINUX,) * 5, v6=v6)
    result = trace(net, V6 if v6 else V4)
    sent, answered = cells(result)
    for ttl in range(1, 6):
        for flow in FLOWS:
            assert answered[(flow.label, ttl)] >= 1, (flow.label, ttl, sent, answered)
        # The reference flow keeps its per-hop statistics: most of its rounds answered.
        assert answered[("icmp", ttl)] >= 7, (ttl, sent["icmp", ttl], answered["icmp", ttl])
    for flow in FLOWS:  # every end-to-end probe runs every round
        assert answered[(flow.label, 6)] == 10


def test_probes_to_a_limited_router_stay_within_its_budget_once_learned() -> None:
    net = network((LINUX, (2.0, 4), (None, 6), LINUX, LINUX))
    result = trace(net)
    late = [
        o
        for o in result.outcomes
        if o.sent_ns - result.started_ns > 4e9 and o.ttl <= 5 and o.kind is ReplyKind.TIMEOUT
    ]
    # After the first seconds (a burst spent, the limit found, the rate fitted) only the
    # occasional try upwards goes unanswered.
    by_hop = Counter(o.ttl for o in late)
    assert all(n <= 2 for n in by_hop.values()), by_hop
    # Everything the routers answered fits within their buckets over the run's time.
    duration_s = (result.finished_ns - result.started_ns) / 1e9
    _, answered = cells(result)
    for ttl, (rate, burst) in ((1, LINUX), (2, (2.0, 4))):
        got = sum(n for (_, t), n in answered.items() if t == ttl)
        assert got <= burst + rate * duration_s + 1
    assert result.sent < 4 * 6 * 10  # probes were held back, not sent into a closed bucket


def test_the_learned_rate_and_burst_are_the_routers_and_an_unlimited_router_is_not_limited() -> (
    None
):
    net = network((LINUX, (4.0, 6), (None, 6), LINUX, LINUX))
    result = trace(net, rounds=20, interval_s=0.25)
    budgets = {b.address: b for b in result.budgets}
    assert not budgets[router(3, False)].limited
    for i, (rate, burst) in ((1, LINUX), (2, (4.0, 6)), (4, LINUX)):
        b = budgets[router(i, False)]
        assert b.limited and b.rate_per_s is not None and b.burst is not None
        assert rate / 1.5 <= b.rate_per_s <= rate * 1.5, b
        assert abs(b.burst - burst) <= 2, b
        assert b.held > 0


def test_a_path_without_limits_is_probed_as_before() -> None:
    net = network(((None, 6),) * 5)
    result = trace(net)
    sent, answered = cells(result)
    assert all(not b.limited and b.held == 0 for b in result.budgets)
    assert all(
        sent[(f.label, t)] == 10 == answered[(f.label, t)] for f in FLOWS for t in range(1, 7)
    )
    assert not any(o.proof for o in result.outcomes)


def test_the_reference_flow_goes_first_every_round_and_the_others_take_turns() -> None:
    net = network(((None, 6),) * 5)
    result = trace(net, rounds=9)
    order: Counter[tuple[int, str]] = Counter()
    for rnd in range(9):
        probes = sorted(
            (o for o in result.outcomes if o.round == rnd and o.ttl == 1),
            key=lambda o: o.sent_ns,
        )
        assert probes[0].flow.label == "icmp", rnd
        order[(1, probes[1].flow.label)] += 1
    # The three services lead the rest three rounds each.
    assert sorted(order.values()) == [3, 3, 3]


@pytest.mark.parametrize("v6", [False, True])
def test_the_reference_flow_keeps_to_budgets_once_learned(v6: bool) -> None:
    """Every router at Linux's budget (1 a second, burst 6) and four flows a round: the
    first rounds spend the bursts and show the limits; from then on icmp, first in each
    round and at one probe a second, fits every router's budget: every icmp probe sent
    is answered (mtr's 0% on such a path), while the services share what is left."""
    net = network((LINUX,) * 5, v6=v6)
    result = trace(net, V6 if v6 else V4, rounds=12)
    late = [o for o in result.outcomes if o.flow.label == "icmp" and o.round >= 4 and o.ttl <= 6]
    assert len(late) >= 6 * 7, len(late)
    assert all(o.responder is not None for o in late), [
        (o.round, o.ttl) for o in late if o.responder is None
    ]
    served = {o.flow.label for o in result.outcomes if o.round >= 4 and o.responder}
    assert served == SERVICES


def proofs(result: RunResult) -> list[Outcome]:
    return [o for o in result.outcomes if o.proof]


@pytest.mark.parametrize("rates", [((None, 6),) * 5, (LINUX,) * 5])
def test_a_filter_gets_one_proof_probe_and_it_stays_silent(
    rates: tuple[tuple[float | None, int], ...],
) -> None:
    net = network(rates, drop={3: "tcp/443"})
    result = trace(net)
    [proof] = proofs(result)
    assert (proof.flow, proof.ttl, proof.kind) == (tcp(443), 4, ReplyKind.TIMEOUT)


def test_a_proof_answers_where_the_silence_was_the_rate_limit() -> None:
    # One round, every probe at once: router 4 has two tokens, so the third flow's probe
    # at TTL 4 is refused, and that flow (which the target does not answer) shows nothing
    # beyond TTL 3. Its proof, sent after a refill, is answered: not a filter.
    net = network(((None, 6),) * 3 + ((1.0, 2),), open_=frozenset({"icmp", "tcp/443"}))
    result = trace(net, flows=(ICMP_FLOW, tcp(443), tcp(80)), rounds=1, interval_s=0.0)
    refused = [
        o for o in result.outcomes if o.ttl == 4 and not o.proof and o.kind is ReplyKind.TIMEOUT
    ]
    assert [o.flow for o in refused] == [tcp(80)]
    [proof] = proofs(result)
    assert (proof.flow, proof.ttl, proof.kind) == (tcp(80), 4, ReplyKind.TIME_EXCEEDED)
    assert proof.sent_ns - refused[0].sent_ns >= 1e9  # after a token's worth of refill


def test_fit_finds_the_bucket_that_explains_the_answers() -> None:
    # 4 probes a second for 6 s against a bucket of 1/s, burst 6.
    tokens, events = 6.0, []
    for i in range(24):
        t = i * 250_000_000
        tokens = min(6.0, tokens + 0.25 if i else tokens)
        ok = tokens >= 1.0
        tokens -= ok
        events.append((t, ok))
    rate, burst, _, _, wrong = fit(events)
    assert (rate, burst, wrong) == (1.0, 6, 0)


def test_without_icmp_the_first_flow_keeps_the_per_hop_statistics() -> None:
    net = network((LINUX,) * 5)
    result = trace(net, flows=(tcp(80), udp(53), tcp(443)))
    sent, answered = cells(result)
    for ttl in range(1, 6):
        assert answered[("tcp/80", ttl)] >= 7, (ttl, sent["tcp/80", ttl])
        assert answered[("udp/53", ttl)] >= 1 and answered[("tcp/443", ttl)] >= 1
