"""Path MTU (engine/mtu.py) off the network: a udp/53 probe is a DNS query padded to
exactly its size, and what is found becomes the record's ``mtu`` entry, its finding
(black hole: critical, with the fix; named: a warning) and the headline."""

from __future__ import annotations

import copy

import pytest

from reachtest.engine.mtu import IP_HEADER, TRANSPORT_HEADER, PathMtu, SizeOutcome, _payload
from reachtest.report.record import add_mtu, run_ok, validate_record
from reachtest.report.view import build_view
from tests.unit.report.conftest import sim_record


@pytest.mark.parametrize(
    ("size", "v6"),
    [(s, False) for s in (576, 1280, 1400, 1500, 9000)]
    + [(s, True) for s in (1280, 1400, 1500, 9000)],
)
def test_a_dns_probe_is_a_padded_query_of_the_size(size: int, v6: bool) -> None:
    import dns.message

    body = _payload("udp", 53, size, v6)
    assert len(body) + IP_HEADER[6 if v6 else 4] + TRANSPORT_HEADER["udp"] == size
    query = dns.message.from_wire(body)
    assert query.question[0].name.to_text() == "reachtest.invalid."
    assert len(_payload("udp", 123, size, v6)) == len(body)  # other ports: zeros


def black_hole(flow: str = "icmp") -> PathMtu:
    sweep = tuple(
        SizeOutcome(size=1401, ttl=t, outcome="time-exceeded" if t <= 3 else "silent",
                    responder=f"198.18.{t}.2" if t <= 3 else None)
        for t in range(1, 7)
    )  # fmt: skip
    return PathMtu(
        flow=flow, mtu=1400, local_mtu=1500, limit=1401, black_hole=True, hop=3,
        address="198.18.3.2", outcomes=(SizeOutcome(size=1500, ttl=64, outcome="silent"),
                                        *sweep),
    )  # fmt: skip


def test_a_black_hole_is_a_critical_finding_with_the_fix_and_fails_the_run() -> None:
    record = copy.deepcopy(sim_record())
    target = record["targets"][0]
    add_mtu(target, black_hole())
    validate_record(record)
    (finding,) = [f for f in target["findings"] if f["kind"] == "pmtu-black-hole"]
    assert finding["severity"] == "critical" and finding["first_hop"] == 3
    assert "packets above 1400 bytes die silently after hop 3 (198.18.3.2)" in finding["summary"]
    assert "clamp the TCP MSS to 1360" in finding["summary"]
    assert [(e["ttl"], e["kind"]) for e in finding["evidence"]][2:4] == [
        (3, "time-exceeded"), (4, "timeout"),
    ]  # fmt: skip
    assert not run_ok(record)
    assert (
        build_view(record).targets[0].headline.endswith("path MTU 1400 (a black hole after hop 3)")
    )


def test_a_named_mtu_is_a_warning_and_a_clean_path_no_finding() -> None:
    record = copy.deepcopy(sim_record())
    target = record["targets"][0]
    add_mtu(target, PathMtu(flow="tcp/443", mtu=1400, local_mtu=1500, limit=1401, named=True,
                            hop=3, address="198.18.3.2"))  # fmt: skip
    add_mtu(target, PathMtu(flow="icmp", mtu=1500, local_mtu=1500))
    validate_record(record)
    kinds = [(f["kind"], f["severity"]) for f in target["findings"] if "mtu" in f["kind"]]
    assert kinds == [("path-mtu", "warning")]
    assert run_ok(record) == run_ok(sim_record())  # a named MTU alone fails nothing
    assert "limited after hop 3" in build_view(record).targets[0].headline


def test_the_diagram_marks_where_bigger_packets_die_and_the_csv_says_the_mtu() -> None:
    import csv
    import io

    from reachtest.report.csvfile import render_csv
    from reachtest.report.html import NODE_DX, diagram

    record = copy.deepcopy(sim_record())
    target = record["targets"][0]
    add_mtu(target, black_hole())
    view = build_view(record).targets[0]
    (lane,) = [lane for lane in diagram(view).lanes if lane.flow == "icmp"]
    hop3 = next(n for n in diagram(view).nodes if n.ttl == 3)
    assert lane.mtu_x == hop3.x + NODE_DX // 2  # on the link after hop 3
    assert "packets above 1400 bytes vanish (no frag-needed: a black hole) after hop 3" in (
        lane.words
    )
    rows = list(csv.DictReader(io.StringIO(render_csv(record))))
    assert {(r["path_mtu"], r["pmtu_black_hole"]) for r in rows if r["flow"] == "icmp"} == {
        ("1400", "1")
    }
    assert {r["path_mtu"] for r in rows if r["flow"] != "icmp"} == {""}  # not measured


def test_a_black_hole_after_a_change_is_a_regression_in_the_diff() -> None:
    from reachtest.analysis.diff import diff_runs

    before, after = copy.deepcopy(sim_record()), copy.deepcopy(sim_record())
    add_mtu(before["targets"][0], PathMtu(flow="icmp", mtu=1500, local_mtu=1500))
    add_mtu(after["targets"][0], black_hole())
    (change,) = [s for s in diff_runs(before, after).services if s.flow == "icmp path MTU"]
    assert (change.before, change.after, change.change) == ("1500", "1400", "regression")
    assert change.reason_after == "black-hole"
    assert change.stop_after == "above 1400 bytes vanish after hop 3"
    (back,) = [s for s in diff_runs(after, before).services if s.flow == "icmp path MTU"]
    assert back.change == "improvement"
