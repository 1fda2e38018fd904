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


def loss_pct(snt: int, rcv: int, limited: int = 0) -> float:
    """Loss% of a hop: the probes lost over the probes whose fate could be judged. The
    non-answers a router's ICMP rate limit explains (``limited``) are its budget, not
    loss, and count on neither side (mtr's Loss% on an unlimited path, 0% where every
    non-answer is a limit); Snt and Rcv stay as sent and answered."""
    judged = snt - limited
    return 100.0 * (judged - rcv) / judged if judged > 0 else 0.0
