"""The HTML report: golden files (charts aside, they are checked on their own), values
from the record rendered inert, nothing fetched from elsewhere, the path diagram and the
divergence row where the flows part, and charts that are valid, themable, reproducible."""

from __future__ import annotations

import copy
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reachtest.report.charts import latency_svg
from reachtest.report.html import diagram, divergence, render_html
from reachtest.report.view import Mark, build_view
from tests.unit.report.conftest import TARGET, sim_record
from tests.unit.report.test_record import SCENARIOS

GOLDEN = Path(__file__).parent / "golden"
EVIL = "<script>alert(\"x\")</script> & 'q' <img src=x onerror=alert(1)>"
CHART = re.compile(r'<svg aria-label="Latency[^"]*".*?</svg>', re.S)
SVG = "{http://www.w3.org/2000/svg}"


def html_of(name: str) -> str:
    return render_html(build_view(sim_record(**SCENARIOS[name])))  # type: ignore[arg-type]


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(text: str) -> Tags:
    tags = Tags()
    tags.feed(text)
    return tags


@pytest.mark.parametrize("name", ["drop", "prohibit", "reset"])
def test_the_html_report_matches_its_golden_file(name: str) -> None:
    text = CHART.sub("<svg><!-- chart --></svg>", html_of(name))
    path = GOLDEN / f"{name}.html"
    if os.environ.get("REACHTEST_REGOLD"):
        path.write_text(text)
    assert text == path.read_text(), f"{name}: differs from {path} (REACHTEST_REGOLD=1)"


def test_the_page_shows_verdict_cards_and_a_coloured_hop_matrix() -> None:
    tags = parsed(html_of("drop"))
    cards = [
        a["class"] for t, a in tags.tags if t == "div" and "card" in (a.get("class") or "").split()
    ]
    assert cards == [
        "card host ok", "card service ok", "card service bad", "card service ok",
        "card service ok",
    ]  # fmt: skip
    cells = [
        a["class"]
        for t, a in tags.tags
        if t == "td" and (a.get("class") or "").startswith("cell m-")
    ]
    # 6 hops x 4 flows; tcp/443 is silent from hop 4 on, the target's row answers.
    assert len(cells) == 24
    assert cells.count("cell m-silent") == 3 and cells.count("cell m-pass") == 5 * 3 + 3
    assert cells.count("cell m-open") == 2 and cells.count("cell m-reply") == 1
    diverging = [a for t, a in tags.tags if t == "tr" and a.get("class") == "diverge"]
    assert len(diverging) == 1


def test_the_rows_part_where_the_flows_first_get_different_answers() -> None:
    view = build_view(sim_record(**SCENARIOS["drop"]))  # type: ignore[arg-type]
    assert divergence(view.targets[0].rows) == 4
    view = build_view(sim_record(**SCENARIOS["prohibit"]))  # type: ignore[arg-type]
    assert divergence(view.targets[0].rows) == 3  # r2 rejects what reaches past it
    view = build_view(sim_record(**SCENARIOS["clean"]))  # type: ignore[arg-type]
    # Only the target's row differs: the echo reply next to the services' answers.
    assert divergence(view.targets[0].rows) == 6


def test_the_path_diagram_draws_each_flow_to_where_it_stops() -> None:
    view = build_view(sim_record(**SCENARIOS["drop"]))  # type: ignore[arg-type]
    d = diagram(view.targets[0])
    assert [n.ttl for n in d.nodes] == [0, 1, 2, 3, 4, 5, 6]
    assert d.nodes[-1].target and d.nodes[-1].label == TARGET
    by_flow = {lane.flow: lane for lane in d.lanes}
    x = {n.ttl: n.x for n in d.nodes}
    assert by_flow["tcp/443"].end_x == x[3] and by_flow["tcp/443"].mark == Mark.PASS
    assert by_flow["tcp/443"].silent_x == x[4]
    assert by_flow["icmp"].end_x == x[6] and by_flow["icmp"].mark == Mark.REPLY
    assert by_flow["tcp/80"].mark == Mark.OPEN and by_flow["tcp/80"].silent_x is None
    rejected = diagram(build_view(sim_record(**SCENARIOS["prohibit"])).targets[0])  # type: ignore[arg-type]
    lane = next(lane for lane in rejected.lanes if lane.flow == "tcp/443")
    assert lane.mark == Mark.PROHIBITED and lane.end_x == x[3] and lane.silent_x is None
    # r2 rejects the probes of TTL 3: the words of the verdict card, not "prohib at hop 3"
    assert lane.words == "rejected by hop 2 (198.18.2.2)"


