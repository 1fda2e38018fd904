"""Per-hop statistics per flow, as mtr shows them, plus every responder and reply kind."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

STAT_COLUMNS = (
    "target",
    "flow",
    "ttl",
    "snt",
    "rcv",
    "loss_pct",
    "last_ms",
    "avg_ms",
    "best_ms",
    "wrst_ms",
    "stdev_ms",
    "jitter_ms",
    "javg_ms",
    "jmax_ms",
    "jint_ms",
    "responders",
    "kinds",
)


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

    rows = []
    ordered = table.sort_values(["target", "flow", "ttl", "round", "sent_ns"], kind="stable")
    for key, group in ordered.groupby(["target", "flow", "ttl"], sort=True):
        target, flow, ttl = key
        snt = len(group)
        answered = group[group["answered"]]
        rcv = len(answered)
        rtts = [float(x) for x in answered["rtt_ms"] if not math.isnan(x)]
        if rtts:
            mean = sum(rtts) / len(rtts)
            stdev = math.sqrt(sum((r - mean) ** 2 for r in rtts) / len(rtts))
            last, best, worst = rtts[-1], min(rtts), max(rtts)
        else:
            mean = stdev = last = best = worst = float("nan")
        jitter, javg, jmax, jint = _jitter(rtts)
        responders = tuple(
            (str(a), int(n)) for a, n in answered["responder"].value_counts(sort=False).items()
        )
        kinds = tuple((str(k), int(n)) for k, n in group["kind"].value_counts(sort=False).items())
        rows.append(
            (
                target,
                flow,
                int(ttl),  # type: ignore[call-overload]
                snt,
                rcv,
                100.0 * (snt - rcv) / snt,
                last,
                mean,
                best,
                worst,
                stdev,
                jitter,
                javg,
                jmax,
                jint,
                tuple(sorted(responders, key=lambda r: (-r[1], r[0]))),
                tuple(sorted(kinds, key=lambda k: (-k[1], k[0]))),
            )
        )
    return pd.DataFrame.from_records(rows, columns=list(STAT_COLUMNS))
