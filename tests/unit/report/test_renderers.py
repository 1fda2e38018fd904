"""The view and its renderers: marks where each flow stops, the terminal report (golden
files, widths), the same report from a saved record, and the CSV file."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from reachtest.report.csvfile import COLUMNS, NUMBERS, render_csv
from reachtest.report.record import dumps
from reachtest.report.terminal import LEVELS, choose_level, render_text
from reachtest.report.view import Mark, build_view
from tests.unit.report.conftest import router, sim_record
from tests.unit.report.test_record import SCENARIOS

GOLDEN = Path(__file__).parent / "golden"


def marks(name: str, flow: str) -> list[tuple[int, Mark | None]]:
    view = build_view(sim_record(**SCENARIOS[name]))  # type: ignore[arg-type]
    target = view.targets[0]
    column = target.flows.index(flow)
    return [(row.ttl, row.cells[column] and row.cells[column].mark) for row in target.rows]  # type: ignore[union-attr]


def test_marks_show_where_a_dropped_service_goes_silent() -> None:
    assert marks("drop", "tcp/443") == [
        (1, Mark.PASS), (2, Mark.PASS), (3, Mark.PASS),
        (4, Mark.SILENT), (5, Mark.SILENT), (6, Mark.SILENT),
    ]  # fmt: skip
    assert marks("drop", "tcp/80")[-1] == (6, Mark.OPEN)
    assert marks("drop", "icmp")[-1] == (6, Mark.REPLY)
    assert marks("drop", "udp/53")[-1] == (6, Mark.OPEN)


@pytest.mark.parametrize(
    ("name", "ttl", "mark"),
    [
        ("prohibit", 3, Mark.PROHIBITED),
        ("reset", 5, Mark.FORGED),
        ("closed", 6, Mark.CLOSED),
    ],
)
def test_marks_show_how_a_service_is_stopped(name: str, ttl: int, mark: Mark) -> None:
    """Up to the stop every cell says pass; from there on (probes sent before the answer
    came back) every cell says how it was stopped."""
    got = marks(name, "tcp/443")
    first = next(i for i, (_, m) in enumerate(got) if m is not Mark.PASS)
    assert got[first] == (ttl, mark), got
    assert all(m is mark for _, m in got[first:]), got


def test_rows_end_at_the_target_and_list_every_responder() -> None:
    view = build_view(sim_record(**SCENARIOS["silent-hop"]))  # type: ignore[arg-type]
    rows = view.targets[0].rows
    assert [r.ttl for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[1].responders == ()
    assert [(r.address, r.name) for r in rows[0].responders] == [("198.18.1.2", "r1.lab.test")]


def _golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("REACHTEST_REGOLD"):
        path.write_text(text)
    assert text == path.read_text(), f"{name}: report differs from {path} (REACHTEST_REGOLD=1)"


@pytest.mark.parametrize("name", ["drop", "prohibit", "reset"])
def test_the_text_report_matches_its_golden_file(name: str) -> None:
    _golden(name, render_text(build_view(sim_record(**SCENARIOS[name]))))  # type: ignore[arg-type]


def test_the_report_from_a_saved_record_is_the_same(tmp_path: Path) -> None:
    record = sim_record(**SCENARIOS["drop"])  # type: ignore[arg-type]
    saved = tmp_path / "run.json"
    saved.write_text(dumps(record))
    again = json.loads(saved.read_text())
    assert render_text(build_view(again)) == render_text(build_view(record))


@pytest.mark.parametrize("width", [60, 80, 100, 140, 200, 260])
def test_the_report_fits_the_terminal_and_gets_richer_when_wider(width: int) -> None:
    view = build_view(sim_record(**SCENARIOS["drop"]))  # type: ignore[arg-type]
    text = render_text(view, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    level = choose_level(view.targets, width)
    names = list(LEVELS)
    assert names.index(level) <= names.index(choose_level(view.targets, width - 20))
    if level != "minimal":
        assert "Loss%" in text
    assert "silent" in text and "Verdicts" in text and "Findings" in text


def test_colour_only_when_asked() -> None:
    view = build_view(sim_record(**SCENARIOS["drop"]))  # type: ignore[arg-type]
    assert "\x1b[" not in render_text(view)
    assert "\x1b[" in render_text(view, color=True)


def test_csv_has_one_row_per_target_flow_hop_and_numeric_columns() -> None:
    record = sim_record(**SCENARIOS["drop"])  # type: ignore[arg-type]
    frame = pd.read_csv(io.StringIO(render_csv(record)))
    assert tuple(frame.columns) == COLUMNS
    hops = sum(len(f["hops"]) for t in record["targets"] for f in t["flows"])
    assert len(frame) == hops
    assert not frame.duplicated(["address", "flow", "ttl"]).any()
    for column in NUMBERS:
        assert pd.api.types.is_numeric_dtype(frame[column]), column
    silent = frame[(frame["flow"] == "tcp/443") & (frame["ttl"] == 4)].iloc[0]
    assert silent["mark"] == "silent" and silent["loss_pct"] == 100.0
    assert pd.isna(silent["avg_ms"]) and silent["state"] == "filtered"
    first = frame[(frame["flow"] == "icmp") & (frame["ttl"] == 1)].iloc[0]
    assert first["responder"] == "198.18.1.2" and first["responder_name"] == "r1.lab.test"
    assert first["kinds"] == "time-exceeded=5"


def test_names_may_be_missing() -> None:
    view = build_view(sim_record(names={}, special={3: router(3, drop=frozenset({"tcp/443"}))}))
    assert all(r.name is None for row in view.targets[0].rows for r in row.responders)


def test_unrelated_packets_are_counted_apart_from_stray_replies() -> None:
    record = sim_record()
    record["totals"]["strays"] = {"unknown-probe": 2, "unrelated-traffic": 12}
    line = build_view(record).totals_line
    assert "stray replies: 2 unknown-probe" in line and "12 unrelated packets ignored" in line
    record["totals"]["strays"] = {"unrelated-traffic": 3}
    assert "stray replies: none, 3 unrelated packets ignored" in build_view(record).totals_line


def test_the_kernels_drops_are_told_only_when_there_are_some() -> None:
    record = sim_record()
    assert "dropped by the kernel" not in render_text(build_view(record), 200)
    record["totals"]["kernel_dropped"] = 37
    text = render_text(build_view(record), 200)
    assert "37 packets dropped by the kernel before reachtest read them" in " ".join(text.split())
