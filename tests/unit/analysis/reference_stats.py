"""The statistics as reachtest computed them before they streamed: the whole outcome table
in pandas, grouped per (target, flow, TTL) in round order. Kept as the oracle that the
streaming accumulators (``reachtest.analysis.accumulate``) are checked against."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import pandas as pd

from reachtest.analysis.stats import STAT_COLUMNS
from reachtest.model import Outcome


def outcome_table(outcomes: Iterable[Outcome]) -> pd.DataFrame:
    """The counted outcomes (duplicates and late replies left out), one row each."""
    rows = [
        (o.target, o.flow.label, o.ttl, o.round, o.sent_ns, str(o.kind), o.responder,
         None if o.recv_ns is None else (o.recv_ns - o.sent_ns) / 1e6, o.responder is not None)
        for o in outcomes
        if o.extra is None
    ]  # fmt: skip
    columns = ["target", "flow", "ttl", "round", "sent_ns", "kind", "responder", "rtt_ms"]
    frame = pd.DataFrame.from_records(rows, columns=[*columns, "answered"])
    frame["rtt_ms"] = frame["rtt_ms"].astype("float64")
    frame["answered"] = frame["answered"].astype(bool)
    return frame


def _jitter(rtts: list[float]) -> tuple[float, float, float, float]:
    """mtr's jitter figures over RTTs in round order: current, mean, worst, interarrival
    (RFC 3550: J += (|D| - J) / 16). NaN when fewer than two replies."""
    if len(rtts) < 2:
        nan = float("nan")
        return nan, nan, nan, nan
    diffs = [abs(b - a) for a, b in itertools.pairwise(rtts)]
    interarrival = 0.0
    for d in diffs:
        interarrival += (d - interarrival) / 16
    return diffs[-1], sum(diffs) / len(diffs), max(diffs), interarrival


def hop_stats(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (target, flow, ttl): Snt, Rcv, Loss%, Last/Avg/Best/Wrst/StDev (ms),
    jitter (current, mean, worst, interarrival), every responder with its count (most
    frequent first) and every reply kind with its count."""
    import pandas as pd

    keys = ["target", "flow", "ttl"]
    if table.empty:
        return pd.DataFrame(columns=list(STAT_COLUMNS))
    ordered = table.sort_values([*keys, "round", "sent_ns"], kind="stable")
    groups = ordered.groupby(keys, sort=True)
    rtt = groups["rtt_ms"]
    frame = pd.DataFrame(
        {
            "snt": groups.size(),
            "rcv": groups["answered"].sum().astype("int64"),
            "last_ms": rtt.last(),
            "avg_ms": rtt.mean(),
            "best_ms": rtt.min(),
            "wrst_ms": rtt.max(),
            "stdev_ms": rtt.std(ddof=0),
        }
    ).reset_index()
    frame["loss_pct"] = 100.0 * (frame["snt"] - frame["rcv"]) / frame["snt"]
    # One pass in round order for what depends on the sequence or counts values.
    extra: dict[tuple[str, str, int], tuple[object, ...]] = {}
    columns = zip(
        ordered["target"], ordered["flow"], ordered["ttl"], ordered["rtt_ms"],
        ordered["responder"], ordered["kind"], ordered["answered"], strict=True,
    )  # fmt: skip
    current: tuple[str, str, int] | None = None
    rtts: list[float] = []
    responders: dict[str, int] = {}
    kinds: dict[str, int] = {}

    def close() -> None:
        if current is not None:
            extra[current] = (
                *_jitter(rtts),
                tuple(sorted(responders.items(), key=lambda r: (-r[1], r[0]))),
                tuple(sorted(kinds.items(), key=lambda k: (-k[1], k[0]))),
            )

    for target, flow, ttl, rtt_ms, responder, kind, answered in columns:
        key = (str(target), str(flow), int(ttl))
        if key != current:
            close()
            current, rtts, responders, kinds = key, [], {}, {}
        kinds[str(kind)] = kinds.get(str(kind), 0) + 1
        if answered:
            responders[str(responder)] = responders.get(str(responder), 0) + 1
            if not math.isnan(rtt_ms):
                rtts.append(float(rtt_ms))
    close()
    names = ("jitter_ms", "javg_ms", "jmax_ms", "jint_ms", "responders", "kinds")
    looked_up = [
        extra[(str(t), str(f), int(h))]
        for t, f, h in zip(frame["target"], frame["flow"], frame["ttl"], strict=True)
    ]
    for i, name in enumerate(names):
        frame[name] = pd.Series([row[i] for row in looked_up], index=frame.index, dtype=object)
    return frame[list(STAT_COLUMNS)]
