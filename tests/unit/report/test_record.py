"""The run record: valid against the shipped schema, faithful to the analysis, loadable,
and the exit code it implies."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from reachtest.analysis.accumulate import SAMPLES_PER_HOP, SERIES_BUCKETS
from reachtest.errors import UsageError
from reachtest.report.record import (
    dumps,
    load_record,
    parse_record,
    run_ok,
    schema,
    validate_record,
)
from tests.unit.report.conftest import TARGET, router, sim_record

SCENARIOS = {
    "clean": {},
    "drop": {"special": {3: router(3, drop=frozenset({"tcp/443"}))}},
    "prohibit": {"special": {2: router(2, prohibit=frozenset({"tcp/443"}))}},
    "reset": {"special": {4: router(4, reset=frozenset({"tcp/443"}))}},
    "closed": {"open_": frozenset({"icmp", "tcp/80", "udp/53"}), "closed": frozenset({"tcp/443"})},
    "silent-hop": {"special": {2: router(2, silent=True)}},
    "ping-blocked": {"special": {5: router(5, drop=frozenset({"icmp"}))}},
}


def flow(record: dict[str, object], label: str) -> dict[str, object]:
    target = record["targets"][0]  # type: ignore[index]
    return next(f for f in target["flows"] if f["flow"] == label)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_record_is_valid_json_against_the_shipped_schema(name: str) -> None:
    record = sim_record(**SCENARIOS[name])  # type: ignore[arg-type]
    validate_record(json.loads(dumps(record)))


def test_the_schema_is_itself_valid_draft_2020_12() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema())


def test_the_record_holds_the_runs_facts() -> None:
    record = sim_record(**SCENARIOS["drop"])  # type: ignore[arg-type]
    assert record["schema_version"] == 2 and record["tool"]["name"] == "reachtest"
    assert record["started"] == "2026-11-21T10:00:00.000000Z"
    assert record["params"]["rounds"] == 5 and record["rounds_done"] == 5
    assert record["flows"] == ["icmp", "tcp/443", "tcp/80", "udp/53"]
    target = record["targets"][0]
    assert (target["host"], target["address"], target["name"]) == ("server", TARGET, "srv.lab.test")
    assert target["reachable"] and target["distance"] == 6
    blocked = flow(record, "tcp/443")
    assert blocked["verdict"]["state"] == "filtered"
    assert blocked["path"]["stop"] == "silent" and blocked["path"]["last_hop"] == 3
    hop1 = blocked["hops"][0]
    assert hop1["ttl"] == 1 and hop1["snt"] == 5 and hop1["rcv"] == 5
    assert hop1["responders"] == [{"address": "198.18.1.2", "count": 5}]
    assert hop1["icmp"] == [{"type": 11, "code": 0, "count": 5}]
    assert [s["round"] for s in hop1["samples"]] == [0, 1, 2, 3, 4]
    assert [(b["round"], b["snt"], b["rcv"]) for b in hop1["series"]] == [
        (r, 1, 1) for r in range(5)
    ]
    silent = next(h for h in blocked["hops"] if h["ttl"] == 4)
    assert silent["loss_pct"] == 100.0 and silent["avg_ms"] is None
    assert all(s["rtt_ms"] is None and s["kind"] == "timeout" for s in silent["samples"])
    finding = target["findings"][0]
    assert finding["kind"] == "blocked-silently" and finding["flow"] == "tcp/443"
    assert finding["first_hop"] == 3 and "silently dropped after hop 3" in finding["summary"]
    assert record["names"] == {"198.18.1.2": "r1.lab.test", TARGET: "srv.lab.test"}


def test_prohibited_codes_are_kept_per_hop() -> None:
    record = sim_record(**SCENARIOS["prohibit"])  # type: ignore[arg-type]
    hop = next(
        h for h in flow(record, "tcp/443")["hops"] if h["ttl"] == 3
    )  # r2 rejects what it forwards
    assert hop["icmp"] == [{"type": 3, "code": 13, "count": 5}]
    assert hop["responders"] == [{"address": "198.18.2.2", "count": 5}]
    assert flow(record, "tcp/443")["verdict"]["reason"] == "admin-prohibited"


def test_a_silent_probe_has_no_responder_in_its_sample() -> None:
    record = sim_record(**SCENARIOS["drop"])  # type: ignore[arg-type]
    hops = flow(record, "tcp/443")["hops"]
    silent = [s for h in hops for s in h["samples"] if s["kind"] == "timeout"]
    answered = [s for h in hops for s in h["samples"] if s["kind"] != "timeout"]
    assert silent and all(s["responder"] is None for s in silent)
    assert answered and all(s["responder"] for s in answered)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("clean", True),
        ("drop", False),
        ("prohibit", False),
        ("reset", False),
        ("closed", False),
        ("silent-hop", True),
        ("ping-blocked", True),
    ],
)
def test_run_ok_means_every_host_reached_and_every_service_open(name: str, ok: bool) -> None:
    assert run_ok(sim_record(**SCENARIOS[name])) is ok  # type: ignore[arg-type]


def test_a_host_not_reached_is_not_ok() -> None:
    everything = frozenset({"icmp", "tcp/443", "tcp/80", "udp/53"})
    record = sim_record({3: router(3, drop=everything)})
    assert not record["targets"][0]["reachable"]
    assert not run_ok(record)


def _broken(change: str) -> dict[str, object]:
    record = copy.deepcopy(sim_record())
    if change == "version":
        record["schema_version"] = 99
    elif change == "missing":
        del record["targets"][0]["flows"][0]["verdict"]
    elif change == "enum":
        record["targets"][0]["flows"][0]["hops"][0]["kinds"][0]["kind"] = "teapot"
    elif change == "extra":
        record["surprise"] = 1
    return record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("version", "schema_version 99 is not supported"),
        ("missing", "at targets/0/flows/0: 'verdict' is a required property"),
        ("enum", "at targets/0/flows/0/hops/0/kinds/0/kind: 'teapot' is not one of"),
        ("extra", "Additional properties are not allowed ('surprise'"),
    ],
)
def test_a_broken_record_is_refused_with_where_and_why(change: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_record(_broken(change))
    assert message in str(caught.value)


def test_load_record_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read run record .*No such file"):
        load_record(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1,')
    with pytest.raises(UsageError, match=r"is not JSON: .* line 1"):
        load_record(str(bad))
    good = tmp_path / "good.json"
    good.write_text(dumps(sim_record()))
    assert load_record(str(good)) == json.loads(dumps(sim_record()))


def test_a_flow_without_any_outcome_is_not_ok_and_shown_as_no_data() -> None:
    """A run stopped before a flow's first outcome: that flow has not answered."""
    from reachtest.report.view import build_view

    record = sim_record()
    assert run_ok(record)
    record["targets"][0]["flows"] = [
        f for f in record["targets"][0]["flows"] if f["flow"] != "tcp/443"
    ]
    validate_record(record)
    assert not run_ok(record)
    view = build_view(record).targets[0]
    assert view.flows == ("icmp", "tcp/443", "tcp/80", "udp/53")
    missing = view.verdicts[1]
    assert (missing.flow, missing.state, missing.ok) == ("tcp/443", "no data", False)
    assert all(row.cells[1] is None for row in view.rows)


