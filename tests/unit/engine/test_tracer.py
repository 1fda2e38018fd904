"""The tracer on a simulated network: timeouts, late and duplicate replies, gap limit,
horizons, pacing, rate cap, in-flight cap, fast mode, many targets, strays, stop."""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict

import pytest

from reachtest.engine.simulated import SimHop, SimPath, SimulatedNetwork
from reachtest.engine.tracer import Tracer
from reachtest.model import (
    ICMP_FLOW,
    Extra,
    FlowSpec,
    MplsLabel,
    Outcome,
    ReplyKind,
    RunResult,
    TraceParams,
    tcp,
    udp,
)
from reachtest.packet import replies
from reachtest.packet.build import ProbeTemplate

TARGET = "198.18.6.2"
FLOWS = (ICMP_FLOW, tcp(443), tcp(80), udp(53))


def hops(n: int = 5, **special: SimHop) -> tuple[SimHop, ...]:
    made = []
    for i in range(1, n + 1):
        made.append(special.get(f"r{i}", SimHop(address=f"198.18.{i}.2")))
    return tuple(made)


def path(**options: object) -> SimPath:
    options.setdefault("hops", hops())
    options.setdefault("open", frozenset({"icmp", "tcp/80", "tcp/443", "udp/53"}))
    return SimPath(target=TARGET, **options)  # type: ignore[arg-type]


def run(
    net: SimulatedNetwork,
    flows: tuple[FlowSpec, ...] = FLOWS,
    targets: tuple[str, ...] = (TARGET,),
    **params: object,
) -> RunResult:
    params.setdefault("interval_s", 0.1)
    params.setdefault("timeout_s", 0.5)
    return Tracer(net, list(targets), flows, TraceParams(**params)).run()  # type: ignore[arg-type]


def by_flow_ttl(outcomes: tuple[Outcome, ...]) -> dict[tuple[str, int], list[Outcome]]:
    table: dict[tuple[str, int], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        table[(o.flow.label, o.ttl)].append(o)
    return table


def test_every_probe_has_exactly_one_counted_outcome() -> None:
    net = SimulatedNetwork(paths=(path(),))
    result = run(net, rounds=3)
    assert len(result.outcomes) == result.sent == len(net.sent)
    assert len({(o.target, o.flow, o.probe_id) for o in result.outcomes}) == result.sent


def test_the_path_and_the_answers_are_what_the_network_says() -> None:
    result = run(SimulatedNetwork(paths=(path(),)), rounds=2)
    table = by_flow_ttl(result.outcomes)
    for flow, final in (
        ("icmp", "echo-reply"),
        ("tcp/443", "tcp-syn-ack"),
        ("udp/53", "udp-reply"),
    ):
        for ttl in range(1, 6):
            assert {(str(o.kind), o.responder) for o in table[(flow, ttl)]} == {
                ("time-exceeded", f"198.18.{ttl}.2")
            }
        assert {(str(o.kind), o.responder) for o in table[(flow, 6)]} == {(final, TARGET)}


def test_silence_is_a_timeout_after_timeout_s() -> None:
    net = SimulatedNetwork(
        paths=(path(hops=hops(r3=SimHop(address="198.18.3.2", drop=frozenset({"tcp/443"})))),)
    )
    result = run(net, rounds=1, timeout_s=0.7)
    silent = [o for o in result.outcomes if o.flow == tcp(443) and o.ttl >= 4]
    assert silent and all(o.kind is ReplyKind.TIMEOUT and o.responder is None for o in silent)
    assert result.finished_ns - max(o.sent_ns for o in silent) >= 700_000_000


def test_late_replies_are_recorded_as_late_and_not_counted() -> None:
    net = SimulatedNetwork(paths=(path(delay_ms=900.0),))
    result = run(net, rounds=2, timeout_s=0.5, interval_s=1.0)
    at_target = [o for o in result.outcomes if o.ttl >= 6]
    assert at_target and all(o.kind is ReplyKind.TIMEOUT for o in at_target)
    late = [o for o in result.extras if o.extra is Extra.LATE]
    assert late, "the late answers should be recorded"
    timed_out = {(o.flow, o.probe_id) for o in at_target}
    assert {(o.flow, o.probe_id) for o in late} <= timed_out
    assert len(result.outcomes) == result.sent


def test_duplicates_are_recorded_once_each_and_never_counted() -> None:
    net = SimulatedNetwork(paths=(path(duplicates=2),))
    result = run(net, rounds=2, interval_s=1.0)
    # round 0's copies all arrive during round 1; the run may end before the last copies
    answered = [o for o in result.outcomes if o.responder == TARGET and o.round == 0]
    dups = [o for o in result.extras if o.extra is Extra.DUPLICATE and o.round == 0]
    assert answered
    assert Counter((o.flow, o.probe_id) for o in dups) == Counter(
        {(o.flow, o.probe_id): 2 for o in answered}
    )
    assert len(result.outcomes) == result.sent


def test_gap_limit_stops_after_that_many_silent_ttls() -> None:
    quiet = {f"r{i}": SimHop(address=f"198.18.{i}.2", silent=True) for i in range(3, 21)}
    net = SimulatedNetwork(paths=(path(hops=hops(20, **quiet), open=frozenset()),))
    result = run(net, flows=(ICMP_FLOW,), rounds=2, gap_limit=4, max_ttl=30)
    assert max(o.ttl for o in result.outcomes) == 2 + 4


def test_no_probe_goes_past_the_target_once_it_answered() -> None:
    result = run(SimulatedNetwork(paths=(path(),)), rounds=4, max_ttl=30)
    later = [o for o in result.outcomes if o.round > 0]
    assert max(o.ttl for o in later) == 6
    # a flow silenced by a filter is not probed beyond where the target was reached
    assert max(o.ttl for o in result.outcomes) <= 6 + 5  # round 0: at most gap_limit past


def test_a_silent_flow_is_probed_up_to_where_the_others_reached_the_target() -> None:
    dropper = SimHop(address="198.18.2.2", drop=frozenset({"tcp/443"}))
    result = run(SimulatedNetwork(paths=(path(hops=hops(r2=dropper)),)), rounds=3, gap_limit=8)
    ttls = {o.ttl for o in result.outcomes if o.flow == tcp(443) and o.round > 0}
    assert ttls == set(range(1, 7))


def test_probes_expiring_at_one_hop_are_spread_over_the_round() -> None:
    net = SimulatedNetwork(paths=(path(),))
    result = run(net, rounds=3, interval_s=1.0)
    for round_ in range(3):
        times = sorted(o.sent_ns for o in result.outcomes if o.ttl == 1 and o.round == round_)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) == len(FLOWS)
        assert min(gaps) >= 240_000_000, gaps  # 1 s / 4 flows, not a burst