def test_hostile_values_render_inert() -> None:
    record = copy.deepcopy(sim_record(**SCENARIOS["drop"]))  # type: ignore[arg-type]
    target = record["targets"][0]
    target["host"] = EVIL
    record["names"] = {TARGET: EVIL, "198.18.1.2": EVIL}
    record["command"] = ["reachtest", "trace", EVIL]
    finding = target["findings"][0]
    finding["summary"] = EVIL
    finding["evidence"][0]["responder"] = EVIL
    text = render_html(build_view(record))
    tags = parsed(text)
    assert not [t for t, _ in tags.tags if t in ("script", "img")]
    assert not [a for _, attrs in tags.tags for a in attrs if a.startswith("on")]
    shown = "".join(tags.text)
    assert shown.count('<script>alert("x")</script>') >= 5  # shown as text, every time
    assert "&lt;script&gt;" in text and "&amp;" in text and "&#39;q&#39;" in text


def test_the_page_fetches_nothing_from_anywhere() -> None:
    text = html_of("drop")
    tags = parsed(text)
    refs = [
        (tag, key, value)
        for tag, attrs in tags.tags
        for key, value in attrs.items()
        if key in ("src", "href", "xlink:href", "action", "data", "srcset", "poster")
        and value is not None
        and not value.startswith("#")
    ]
    assert refs == []
    assert not [t for t, _ in tags.tags if t in ("script", "link", "iframe", "object", "embed")]
    assert not re.findall(r"url\((?!#)", text) and "@import" not in text


def test_the_chart_is_valid_svg_themable_and_reproducible() -> None:
    view = build_view(sim_record(**SCENARIOS["drop"]))  # type: ignore[arg-type]
    svg = latency_svg(view.targets[0], "0")
    assert svg == latency_svg(view.targets[0], "0")
    assert svg != latency_svg(view.targets[0], "1")  # another chart: other element ids
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("viewBox") and root.get("width") is None
    texts = {"".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")}
    assert {"icmp", "tcp/443", "tcp/80", "udp/53", "hop (TTL)", "loss %"} <= texts
    assert "currentColor" in svg and "#010203" not in svg


def test_every_target_gets_its_section_and_chart() -> None:
    record = copy.deepcopy(sim_record(**SCENARIOS["drop"]))  # type: ignore[arg-type]
    second = copy.deepcopy(record["targets"][0])
    second["host"] = "other"
    record["targets"].append(second)
    text = render_html(build_view(record))
    assert text.count('<section class="target"') == 2
    assert len(CHART.findall(text)) == 2
    assert "<title>reachtest: server, other</title>" in text


def test_a_long_run_gets_a_chart_over_time_where_each_flow_ends() -> None:
    """From the record's downsampled series: each flow at the hop where it stops (the
    target, or for tcp/443 dropped after hop 3, hop 3); a short run gets none."""
    from reachtest.report.charts import series_svg

    short = build_view(sim_record(**SCENARIOS["drop"]))  # type: ignore[arg-type]
    assert series_svg(short.targets[0], "0") is None
    assert "Over time" not in render_html(short)
    view = build_view(sim_record(**SCENARIOS["drop"], rounds=400))  # type: ignore[arg-type]
    lines = {s.flow: s for s in view.targets[0].series}
    assert (lines["icmp"].ttl, lines["tcp/443"].ttl, lines["udp/53"].ttl) == (6, 3, 6)
    assert lines["icmp"].rounds == tuple(range(0, 400, 8))  # 64 buckets at most: 8 rounds each
    assert set(lines["icmp"].loss_pct) == {0.0}
    svg = series_svg(view.targets[0], "0")
    assert svg is not None
    root = ET.fromstring(svg)
    texts = {"".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")}
    assert {"icmp (hop 6)", "tcp/443 (hop 3)", "round", "loss %"} <= texts
    page = render_html(view)
    assert "Over time, where each flow ends" in page and svg in page
