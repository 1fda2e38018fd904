"""Streaming statistics: every outcome folded in O(1) into per (target, flow, TTL) cells,
so that a run of a day costs what a run of a minute costs per round.

A cell keeps exact counts (sent, answered, each reply kind, responder, ICMP type/code,
MPLS stack, the (kind, responder, quoted change, code) tuples the verdicts read), RTT
figures updated as they come (Welford's mean and variance, best, worst, last, mtr's
jitter columns), the most recent ``samples_per_hop`` outcomes for the diff's tests, and a
time series of at most ``series_buckets`` buckets of rounds (a bucket spans a power of two
rounds, doubled and merged pairwise whenever the run outgrows the buckets).

Jitter and "last" follow the order outcomes are added (the order replies come back, as
mtr computes them); everything else is independent of the order.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reachtest.analysis.paths import Observed, hops_back
from reachtest.analysis.stats import STAT_COLUMNS
from reachtest.model import Outcome

if TYPE_CHECKING:
    import pandas as pd

#: The most recent outcomes kept per hop (and written to the record's ``samples``): the
#: diff's latency test needs tens of samples, a day of rounds would be millions.
SAMPLES_PER_HOP = 100
#: At most this many time-series buckets per hop (the record's ``series``).
SERIES_BUCKETS = 64


@dataclass(slots=True)
class Bucket:
    """One stretch of rounds of one hop: probes sent, answered, and their RTTs."""

    snt: int = 0
    rcv: int = 0
    n_rtt: int = 0
    sum_ms: float = 0.0
    best_ms: float = math.inf
    wrst_ms: float = -math.inf

    def add(self, rtt_ms: float | None, answered: bool) -> None:
        self.snt += 1
        if answered:
            self.rcv += 1
        if rtt_ms is not None:
            self.n_rtt += 1
            self.sum_ms += rtt_ms
            self.best_ms = min(self.best_ms, rtt_ms)
            self.wrst_ms = max(self.wrst_ms, rtt_ms)

    def merge(self, other: Bucket) -> None:
        self.snt += other.snt
        self.rcv += other.rcv
        self.n_rtt += other.n_rtt
        self.sum_ms += other.sum_ms
        self.best_ms = min(self.best_ms, other.best_ms)
        self.wrst_ms = max(self.wrst_ms, other.wrst_ms)


@dataclass(slots=True)
class HopCell:
    """Everything kept of one (target, flow, TTL): O(1) per outcome, bounded in size."""

    snt: int = 0
    rcv: int = 0
    n_rtt: int = 0
    mean_ms: float = 0.0
    m2: float = 0.0  # Welford: the sum of squared differences from the mean
    best_ms: float = math.inf
    wrst_ms: float = -math.inf
    last_ms: float = math.nan
    # mtr's jitter: |difference of consecutive RTTs|: current, sum, count, worst, and
    # RFC 3550's interarrival estimate (J += (|D| - J) / 16)
    jitter_ms: float = math.nan
    jsum_ms: float = 0.0
    jn: int = 0
    jmax_ms: float = math.nan
    jint_ms: float = 0.0
    responders: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    icmp: Counter[tuple[int, int]] = field(default_factory=Counter)
    mpls: Counter[tuple[str, tuple[tuple[int, int, bool, int], ...]]] = field(
        default_factory=Counter
    )
    samples: deque[Outcome] = field(default_factory=deque)
    series: dict[int, Bucket] = field(default_factory=dict)

    def add_rtt(self, rtt_ms: float) -> None:
        self.n_rtt += 1
        delta = rtt_ms - self.mean_ms
        self.mean_ms += delta / self.n_rtt
        self.m2 += delta * (rtt_ms - self.mean_ms)
        self.best_ms = min(self.best_ms, rtt_ms)
        self.wrst_ms = max(self.wrst_ms, rtt_ms)
        if self.n_rtt > 1:
            diff = abs(rtt_ms - self.last_ms)
            self.jitter_ms = diff
            self.jsum_ms += diff
            self.jn += 1
            self.jmax_ms = diff if math.isnan(self.jmax_ms) else max(self.jmax_ms, diff)
            self.jint_ms += (diff - self.jint_ms) / 16
        self.last_ms = rtt_ms

    def figures(self) -> dict[str, float]:
        """Last/avg/best/worst/stdev and the jitter columns, NaN where none came back."""
        nan = math.nan
        some = self.n_rtt > 0
        jittered = self.jn > 0
        return {
            "last_ms": self.last_ms if some else nan,
            "avg_ms": self.mean_ms if some else nan,
            "best_ms": self.best_ms if some else nan,
            "wrst_ms": self.wrst_ms if some else nan,
            "stdev_ms": math.sqrt(max(0.0, self.m2 / self.n_rtt)) if some else nan,
            "jitter_ms": self.jitter_ms if jittered else nan,
            "javg_ms": self.jsum_ms / self.jn if jittered else nan,
            "jmax_ms": self.jmax_ms if jittered else nan,
            "jint_ms": self.jint_ms if jittered else nan,
        }


class Accumulator:
    """A run's outcomes, folded as they come (``add``); read by ``analyse`` and the record.

    Not thread-safe: one thread adds and reads (the live view drains a queue into it)."""

    def __init__(
        self, *, samples_per_hop: int = SAMPLES_PER_HOP, series_buckets: int = SERIES_BUCKETS
    ) -> None:
        if samples_per_hop < 0 or series_buckets < 2:
            raise ValueError("samples_per_hop >= 0 and series_buckets >= 2")
        self.samples_per_hop = samples_per_hop
        self.series_buckets = series_buckets
        self.observed: dict[str, Observed] = {}
        self.cells: dict[tuple[str, str, int], HopCell] = {}
        #: Outcomes counted (duplicates and late replies are not), answered among them.
        self.counted = 0
        self.answered = 0
        #: Duplicate or late replies seen (not counted in any statistic).
        self.extras = 0
        #: 1 + the highest round of any counted outcome.
        self.rounds = 0
        #: Rounds per time-series bucket (a power of two).
        self.bucket_rounds = 1

    def extend(self, outcomes: Iterable[Outcome]) -> Accumulator:
        for outcome in outcomes:
            self.add(outcome)
        return self

    def add(self, o: Outcome) -> None:
        """Fold one outcome in: O(1), apart from a rare re-bucketing of the series."""
        if o.extra is not None:
            self.extras += 1
            return
        label = o.flow.label
        obs = self.observed.get(o.target)
        if obs is None:
            obs = self.observed[o.target] = Observed(o.target)
        if label not in obs.flows:
            obs.flows[label] = o.flow
        kind = str(o.kind)
        responder = o.responder
        answered = responder is not None
        obs.seen[label][o.ttl][(kind, responder, ",".join(o.quote_changed), o.icmp_code)] += 1
        if o.quote_src is not None:
            obs.translated[label].add(o.quote_src)
        if o.proof:
            obs.proofs[label][o.ttl][answered] += 1
        if responder is not None and o.reply_ttl is not None:
            obs.back[label][o.ttl][(kind, responder, hops_back(o.reply_ttl))] += 1
        key = (o.target, label, o.ttl)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = HopCell(samples=deque(maxlen=self.samples_per_hop))
        self.counted += 1
        cell.snt += 1
        cell.kinds[kind] += 1
        rtt_ms = None if o.recv_ns is None else (o.recv_ns - o.sent_ns) / 1e6
        if responder is not None:
            self.answered += 1
            cell.rcv += 1
            cell.responders[responder] += 1
            if rtt_ms is not None:
                cell.add_rtt(rtt_ms)
            if o.mpls:
                stack = tuple((m.label, m.tc, m.bottom, m.ttl) for m in o.mpls)
                cell.mpls[(responder, stack)] += 1
        if o.icmp_type is not None and o.icmp_code is not None:
            cell.icmp[(o.icmp_type, o.icmp_code)] += 1
        if self.samples_per_hop:
            cell.samples.append(o)
        if o.round >= self.rounds:
            self.rounds = o.round + 1
            if self.rounds > self.series_buckets * self.bucket_rounds:
                self._widen()
        index = o.round // self.bucket_rounds
        bucket = cell.series.get(index)
        if bucket is None:
            bucket = cell.series[index] = Bucket()
        bucket.add(rtt_ms, answered)

    def _widen(self) -> None:
        """Double the rounds per bucket until the run fits, merging buckets pairwise."""
        while self.rounds > self.series_buckets * self.bucket_rounds:
            self.bucket_rounds *= 2
            for cell in self.cells.values():
                merged: dict[int, Bucket] = {}
                for index, bucket in sorted(cell.series.items()):
                    into = merged.get(index // 2)
                    if into is None:
                        merged[index // 2] = bucket
                    else:
                        into.merge(bucket)
                cell.series = merged

    # -- what the analysis reads ------------------------------------------------------

    def targets(self) -> list[Observed]:
        """One Observed per target, in address order, flows in protocol and port order."""
        for obs in self.observed.values():
            if list(obs.flows) != sorted(obs.flows, key=lambda label: obs.flows[label]):
                obs.flows = dict(sorted(obs.flows.items(), key=lambda item: item[1]))
        return [self.observed[t] for t in sorted(self.observed, key=_address_key)]

    def ordered(self) -> list[tuple[str, str, int]]:
        """The cells' keys in (target, flow, TTL) order, as strings sort."""
        return sorted(self.cells)

    def hop_stats(self) -> pd.DataFrame:
        """One row per (target, flow, ttl), the columns of ``stats.STAT_COLUMNS``."""
        import pandas as pd

        rows = []
        for key in self.ordered():
            cell = self.cells[key]
            rows.append(
                {
                    "target": key[0],
                    "flow": key[1],
                    "ttl": key[2],
                    "snt": cell.snt,
                    "rcv": cell.rcv,
                    "loss_pct": 100.0 * (cell.snt - cell.rcv) / cell.snt,
                    **cell.figures(),
                    "responders": ranked(cell.responders),
                    "kinds": ranked(cell.kinds),
                }
            )
        frame = pd.DataFrame.from_records(rows, columns=list(STAT_COLUMNS))
        for column in ("ttl", "snt", "rcv"):
            frame[column] = frame[column].astype("int64")
        return frame


def ranked(counts: Counter[str]) -> tuple[tuple[str, int], ...]:
    """Most frequent first, then by name."""
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _address_key(address: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(address)
    return (parsed.version, int(parsed))


def accumulate(outcomes: Iterable[Outcome]) -> Accumulator:
    """An Accumulator of ``outcomes`` (in the order given)."""
    return Accumulator().extend(outcomes)
