"""Services over time, from the history's table of stored runs: one state per service and
scheduled run, the changes between them, and how often each got through."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reachtest.model import UNRESOLVED

if TYPE_CHECKING:
    import pandas as pd

THROUGH = ("open", "reachable")


def per_run(services: pd.DataFrame) -> pd.DataFrame:
    """One row per batch (one `reachtest run`, or one stored trace), target and flow: the
    trace's row when the batch traced the target, else the check's. Adds ``word``: the
    state, or for ICMP reachable/unreachable. Oldest first."""
    frame = services.copy()
    icmp = frame["flow"] == "icmp"
    echo = icmp & (frame["state"] != UNRESOLVED)  # unresolved stays unresolved for icmp
    frame["word"] = frame["state"].where(~echo, frame["reached"].map(_echo)).fillna("filtered")
    frame["rank"] = (frame["kind"] == "trace").astype(int)
    # A check probes at one far TTL only: its hop numbers are no hop counts.
    frame["reason_hop"] = frame["reason_hop"].where(frame["kind"] == "trace")
    frame["when"] = frame["started"].str.slice(0, 19).str.replace("T", " ")
    frame = frame.sort_values(["batch", "target", "flow", "rank", "run_id"], kind="stable")
    best = frame.groupby(["batch", "target", "flow"], sort=False).tail(1)
    return best.drop(columns="rank").sort_values(["started", "batch"], kind="stable")


def _echo(reached: bool) -> str:
    return "reachable" if reached else "unreachable"


def changes(runs: pd.DataFrame) -> pd.DataFrame:
    """The first row of every service and each row where its word changed."""
    ordered = runs.sort_values(["target", "flow", "started", "batch"], kind="stable")
    previous = ordered.groupby(["target", "flow"], sort=False)["word"].shift()
    return ordered[previous.isna() | (previous != ordered["word"])]


def availability(runs: pd.DataFrame) -> pd.DataFrame:
    """Per target and flow: runs, the share that got through, first and last run, and the
    latest word."""
    import pandas as pd

    frame = runs.assign(through=runs["word"].isin(THROUGH))
    grouped = frame.sort_values("started").groupby(["target", "flow"], sort=True)
    return pd.DataFrame(
        {
            "runs": grouped.size(),
            "through": grouped["through"].mean(),
            "first": grouped["started"].first(),
            "last": grouped["started"].last(),
            "now": grouped["word"].last(),
        }
    ).reset_index()
