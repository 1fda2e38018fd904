"""The outcome table: one row per counted probe outcome, the source of every statistic."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from reachtest.model import Outcome

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = (
    "target",
    "flow",
    "protocol",
    "port",
    "ttl",
    "round",
    "probe_id",
    "sent_ns",
    "kind",
    "responder",
    "rtt_ms",
    "reply_ttl",
    "icmp_type",
    "icmp_code",
    "quote_changed",
    "quote_src",
    "quote_port",
    "exact",
    "answered",
    "proof",
    "mpls",
)


def outcome_table(outcomes: Iterable[Outcome]) -> pd.DataFrame:
    """The counted outcomes (duplicates and late replies left out) as a DataFrame.

    ``flow`` is the flow's label (``tcp/443``), ``rtt_ms`` is NaN for a timeout,
    ``quote_changed`` the changed quoted fields joined by commas ('' when none),
    ``quote_src``/``quote_port`` the source a NAT left in the quote (None when ours), ``mpls``
    the RFC 4950 label stack of a time-exceeded as (label, tc, bottom, ttl) tuples.
    """
    import pandas as pd

    rows = [
        (
            o.target,
            o.flow.label,
            str(o.flow.protocol),
            o.flow.port,
            o.ttl,
            o.round,
            o.probe_id,
            o.sent_ns,
            str(o.kind),
            o.responder,
            None if o.recv_ns is None else (o.recv_ns - o.sent_ns) / 1e6,
            o.reply_ttl,
            o.icmp_type,
            o.icmp_code,
            ",".join(o.quote_changed),
            o.quote_src,
            o.quote_port,
            o.exact,
            o.responder is not None,
            o.proof,
            tuple((m.label, m.tc, m.bottom, m.ttl) for m in o.mpls),
        )
        for o in outcomes
        if o.extra is None
    ]
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    for column in ("port", "reply_ttl", "icmp_type", "icmp_code", "quote_port"):
        frame[column] = frame[column].astype("Int64")
    for column in ("ttl", "round", "probe_id", "sent_ns"):
        frame[column] = frame[column].astype("int64")
    frame["rtt_ms"] = frame["rtt_ms"].astype("float64")
    frame["exact"] = frame["exact"].astype(bool)
    frame["answered"] = frame["answered"].astype(bool)
    frame["proof"] = frame["proof"].astype(bool)
    return frame
