"""Routers that rate-limit their ICMP errors, in every format: one finding per router with
the rate observed, the non-answers it explains marked ``limited`` (never loss), and the
engine's learned budgets in the record."""

from __future__ import annotations

import csv
import io

from reachtest.report.csvfile import render_csv
from reachtest.report.html import render_html
from reachtest.report.markdown import render_markdown
from reachtest.report.record import Record, validate_record
from reachtest.report.terminal import render_text
from reachtest.report.view import Mark, build_view
from tests.unit.report.conftest import router, sim_record


def limited_record() -> Record:
    """Every router answers one error a second after a burst of 6; r3 drops tcp/443."""
    special = {i: router(i, rate_per_s=1.0, burst=6) for i in range(1, 6)}
    special[3] = router(3, rate_per_s=1.0, burst=6, drop=frozenset({"tcp/443"}))
    return sim_record(special, rounds=10, interval_s=1.0, timeout_s=2.0)


def test_the_record_keeps_the_budgets_and_the_limited_counts_and_is_valid() -> None:
    record = limited_record()
    validate_record(record)
    budgets = {b["address"]: b for b in record["budgets"]}
    for i in range(1, 6):
        b = budgets[f"198.18.{i}.2"]
        assert b["limited"] and b["rate_per_s"] == 1.0 and b["burst"] == 6 and b["held"] > 0
    [target] = record["targets"]
    hops = [(f["flow"], h) for f in target["flows"] for h in f["hops"]]
    assert any(h["limited"] for _, h in hops)
    for _, h in hops:  # Snt and Rcv stay honest; the limited ones are among the lost
        assert 0 <= h["limited"] <= h["snt"] - h["rcv"]


def test_one_finding_per_router_covering_every_flow_and_no_loss() -> None:
    [target] = limited_record()["targets"]
    kinds = [f["kind"] for f in target["findings"]]
    assert "forwarding-loss" not in kinds
    rate = [f for f in target["findings"] if f["kind"] == "icmp-rate-limiting"]
    # A hop whose every probe was answered (pacing worked) needs no finding; the others
    # get exactly one, about the router, for all flows.
    hops = [f["first_hop"] for f in rate]
    assert len(hops) == len(set(hops)) and hops
    for f in rate:
        assert f["flow"] is None and f["responder"] == f"198.18.{f['first_hop']}.2"
        assert "rate-limits its ICMP errors" in f["summary"]
        assert "about 1 answer/s after a burst of 6" in f["note"]
    [block] = [f for f in target["findings"] if f["kind"] == "blocked-silently"]
    assert block["severity"] == "critical" and block["first_hop"] == 3
    assert "proven" in block["note"] and "not proven" not in block["note"]


def test_limited_cells_are_marked_limited_in_every_format() -> None:
    record = limited_record()
    view = build_view(record)
    [target] = view.targets
    marks = {c.mark for row in target.rows for c in row.cells if c is not None}
    assert Mark.LIMITED in marks
    # Never at the target's own TTL, never for the dropped flow's silence.
    last = target.rows[-1]
    assert all(c is None or c.mark is not Mark.LIMITED for c in last.cells)
    silent = [row.cells[target.flows.index("tcp/443")] for row in target.rows if row.ttl >= 4]
    assert all(c is not None and c.mark is Mark.SILENT for c in silent)
    limited_cells = {
        (flow, row.ttl)
        for row in target.rows
        for flow, c in zip(target.flows, row.cells, strict=True)
        if c is not None and c.mark is Mark.LIMITED
    }
    text = render_text(view, width=250)
    assert " limited" in text and "limited = forwarded" in text
    rows = list(csv.DictReader(io.StringIO(render_csv(record))))
    assert {(r["flow"], int(r["ttl"])) for r in rows if r["mark"] == "limited"} == limited_cells
    assert "**limited**" in render_markdown(view)
    html = render_html(view)
    assert 'class="cell m-limited"' in html and " limited)" in html


def test_loss_leaves_out_the_limited_non_answers_in_every_format() -> None:
    """A non-answer a rate limit explains is not loss: Loss% is 0 where every non-answer
    at a hop is a limit (mtr's 0% on such a path), Snt and Rcv stay as sent and answered,
    and each format says how many it left out."""
    record = limited_record()
    [target] = record["targets"]
    hops = {(f["flow"], h["ttl"]): h for f in target["flows"] for h in f["hops"]}
    explained = [k for k, h in hops.items() if h["limited"] and h["limited"] == h["snt"] - h["rcv"]]
    assert explained, "no hop whose every non-answer is a limit"
    for key in explained:
        assert hops[key]["loss_pct"] == 0 and hops[key]["rcv"] < hops[key]["snt"], key
    dropped = hops[("tcp/443", 4)]
    assert dropped["loss_pct"] == 100 and not dropped["limited"]
    view = build_view(record)
    [tv] = view.targets
    cells = {
        (flow, row.ttl): c
        for row in tv.rows
        for flow, c in zip(tv.flows, row.cells, strict=True)
        if c is not None
    }
    for key in explained:
        assert cells[key].loss_pct == 0 and cells[key].limited == hops[key]["limited"]
    total = sum(h["limited"] for h in hops.values())
    assert tv.limited_note is not None and f"leaves out {total} non-answers" in tv.limited_note
    text = render_text(view, width=250)
    assert f"Loss% leaves out {total} non-answers" in text
    assert "25.0%" not in text and "50.0%" not in text  # no cell reads a limit as loss
    rows = {(r["flow"], int(r["ttl"])): r for r in csv.DictReader(io.StringIO(render_csv(record)))}
    for key in explained:
        assert float(rows[key]["loss_pct"]) == 0 and int(rows[key]["limited"]) > 0
        assert int(rows[key]["snt"]) > int(rows[key]["rcv"])
    markdown = render_markdown(view)
    assert f"Loss% leaves out {total} non-answers" in markdown and " limited)" in markdown
    assert f"Loss% leaves out {total} non-answers" in render_html(view)
