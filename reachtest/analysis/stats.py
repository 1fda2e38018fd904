"""The columns of the per-hop statistics per flow (as mtr shows them, plus every responder
and reply kind); ``accumulate.Accumulator.hop_stats`` computes them."""

from __future__ import annotations

#: The round-trip and jitter figures of a hop, in milliseconds (NaN when none came back).
MS_COLUMNS = (
    "last_ms",
    "avg_ms",
    "best_ms",
    "wrst_ms",
    "stdev_ms",
    "jitter_ms",
    "javg_ms",
    "jmax_ms",
    "jint_ms",
)
STAT_COLUMNS = (
    "target",
    "flow",
    "ttl",
    "snt",
    "rcv",
    "loss_pct",
    *MS_COLUMNS,
    "responders",
    "kinds",
)