def test_fast_mode_sends_every_ttl_of_every_flow_at_once_in_one_round() -> None:
    net = SimulatedNetwork(paths=(path(),))
    result = run(net, fast=True, rounds=5, max_ttl=16, rate_pps=0)  # no cap: truly at once
    assert {o.round for o in result.outcomes} == {0}
    assert result.sent == len(FLOWS) * 16
    first, last = net.sent[0][0], net.sent[-1][0]
    assert last - first < 1_000_000  # all sent before the first answer (1 ms) came back


def test_rate_cap_holds_after_the_burst() -> None:
    net = SimulatedNetwork(paths=(path(),))
    run(net, fast=True, max_ttl=30, rate_pps=1000)
    times = [t for t, _ in net.sent]
    assert len(times) == 120
    # 16 may go at once; the other 104 need at least 104 ms at 1000/s
    assert times[-1] - times[0] >= 103_000_000
    window = [t for t in times if t - times[0] < 50_000_000]
    assert len(window) <= 16 + 50 + 1


def test_max_in_flight_bounds_what_is_on_the_wire() -> None:
    net = SimulatedNetwork(
        paths=(
            path(
                hops=tuple(SimHop(address=f"198.18.{i}.2", silent=True) for i in range(1, 31)),
                open=frozenset(),
            ),
        )
    )
    run(net, flows=(ICMP_FLOW,), fast=True, max_ttl=30, max_in_flight=10, timeout_s=1.0)
    times = [t for t, _ in net.sent]
    assert len(times) == 30
    for t in times:
        assert sum(1 for u in times if t - 1_000_000_000 < u <= t) <= 10


def test_many_targets_run_concurrently() -> None:
    targets = tuple(f"198.19.0.{i}" for i in range(1, 51))
    paths = tuple(SimPath(target=t, hops=hops(), open=frozenset({"icmp"})) for t in targets)
    net = SimulatedNetwork(paths=paths)
    result = run(net, flows=(ICMP_FLOW,), targets=targets, rounds=2, interval_s=0.5)
    assert {o.target for o in result.outcomes} == set(targets)
    assert (result.finished_ns - result.started_ns) < 2_000_000_000  # not 50 x one target


def test_ipv4_and_ipv6_targets_in_one_run() -> None:
    v6 = "2001:db8:0:6::2"
    paths = (
        path(),
        SimPath(target=v6, hops=tuple(SimHop(address=f"2001:db8:0:{i}::2") for i in range(1, 6))),
    )
    result = run(
        SimulatedNetwork(paths=paths), flows=(ICMP_FLOW, tcp(443)), targets=(TARGET, v6), rounds=1
    )
    answers = {(o.target, str(o.kind)) for o in result.outcomes}
    assert (v6, "echo-reply") in answers and (TARGET, "tcp-syn-ack") in answers