def test_the_record_is_flat_in_the_number_of_rounds() -> None:
    """Counts cover every probe; samples are the most recent SAMPLES_PER_HOP and the
    series at most SERIES_BUCKETS buckets, so ten times the rounds is about the same size."""
    short, long = sim_record(rounds=300), sim_record(rounds=3000)
    assert len(dumps(long)) < 1.1 * len(dumps(short))
    assert long["rounds_done"] == 3000 and long["samples_per_hop"] == SAMPLES_PER_HOP
    hop1 = flow(long, "icmp")["hops"][0]
    assert hop1["snt"] == hop1["rcv"] == 3000
    assert [s["round"] for s in hop1["samples"]] == list(range(3000 - SAMPLES_PER_HOP, 3000))
    series = hop1["series"]
    assert len(series) <= SERIES_BUCKETS and long["series_rounds"] == 64
    assert [b["round"] for b in series] == list(range(0, 3000, 64))
    assert sum(b["snt"] for b in series) == 3000 and series[-1]["snt"] == 3000 % 64
    assert all(b["best_ms"] <= b["avg_ms"] <= b["wrst_ms"] for b in series)


def _as_version_1(record: dict[str, object]) -> dict[str, object]:
    """What reachtest 0.x wrote: version 1, no series (every sample kept)."""
    old = copy.deepcopy(record)
    old["schema_version"] = 1
    del old["samples_per_hop"], old["series_rounds"]
    for target in old["targets"]:  # type: ignore[attr-defined]
        for f in target["flows"]:
            for hop in f["hops"]:
                del hop["series"]
    return old


def test_a_version_1_record_is_read_and_upgraded(tmp_path: Path) -> None:
    """show and diff read records of schema version 1: the upgrade makes each hop's
    series from its samples (all of them, in version 1), equal to what a new run keeps."""
    from reachtest.cli import main

    record = sim_record(**SCENARIOS["drop"], rounds=80)  # type: ignore[arg-type]
    old = _as_version_1(record)
    upgraded = parse_record(dumps(old), "old.json")
    assert upgraded["schema_version"] == 2 and upgraded["series_rounds"] == 2
    every = [h for t in record["targets"] for f in t["flows"] for h in f["hops"]]
    assert upgraded["samples_per_hop"] == max(len(h["samples"]) for h in every) >= 80
    assert flow(upgraded, "tcp/443")["hops"] == flow(record, "tcp/443")["hops"]
    path = tmp_path / "old.json"
    path.write_text(dumps(_as_version_1(record)))
    assert main(["show", str(path), "--format", "json", "-o", str(tmp_path / "new.json")]) == 1
    assert json.loads((tmp_path / "new.json").read_text())["schema_version"] == 2
    assert main(["diff", str(path), str(path)]) == 0


def test_a_future_record_version_is_refused_in_one_line(tmp_path: Path) -> None:
    record = sim_record()
    record["schema_version"] = 3
    with pytest.raises(UsageError, match="schema_version 3 is not supported"):
        parse_record(dumps(record), "new.json")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no-samples", "at targets/0/flows/0/hops/0: 'samples' is a required property"),
        ("targets", "at targets: 5 is not of type 'array'"),
        ("round", "at targets/0/flows/0/hops/0/samples/0/round: 'x' is not of type 'integer'"),
    ],
)
def test_a_broken_version_1_record_is_refused_where_it_breaks(breakage: str, message: str) -> None:
    """The upgrade leaves what it cannot read as it is, so the schema names the place."""
    old = _as_version_1(sim_record())
    hop = old["targets"][0]["flows"][0]["hops"][0]  # type: ignore[index]
    if breakage == "no-samples":
        del hop["samples"]
    elif breakage == "targets":
        old["targets"] = 5
    else:
        hop["samples"][0]["round"] = "x"
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_record(dumps(old), "old.json")
