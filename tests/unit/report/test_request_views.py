"""Requests traced after the handshake in the record and its views: the schema takes
them, a blocked one makes the run not ok (exit 1), and every renderer shows each request
as a verdict beside the flows (its name, state, reason, where, the control)."""

from __future__ import annotations

import copy
from typing import Any

from reachtest.report.html import render_html
from reachtest.report.markdown import render_markdown
from reachtest.report.record import run_ok, validate_record
from reachtest.report.terminal import render_text
from reachtest.report.view import build_view
from tests.unit.report.conftest import sim_record

BLOCKED = {
    "flow": "tls/443", "name": "blocked.example", "control": "example.com",
    "state": "blocked-after-handshake", "reason": "reset", "box_hop": 3,
    "box_address": "198.18.3.2", "on_path": False, "by_name": True, "distance": 6,
    "transport": "raw", "answer": None,
}  # fmt: skip


def with_requests(*requests: dict[str, Any]) -> dict[str, Any]:
    record = copy.deepcopy(sim_record())
    record["targets"][0]["requests"] = list(requests)
    return record


def test_a_blocked_request_is_a_verdict_everywhere_and_fails_the_run() -> None:
    record = with_requests(BLOCKED)
    validate_record(record)
    assert run_ok(sim_record()) and not run_ok(record)
    view = build_view(record)
    line = view.targets[0].verdicts[-1]
    assert (line.flow, line.state, line.ok) == ("tls/443 blocked.example", BLOCKED["state"], False)
    assert line.detail == "reset in-path at hop 3 (198.18.3.2); control example.com answered"
    for text in (render_text(view), render_markdown(view), render_html(view)):
        assert "tls/443 blocked.example" in text and "reset in-path at hop 3" in text


def test_an_answered_request_passes() -> None:
    answered = BLOCKED | {"state": "answered", "reason": None, "box_hop": None,
                          "box_address": None, "on_path": None, "by_name": None}  # fmt: skip
    record = with_requests(answered)
    validate_record(record)
    assert run_ok(record)
    assert build_view(record).targets[0].verdicts[-1].ok


def test_a_request_blocked_after_a_change_is_a_regression_in_the_diff() -> None:
    from reachtest.analysis.diff import diff_runs
    from reachtest.report.diffview import RENDER

    answered = BLOCKED | {"state": "answered", "reason": None, "box_hop": None,
                          "box_address": None, "on_path": None, "by_name": None}  # fmt: skip
    diff = diff_runs(with_requests(answered), with_requests(BLOCKED))
    (change,) = [s for s in diff.services if s.flow == "tls/443 blocked.example"]
    assert (change.before, change.after, change.change) == (
        "answered", "blocked-after-handshake", "regression",
    )  # fmt: skip
    assert change.stop_after == "reset in-path at hop 3 (198.18.3.2)"
    assert diff.regressions == (change,)
    text = RENDER["text"](diff)
    assert "tls/443 blocked.example" in text and "answered -> blocked-after-handshake" in text


def ttls(*outcomes: tuple[str, str | None]) -> list[dict[str, Any]]:
    return [
        {"ttl": ttl, "outcome": outcome, "responder": responder, "rtt_ms": 0.5 if responder
         else None, "late_answer": False, "proof": False}
        for ttl, (outcome, responder) in enumerate(outcomes, start=1)
    ]  # fmt: skip


RESET_AT_4 = ttls(
    ("time-exceeded", "198.18.1.2"), ("time-exceeded", "198.18.2.2"),
    ("time-exceeded", "198.18.3.2"), ("reset", "198.18.6.2"), ("reset", "198.18.6.2"),
)  # fmt: skip


def test_a_request_is_a_column_of_the_hop_matrix_and_a_lane_of_the_diagram() -> None:
    """Its cells: pass up to the box, then forged (a reset in the server's name); its
    lane ends at the box's hop with the verdict's own words; CSV rows per TTL."""
    import csv
    import io

    from reachtest.report.csvfile import render_csv
    from reachtest.report.html import diagram

    record = with_requests(BLOCKED | {"ttls": RESET_AT_4})
    validate_record(record)
    view = build_view(record).targets[0]
    column = view.flows.index("tls/443")
    marks = {row.ttl: str(row.cells[column].mark) for row in view.rows if row.cells[column]}
    assert marks == {1: "pass", 2: "pass", 3: "pass", 4: "forged", 5: "forged"}
    (lane,) = [lane for lane in diagram(view).lanes if lane.flow == "tls/443"]
    hop3 = next(n for n in diagram(view).nodes if n.ttl == 3)
    assert (lane.end_x, lane.mark) == (hop3.x, "forged")
    assert lane.words.startswith("reset in-path at hop 3 (198.18.3.2)")
    rows = [r for r in csv.DictReader(io.StringIO(render_csv(record))) if r["flow"] == "tls/443"]
    assert [(r["ttl"], r["mark"], r["kinds"]) for r in rows][-2:] == [
        ("4", "forged", "reset=1"), ("5", "forged", "reset=1"),
    ]  # fmt: skip
    assert {(r["protocol"], r["port"], r["stop_hop"]) for r in rows} == {("tls", "443", "3")}
    for text in (render_text(build_view(record)), render_markdown(build_view(record))):
        assert "forged" in text


def test_a_dropped_request_ends_silent_at_the_box_and_an_answered_one_open() -> None:
    from reachtest.report.html import diagram

    dropped = BLOCKED | {"reason": "dropped", "ttls": RESET_AT_4[:3] + ttls(
        ("silent", None), ("silent", None), ("silent", None), ("silent", None))[3:5]}  # fmt: skip
    lanes = diagram(build_view(with_requests(dropped)).targets[0]).lanes
    assert [lane.mark for lane in lanes if lane.flow == "tls/443"] == ["silent"]
    answered = BLOCKED | {"state": "answered", "reason": None, "box_hop": None,
                          "box_address": None, "on_path": None, "by_name": None,
                          "ttls": RESET_AT_4[:3]}  # fmt: skip
    view = build_view(with_requests(answered)).targets[0]
    (lane,) = [lane for lane in diagram(view).lanes if lane.flow == "tls/443"]
    assert lane.mark == "open" and lane.words.startswith("answered (the server at hop 6)")