def test_mpls_labels_reach_the_outcome() -> None:
    label = (MplsLabel(label=24001, tc=0, bottom=True, ttl=1),)
    net = SimulatedNetwork(paths=(path(hops=hops(r2=SimHop(address="198.18.2.2", mpls=label))),))
    result = run(net, flows=(ICMP_FLOW,), rounds=1)
    assert {o.mpls for o in result.outcomes if o.ttl == 2} == {label}


def test_admin_prohibited_and_forged_resets_end_the_flow_where_they_happen() -> None:
    route = hops(
        r2=SimHop(address="198.18.2.2", prohibit=frozenset({"udp/53"})),
        r3=SimHop(address="198.18.3.2", reset=frozenset({"tcp/443"})),
    )
    result = run(SimulatedNetwork(paths=(path(hops=route),)), rounds=2)
    table = by_flow_ttl(result.outcomes)
    assert {(str(o.kind), o.responder) for o in table[("udp/53", 3)]} == {
        ("admin-prohibited", "198.18.2.2")
    }
    assert {(str(o.kind), o.responder) for o in table[("tcp/443", 4)]} == {("tcp-rst", TARGET)}
    assert max(o.ttl for o in result.outcomes if o.flow == udp(53) and o.round > 0) == 3


def test_garbage_and_foreign_errors_are_strays_with_reasons() -> None:
    foreign = ProbeTemplate(
        src="198.18.1.1", dst="198.18.99.9", protocol=tcp(22).protocol, sport=5, dport=22
    )
    injected = [
        (1.0, b"\x45\x00\x00"),
        (2.0, replies.icmp_error(foreign.build(2, 0), responder="198.18.2.2", icmp_type=11)),
    ]
    result = run(SimulatedNetwork(paths=(path(),), injected=injected), rounds=1)
    assert dict(result.stray_counts) == {"malformed": 1, "unknown-flow": 1}
    assert len(result.strays) == 2


def test_stop_ends_the_run_early_and_says_so() -> None:
    net = SimulatedNetwork(paths=(path(),))
    tracer: Tracer

    def on_outcome(outcome: Outcome) -> None:
        if outcome.round == 1:
            tracer.stop()

    tracer = Tracer(
        net, [TARGET], FLOWS, TraceParams(rounds=50, interval_s=0.1), on_outcome=on_outcome
    )
    result = tracer.run()
    assert result.interrupted and max(o.round for o in result.outcomes) <= 2


def test_a_stop_instant_ends_the_run_on_the_wall_clock() -> None:
    """``stop_at`` is real time (a scrape's deadline), not the transport's clock: a network
    that takes real time per wake-up is stopped when the instant passes."""

    class Slow(SimulatedNetwork):
        def receive(self, timeout_s: float) -> list[tuple[bytes, int]]:
            time.sleep(0.02)
            return super().receive(timeout_s)

    tracer = Tracer(Slow(paths=(path(),)), [TARGET], FLOWS, TraceParams(rounds=50))
    began = time.monotonic()
    result = tracer.run(stop_at=began + 0.3)
    took = time.monotonic() - began
    assert result.interrupted
    assert 0.3 <= took < 0.6, took
    assert max(o.round for o in result.outcomes) < 49


def test_memory_of_sent_probes_is_forgotten_after_the_retention_window() -> None:
    net = SimulatedNetwork(paths=(path(),))
    tracer = Tracer(
        net,
        [TARGET],
        FLOWS,
        TraceParams(rounds=40, interval_s=0.5, timeout_s=0.2),
        keep_outcomes=False,
    )
    tracer.run()
    remembered = sum(len(e.by_k) for e in tracer._entries.values())
    assert remembered <= len(FLOWS) * 6 * 12  # about 5 s of rounds, not all 40


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"first_ttl": 0}, "first TTL"),
        ({"max_ttl": 0}, "max TTL"),
        ({"max_ttl": 256}, "max TTL"),
        ({"rounds": 0}, "rounds"),
        ({"interval_s": -1.0}, "interval"),
        ({"timeout_s": 0.0}, "timeout"),
        ({"max_in_flight": 0}, "in flight"),
        ({"rate_pps": -5.0}, "rate"),
        ({"gap_limit": 0}, "gap"),
    ],
)
def test_bad_parameters_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tracer(SimulatedNetwork(paths=(path(),)), [TARGET], FLOWS, TraceParams(**options))  # type: ignore[arg-type]
