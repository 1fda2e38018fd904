"""Bounded work on any input (issue 30): nesting that would exhaust the recursion limit,
dates that do not exist, counts that drive a test for minutes, and damaged history rows
each end in a one-line error (exit 2) or a prompt answer, never in exit 4."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from reachtest.cli import main
from reachtest.errors import UsageError
from reachtest.history.store import HistoryStore
from reachtest.serve.webconfig import load_web_config
from tests.unit.report.conftest import sim_record


def test_a_deeply_nested_record_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nested too deeply" in err and err.count("\n") == 1


def test_deeply_nested_toml_and_yaml_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "deep.toml"
    config.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["config", "check", str(config)]) == 2
    assert "nested too deeply" in capsys.readouterr().err
    web = tmp_path / "web.yml"
    web.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(UsageError, match=r"nested too deeply|not valid YAML"):
        load_web_config(web)


def test_a_date_that_does_not_exist_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = sim_record()
    record["started"] = "2026-13-45T25:61:00.000000Z"
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(record))
    assert main(["show", str(path)]) == 2
    assert "at started" in capsys.readouterr().err


def test_since_out_of_the_range_of_dates_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "h.sqlite"
    with HistoryStore(history) as store:
        store.add_run(sim_record())
    for since in ("0001-01-01T00:00+14:00", "9999-12-31T23:59-14:00", "99999999999999999999d"):
        assert main(["history", "--history", str(history), "--since", since]) == 2
        assert "--since" in capsys.readouterr().err


def test_a_diff_of_records_with_huge_counts_answers_promptly(tmp_path: Path) -> None:
    """A hop with 10^12 probes (the schema allows it) ran Fisher's exact test for
    minutes, deaf to Ctrl-C; the chi-square test answers at once for such counts."""
    before, after = sim_record(), sim_record()
    for record, got in ((before, 10**12 - 10), (after, 9 * 10**11)):
        hop = record["targets"][0]["flows"][0]["hops"][0]
        hop["snt"], hop["rcv"], hop["limited"] = 10**12, got, 0
    paths = []
    for name, record in (("a.json", before), ("b.json", after)):
        (tmp_path / name).write_text(json.dumps(record))
        paths.append(str(tmp_path / name))
    done = subprocess.run(
        [sys.executable, "-m", "reachtest", "diff", *paths],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "loss" in done.stdout  # the change of loss is found and said


def test_a_damaged_row_in_the_history_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "h.sqlite"
    with HistoryStore(history) as store:
        first = store.add_run(sim_record())
        second = store.add_run(sim_record())
    with closing(sqlite3.connect(history)) as db:
        db.execute("UPDATE runs SET record = ? WHERE id = ?", ("[" * 50_000, second))
        db.commit()
    assert main(["diff", str(first), str(second), "--history", str(history)]) == 2
    err = capsys.readouterr().err
    assert f"run {second} is damaged" in err and err.count("\n") == 1


def test_json_output_escapes_every_control_and_bidi_character(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = sim_record()
    hostile = "a\x9b2Jb\u202eevil\u2028c\x7f"  # CSI, a right-to-left override, LS, DEL
    record["targets"][0]["host"] = hostile
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(record))
    assert main(["show", str(path), "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x9b\u202e\u2028\x7f"), out[:200]
    assert json.loads(out)["targets"][0]["host"] == hostile  # the same string, escaped


def test_a_path_in_a_notice_is_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = tmp_path / "rec.json"
    record.write_text(json.dumps(sim_record()))
    out = tmp_path / "x\x1b]0;PWNED\x07.md"
    assert main(["show", str(record), "--markdown", str(out)]) in (0, 1)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "wrote" in err, err


@pytest.mark.parametrize(
    "crafted",
    [
        "UPDATE services SET state = x'00ff'",
        "UPDATE services SET reached = 'maybe'",
        "UPDATE services SET reason_hop = 'x'",
        "UPDATE services SET target = x'ff'",
        "UPDATE runs SET started = '2026-99-99'",
    ],
)
def test_crafted_history_rows_are_one_line_for_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], crafted: str
) -> None:
    history = tmp_path / "h.sqlite"
    with HistoryStore(history) as store:
        store.add_run(sim_record())
        store.add_run(sim_record())
    with closing(sqlite3.connect(history)) as db:
        db.execute(crafted)
        db.commit()
    for args in (["history"], ["history", "--html", str(tmp_path / "h.html")]):
        assert main([*args, "--history", str(history)]) == 2
        err = capsys.readouterr().err
        assert "damaged" in err and err.count("\n") == 1, err
