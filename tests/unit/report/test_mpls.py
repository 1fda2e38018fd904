"""MPLS label stacks (RFC 4950, in the time-exceeded of a router inside an LSP) go from
the engine's outcomes into the run record (each sample and per hop, valid against the
schema) and into every report: terminal and Markdown as mtr -e shows them, the HTML hop
cell, and a CSV column. (Parsing the extension is checked against scapy-built packets
in tests/unit/packet/test_build_parse.py.)"""

from __future__ import annotations

import csv
import io

from reachtest.model import MplsLabel
from reachtest.report.csvfile import render_csv
from reachtest.report.html import render_html
from reachtest.report.markdown import render_markdown
from reachtest.report.record import validate_record
from reachtest.report.terminal import render_text
from reachtest.report.view import build_view
from tests.unit.report.conftest import router, sim_record

ONE = (MplsLabel(label=24001, tc=0, bottom=True, ttl=1),)
TWO = (
    MplsLabel(label=16005, tc=5, bottom=False, ttl=254),
    MplsLabel(label=3, tc=0, bottom=True, ttl=1),
)


def test_label_stacks_reach_the_record_and_every_report() -> None:
    record = sim_record({2: router(2, mpls=ONE), 3: router(3, mpls=TWO)})
    validate_record(record)
    flow = record["targets"][0]["flows"][0]
    hops = {h["ttl"]: h for h in flow["hops"]}
    assert hops[2]["mpls"] == [
        {"responder": "198.18.2.2", "count": hops[2]["rcv"],
         "stack": [{"label": 24001, "tc": 0, "s": True, "ttl": 1}]},
    ]  # fmt: skip
    assert [e["label"] for e in hops[3]["mpls"][0]["stack"]] == [16005, 3]
    assert "mpls" not in hops[1] and "mpls" not in hops[4]
    answered = [s for s in hops[2]["samples"] if s["responder"]]
    assert answered and all(s["mpls"][0]["label"] == 24001 for s in answered)
    assert all(0 < s["reply_ttl"] <= 255 for s in answered)

    view = build_view(record)
    one = "[MPLS: L=24001 TC=0 S=1 TTL=1]"
    two = "[MPLS: L=16005 TC=5 S=0 TTL=254] [MPLS: L=3 TC=0 S=1 TTL=1]"
    text = render_text(view, width=200)
    assert one in text and two not in text  # one label a line in the terminal
    assert "[MPLS: L=16005 TC=5 S=0 TTL=254]" in text and "[MPLS: L=3 TC=0 S=1 TTL=1]" in text
    markdown = render_markdown(view)  # brackets escaped: they would start a link

    def md(text: str) -> str:
        return text.replace("[", "\\[").replace("]", "\\]")

    assert md(one) in markdown and md(two) in markdown
    assert one in render_html(view)
    rows = list(csv.DictReader(io.StringIO(render_csv(record))))
    assert {r["mpls"] for r in rows if r["ttl"] == "2"} == {one}
    assert {r["mpls"] for r in rows if r["ttl"] == "1"} == {""}


def test_a_record_without_labels_shows_none() -> None:
    record = sim_record()
    text = render_text(build_view(record), width=200)
    assert "MPLS" not in text
