"""The trace session: the engine keeps no outcome, the foreground folds them into the
streaming statistics, and a live-view frame costs the same early and late in a long run."""

from __future__ import annotations

import cProfile
import pstats
from datetime import UTC, datetime

from reachtest.analysis.accumulate import accumulate
from reachtest.analysis.analyse import analyse
from reachtest.engine.simulated import SimHop, SimPath, SimulatedNetwork
from reachtest.engine.tracer import Tracer
from reachtest.model import ICMP_FLOW, Outcome, TraceParams, tcp, udp
from reachtest.report.record import RunMeta, build_record
from reachtest.session import TraceSession

TARGET = "198.18.6.2"
FLOWS = (ICMP_FLOW, tcp(443), tcp(80), udp(53))


def network() -> SimulatedNetwork:
    hops = tuple(SimHop(address=f"198.18.{i}.2") for i in range(1, 6))
    path = SimPath(target=TARGET, hops=hops, open=frozenset({"icmp", "tcp/80", "udp/53"}))
    return SimulatedNetwork(paths=(path,))


def tracer(rounds: int) -> Tracer:
    params = TraceParams(rounds=rounds, interval_s=0.1, timeout_s=0.5, max_ttl=8)
    return Tracer(network(), [TARGET], FLOWS, params)


META = RunMeta(
    command=("reachtest", "trace", TARGET),
    started=datetime(2026, 11, 29, tzinfo=UTC),
    finished=datetime(2026, 11, 29, tzinfo=UTC),
)


def test_a_session_keeps_no_outcome_and_analyses_what_it_folded() -> None:
    """The engine of a session keeps no outcome (a day would not fit); the session's
    accumulated statistics are those of every outcome the engine produced."""
    session = TraceSession(tracer(40))
    result = session.run_quiet()
    assert result.outcomes == () and session.tracer.outcomes == []
    reference = tracer(40).run()
    mine = build_record(result, analyse(session.accumulated, result.params), META)
    theirs = build_record(reference, analyse(reference.outcomes, reference.params), META)
    for record in (mine, theirs):
        record.pop("duration_s")
    assert mine == theirs
    assert session.accumulated.counted == len(reference.outcomes)


def _calls(fn: object) -> int:
    """How many Python function calls one call of ``fn`` makes: its cost, without a clock."""
    profile = cProfile.Profile()
    profile.runcall(fn)  # type: ignore[arg-type]
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


def test_a_live_frame_costs_the_same_after_ten_rounds_and_after_thousands() -> None:
    """A long simulated run fed to a session: the live view's frame (analysis, record,
    view, rendering) makes as many calls after 3,000 rounds as after 10: its cost is
    flat in the run's length (the wall-clock figures are in scripts/bench_long.py)."""
    from reachtest.cli.trace import _live_frame

    outcomes: list[Outcome] = list(tracer(3000).run().outcomes)
    session = TraceSession(tracer(3000))
    early = [o for o in outcomes if o.round < 10]
    for o in early:
        session._on_outcome(o)
    session.drain()  # the first frame pays for imports and caches: not measured
    _live_frame(session, 120, META)
    start = _calls(lambda: _live_frame(session, 120, META))
    for o in outcomes[len(early) :]:
        session._on_outcome(o)
    session.drain()
    end = _calls(lambda: _live_frame(session, 120, META))
    assert session.accumulated.rounds == 3000
    assert end < 1.1 * start, (start, end)
    # and the same frame over the whole outcome list costs in proportion to it
    whole = _calls(lambda: analyse(outcomes, session.tracer.params))
    assert whole > 50 * _calls(lambda: analyse(session.accumulated, session.tracer.params))


def test_the_accumulator_matches_whatever_the_chunks() -> None:
    """Draining in many small chunks or at once gives the same statistics."""
    outcomes = list(tracer(30).run().outcomes)
    session = TraceSession(tracer(30))
    for i, o in enumerate(outcomes):
        session._on_outcome(o)
        if i % 7 == 0:
            session.drain()
    session.drain()
    assert session.accumulated.hop_stats().equals(accumulate(outcomes).hop_stats())
