"""The Markdown report: golden files, tables that hold together, and values from the
record rendered inert (no HTML, no Markdown structure smuggled in through a name)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from reachtest.report.markdown import escape, render_markdown
from reachtest.report.view import build_view
from tests.unit.report.conftest import TARGET, sim_record
from tests.unit.report.test_record import SCENARIOS

GOLDEN = Path(__file__).parent / "golden"
EVIL = '<script>alert("x")</script> & |pipe| *bold* [link](http://x) `code`'


@pytest.mark.parametrize("name", ["drop", "prohibit", "reset"])
def test_the_markdown_report_matches_its_golden_file(name: str) -> None:
    text = render_markdown(build_view(sim_record(**SCENARIOS[name])))  # type: ignore[arg-type]
    path = GOLDEN / f"{name}.md"
    if os.environ.get("REACHTEST_REGOLD"):
        path.write_text(text)
    assert text == path.read_text(), f"{name}: differs from {path} (REACHTEST_REGOLD=1)"


def test_every_table_row_has_as_many_cells_as_its_header() -> None:
    text = render_markdown(build_view(sim_record(**SCENARIOS["drop"])))  # type: ignore[arg-type]
    header = 0
    for line in text.splitlines():
        if not line.startswith("|"):
            header = 0
            continue
        cells = line.count("|") - line.count("\\|")
        if header == 0:
            header = cells
        assert cells == header, line


def test_hostile_names_and_evidence_render_inert() -> None:
    record = copy.deepcopy(sim_record(**SCENARIOS["drop"]))  # type: ignore[arg-type]
    target = record["targets"][0]
    target["host"] = EVIL
    record["names"] = {TARGET: EVIL, "198.18.1.2": EVIL}
    finding = target["findings"][0]
    finding["summary"] = EVIL
    finding["evidence"][0]["responder"] = EVIL
    text = render_markdown(build_view(record))
    assert "<script" not in text and "</script" not in text
    assert "&lt;script&gt;" in text and "&amp;" in text and "&quot;" in text
    assert "[link](" not in text and "\\[link\\](" in text
    assert "\\|pipe\\|" in text and "\\*bold\\*" in text
    assert "`code`" not in text


@pytest.mark.parametrize("char", list("\\`*_[]|~"))
def test_escape_leaves_no_markdown_punctuation_bare(char: str) -> None:
    assert escape(f"a{char}b") == f"a\\{char}b"
