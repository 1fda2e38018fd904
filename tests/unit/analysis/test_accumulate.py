"""The streaming accumulators on their own: exact counts whatever the order, bounded
samples and series, Welford's figures against the textbook ones, the weighted median."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from reachtest.analysis.accumulate import Accumulator
from reachtest.analysis.paths import _median
from reachtest.model import ICMP_FLOW, Outcome, ReplyKind

TARGET = "198.18.6.2"


def outcome(rnd: int, rtt_ms: float | None, ttl: int = 3) -> Outcome:
    sent = 1_000_000_000 * rnd
    if rtt_ms is None:
        return Outcome(target=TARGET, flow=ICMP_FLOW, ttl=ttl, round=rnd, probe_id=rnd,
                       sent_ns=sent, kind=ReplyKind.TIMEOUT)  # fmt: skip
    return Outcome(target=TARGET, flow=ICMP_FLOW, ttl=ttl, round=rnd, probe_id=rnd,
                   sent_ns=sent, kind=ReplyKind.TIME_EXCEEDED, responder="198.18.3.2",
                   recv_ns=sent + int(rtt_ms * 1e6), icmp_type=11, icmp_code=0)  # fmt: skip


rtts = st.one_of(st.none(), st.floats(0.01, 500.0))


@settings(max_examples=80, deadline=None)
@given(st.lists(rtts, min_size=1, max_size=400), st.integers(0, 2**32), st.integers(2, 16))
def test_series_and_samples_stay_bounded_and_counts_exact(
    answers: list[float | None], seed: int, buckets: int
) -> None:
    """Outcomes in any order: the series has at most ``buckets`` buckets of a power of two
    rounds each, covering every probe exactly once; the samples are the most recent N."""
    outcomes = [outcome(r, rtt) for r, rtt in enumerate(answers)]
    random.Random(seed).shuffle(outcomes)
    acc = Accumulator(samples_per_hop=10, series_buckets=buckets)
    acc.extend(outcomes)
    cell = acc.cells[(TARGET, "icmp", 3)]
    assert cell.snt == len(answers) and cell.rcv == sum(a is not None for a in answers)
    width = acc.bucket_rounds
    assert width & (width - 1) == 0 and len(answers) <= buckets * width
    assert width == 1 or len(answers) > buckets * width // 2  # no wider than needed
    assert len(cell.series) <= buckets
    assert sum(b.snt for b in cell.series.values()) == cell.snt
    assert sum(b.rcv for b in cell.series.values()) == cell.rcv
    for index, bucket in cell.series.items():
        inside = answers[index * width : (index + 1) * width]
        assert bucket.snt == len(inside)
        answered = [a for a in inside if a is not None]
        if answered:
            assert math.isclose(bucket.best_ms, min(answered), abs_tol=1e-6)
            assert math.isclose(bucket.wrst_ms, max(answered), abs_tol=1e-6)
    assert list(cell.samples) == outcomes[-10:]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.01, 1000.0), min_size=1, max_size=200))
def test_welford_mean_and_stdev_equal_the_textbook_ones(values: list[float]) -> None:
    acc = Accumulator().extend(outcome(r, v) for r, v in enumerate(values))
    figures = acc.cells[(TARGET, "icmp", 3)].figures()
    measured = [((int(v * 1e6)) / 1e6) for v in values]  # as the outcome carries it: whole ns
    assert math.isclose(figures["avg_ms"], statistics.fmean(measured), rel_tol=1e-9)
    assert math.isclose(figures["stdev_ms"], statistics.pstdev(measured), abs_tol=1e-6)
    assert figures["best_ms"] <= figures["avg_ms"] + 1e-9 <= figures["wrst_ms"] + 2e-9


@given(st.lists(st.integers(0, 64), min_size=0, max_size=60))
def test_the_weighted_median_is_the_median(values: list[int]) -> None:
    expected = statistics.median(values) if values else None
    assert _median(Counter(values)) == expected


def test_duplicates_count_apart_and_rounds_follow_the_highest() -> None:
    from dataclasses import replace

    from reachtest.model import Extra

    first = outcome(7, 1.0)
    acc = Accumulator().extend([first, replace(first, extra=Extra.DUPLICATE), outcome(2, None)])
    assert (acc.counted, acc.answered, acc.extras, acc.rounds) == (2, 1, 1, 8)
