"""Services over time from the history: a batch's trace speaks for it, changes and
availability per service."""

from __future__ import annotations

import pandas as pd

from reachtest.analysis.timeline import availability, changes, per_run


def _rows() -> pd.DataFrame:
    rows = [  # batch, run, kind, started, flow, state, reached, reason_hop
        (1, 1, "check", "2026-11-20T10:00:00Z", "tcp/443", "open", True, 64),
        (1, 2, "trace", "2026-11-20T10:00:02Z", "tcp/443", "open", True, 6),
        (3, 3, "check", "2026-11-20T11:00:00Z", "tcp/443", "open", True, 64),
        (4, 4, "check", "2026-11-20T12:00:00Z", "tcp/443", "filtered", False, None),
        (4, 5, "trace", "2026-11-20T12:00:02Z", "tcp/443", "filtered", False, None),
        (1, 1, "check", "2026-11-20T10:00:00Z", "icmp", None, True, 64),
        (3, 3, "check", "2026-11-20T11:00:00Z", "icmp", None, False, None),
        (4, 4, "check", "2026-11-20T12:00:00Z", "icmp", None, True, 64),
    ]
    return pd.DataFrame(
        [
            {"run_id": r, "batch": b, "kind": k, "started": s, "target": "web",
             "address": "198.18.6.2", "flow": f, "state": st, "reached": ok,
             "reason": "x", "reason_hop": hop, "last_hop": None}
            for b, r, k, s, f, st, ok, hop in rows
        ]
    )  # fmt: skip


def test_one_row_per_batch_and_the_trace_wins() -> None:
    runs = per_run(_rows())
    https = runs[runs["flow"] == "tcp/443"]
    assert list(https["run_id"]) == [2, 3, 5] and list(https["kind"]) == ["trace", "check", "trace"]
    assert https["reason_hop"].tolist()[0] == 6 and pd.isna(https["reason_hop"].tolist()[1])
    assert list(runs[runs["flow"] == "icmp"]["word"]) == ["reachable", "unreachable", "reachable"]


def test_changes_and_availability() -> None:
    runs = per_run(_rows())
    changed = changes(runs)
    assert list(zip(changed["flow"], changed["word"], strict=True)) == [
        ("icmp", "reachable"), ("icmp", "unreachable"), ("icmp", "reachable"),
        ("tcp/443", "open"), ("tcp/443", "filtered"),
    ]  # fmt: skip
    table = availability(runs).set_index("flow")
    assert table.loc["tcp/443", "runs"] == 3 and table.loc["tcp/443", "now"] == "filtered"
    assert abs(table.loc["icmp", "through"] - 2 / 3) < 1e-9
