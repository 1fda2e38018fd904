"""-z in the lab: the lab's DNS serves Team Cymru's zones for its own addresses (each node
its own AS, the ground truth in the plan), so the owners shown are checked against the
truth, in the record, the terminal and the CSV; the findings name the AS of the hop
where a flow stops, the blocking branch's own with --mda. No query leaves the lab: the
client namespace's resolv.conf names the lab's DNS only."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from reachtest.report.record import validate_record
from tests.lab.conftest import MakeLab
from tests.lab.test_trace_cli import trace_in


@pytest.mark.parametrize("family", ["-4", "-6"])
def test_every_hop_is_shown_with_its_owner_and_the_block_names_its_as(
    make_lab: MakeLab, tmp_path: Path, family: str
) -> None:
    lab = make_lab("tcp-drop")
    owners = lab.plan.owners()
    record_file, csv_file = tmp_path / "run.json", tmp_path / "hops.csv"
    done = trace_in(
        lab, "server", family, "-p", "tcp/443", "-z", "-c", "2", "-i", "0.2", "--timeout", "1",
        "--report", "--json", str(record_file), "--csv", str(csv_file),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = json.loads(record_file.read_text())
    validate_record(record)
    (target,) = record["targets"]
    seen = {r["address"] for f in target["flows"] for h in f["hops"] for r in h["responders"]}
    assert len(seen) == 6
    for address in seen:
        asn, prefix, name = owners[address]
        assert record["asns"][address] == {
            "asn": asn, "prefix": prefix, "name": name, "source": "dns"
        }, address  # fmt: skip
        assert f"[AS{asn}] {address}" in done.stdout
    (block,) = [f for f in target["findings"] if f["kind"] == "blocked-silently"]
    asn, _, name = owners[block["responder"]]
    assert block["owner"] == f"AS{asn}" and block["first_hop"] == 3
    handle = name.split(" - ")[0]
    assert f"({block['responder']}, AS{asn} {handle})" in block["summary"]
    assert f"hop 3 ({block['responder']}, AS{asn})" in done.stdout  # the verdict's words
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text())))
    assert rows and all(
        int(r["responder_as"]) == owners[r["responder"]][0] for r in rows if r["responder"]
    )


def test_the_blocking_branch_is_named_with_its_as(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab("ecmp-branch-drop")
    owners = lab.plan.owners()
    block = lab.plan.scenario.truth.branch_block
    assert block is not None
    blocker = str(lab.plan.topology.facing_client(block.node).ipv4.ip)
    record_file = tmp_path / "run.json"
    done = trace_in(
        lab, "server", "-4", "-p", block.flow.label, "-z", "--mda", "-c", "2", "-i", "0.1",
        "--timeout", "1", "--report", "--json", str(record_file),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = json.loads(record_file.read_text())
    validate_record(record)
    (target,) = record["targets"]
    branch_hosts = {
        r["address"]
        for m in target["multipath"]
        for h in m["hops"]
        if h["ttl"] == block.hop
        for r in h["responders"]
    }
    assert blocker in branch_hosts and len(branch_hosts) == 2
    assert all(record["asns"][a]["asn"] == owners[a][0] for a in branch_hosts)
    (finding,) = [f for f in target["findings"] if f["kind"] == "partially-filtered"]
    assert finding["responder"] == blocker and finding["owner"] == f"AS{owners[blocker][0]}"
    assert f"AS{owners[blocker][0]}" in done.stdout
