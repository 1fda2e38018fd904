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
