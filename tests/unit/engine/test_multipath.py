"""Multipath (engine/multipath.py, analysis/branches.py) off the network: MDA's stopping
points, the per-branch verdict of explorations with known fates, and what it becomes in
the record (verdict, finding, schema), the report, the run's exit and its expectations."""

from __future__ import annotations

import copy
import csv
import io
import math

import pytest

from reachtest.analysis.branches import (
    ALL_REACHED,
    NONE_REACHED,
    PARTIAL,
    UNSTABLE,
    judge_branches,
)
from reachtest.analysis.diff import stop
from reachtest.analysis.summary import ECMP_HINT
from reachtest.engine.multipath import (
    Exploration,
    FlowProbe,
    short_of,
    stopping_points,
    widths,
)
from reachtest.report.csvfile import render_csv
from reachtest.report.html import render_html
from reachtest.report.markdown import render_markdown
from reachtest.report.record import add_branches, run_ok, validate_record
from reachtest.report.terminal import render_text
from reachtest.report.view import build_view
from reachtest.schedule import metrics
from reachtest.schedule.config import parse_config
from reachtest.schedule.run import judge, where
from tests.unit.report.conftest import TARGET, sim_record

FORK, BRANCH_A, BRANCH_B = "198.18.2.2", "198.18.3.2", "198.18.103.2"


def test_stopping_points_are_augustins_table_at_95_and_grow_with_confidence() -> None:
    # Augustin et al. (and scamper's tracelb) at 95%: 6, 11, 16, 21, 27, 33, 38, 44, ...
    assert stopping_points(0.95)[:8] == (6, 11, 16, 21, 27, 33, 38, 44)
    assert stopping_points(0.99)[0] == 8  # 2 * 0.5^8 <= 0.01 < 2 * 0.5^7
    assert all(a < b for a, b in zip(stopping_points(0.9), stopping_points(0.99), strict=False))
    for k, n in enumerate(stopping_points(0.95)[:8], start=1):  # the union bound is near
        assert abs(n - math.log(0.05 / (k + 1)) / math.log(k / (k + 1))) < 1.5
    with pytest.raises(ValueError, match="between 0 and 1"):
        stopping_points(1.0)


def exploration(
    ids: int = 12,
    *,
    dies: frozenset[int] = frozenset(),
    how: str = "silent",
    flaky: frozenset[int] = frozenset(),
    flow: str = "tcp/443",
) -> Exploration:
    """A 3-hop path forking at hop 3: even identifiers go via branch A, odd via B; those
    in ``dies`` (odd ones) die behind B (``how``: silent, or rejected by B); those in
    ``flaky`` reached the target once of twice."""
    fates: dict[int, tuple[FlowProbe, ...]] = {}
    paths: dict[int, dict[int, FlowProbe]] = {1: {}, 2: {}, 3: {}, 4: {}}
    for i in range(ids):
        port = 40000 + i
        branch = BRANCH_A if i % 2 == 0 else BRANCH_B
        hops = {1: "198.18.1.2", 2: FORK, 3: branch, 4: "198.18.4.2"}
        dead = i in dies
        for ttl, address in hops.items():
            if dead and ttl == 4:
                paths[ttl][port] = FlowProbe(flow_id=port, ttl=ttl, outcome="silent")
            else:
                paths[ttl][port] = FlowProbe(
                    flow_id=port, ttl=ttl, outcome="time-exceeded", responder=address
                )
        ok = FlowProbe(flow_id=port, ttl=64, outcome="answered", responder="198.18.6.2")
        bad = (
            FlowProbe(flow_id=port, ttl=64, outcome="rejected", responder=BRANCH_B, icmp=(3, 13))
            if how == "rejected"
            else FlowProbe(flow_id=port, ttl=64, outcome="silent")
        )
        fates[port] = (bad, bad) if dead else (ok, bad) if i in flaky else (ok, ok)
    return Exploration(
        flow=flow, confidence=0.95, flow_ids=tuple(sorted(fates)), fates=fates, paths=paths,
        ttls=(1, 2, 3, 4), probes=5 * ids, elapsed_s=1.0, settled=True,
    )  # fmt: skip


ODD = frozenset(range(1, 12, 2))


def test_stable_deaths_behind_one_branch_are_partially_filtered_after_that_hop() -> None:
    verdict = judge_branches(exploration(dies=ODD))
    assert verdict.state == PARTIAL and verdict.how == "dropped"
    assert (verdict.hop, verdict.address) == (3, BRANCH_B)
    assert verdict.fork_hop == 3 and verdict.passing_via == (BRANCH_A,)
    assert (len(verdict.failing), verdict.total, verdict.share_pct) == (6, 12, 50.0)
    assert "6 of 12 flow hashes" in verdict.summary()
    assert "silently dropped after hop 3 (198.18.103.2)" in verdict.summary()
    assert verdict.widest == 2 and verdict.widest_hop == 3


def test_a_branch_that_rejects_is_named_by_its_rejection_at_its_own_hop() -> None:
    verdict = judge_branches(exploration(dies=ODD, how="rejected"))
    assert (verdict.state, verdict.how, verdict.hop, verdict.address) == (
        PARTIAL, "rejected", 3, BRANCH_B,
    )  # fmt: skip
    assert "rejected by hop 3 (198.18.103.2)" in verdict.summary()


def test_fates_that_change_between_rounds_are_chance_not_a_branch() -> None:
    verdict = judge_branches(exploration(flaky=frozenset({1, 3})))
    assert verdict.state == UNSTABLE and verdict.failing == () and len(verdict.unstable) == 2
    # A stable death and a flaky one: the stable one decides, the flaky one is left out.
    mixed = judge_branches(exploration(dies=frozenset({5}), flaky=frozenset({1})))
    assert mixed.state == PARTIAL and len(mixed.failing) == 1 and len(mixed.unstable) == 1


def test_a_flow_whose_hashes_all_met_one_branch_is_short_of_what_another_flow_met() -> None:
    # Six identifiers that all hashed onto branch B (1 run in 32) and died behind it: alone
    # they read as "none reached", a blocked path. tcp/80 met both branches at hop 3.
    both = exploration(flow="tcp/80")
    full = exploration(dies=ODD)
    only_b = set(40000 + i for i in ODD)
    unlucky = Exploration(
        flow="tcp/443", confidence=0.95, flow_ids=tuple(sorted(only_b)),
        fates={i: f for i, f in full.fates.items() if i in only_b},
        paths={t: {i: p for i, p in row.items() if i in only_b} for t, row in full.paths.items()},
        ttls=full.ttls, probes=30, elapsed_s=1.0, settled=True,
    )  # fmt: skip
    assert judge_branches(unlucky).state == NONE_REACHED
    assert widths(both) == {1: 1, 2: 1, 3: 2, 4: 1} and widths(unlucky)[3] == 1
    assert short_of(unlucky, widths(both)) == {3: 2}  # explored again, held to 2 routers
    assert short_of(both, widths(both)) == {}
    assert short_of(full, widths(both)) == {}  # it met both: nothing to do again
    # Where the flow's identifiers met nobody (they all died before), nothing is asked.
    assert short_of(unlucky, {4: 2, 5: 3}) == {}


def test_all_reached_and_none_reached_are_no_partial_filter() -> None:
    assert judge_branches(exploration()).state == ALL_REACHED
    assert judge_branches(exploration(dies=frozenset(range(12)))).state == NONE_REACHED


def test_a_partial_filter_becomes_the_flows_verdict_finding_report_and_exit() -> None:
    record = copy.deepcopy(sim_record())
    target = record["targets"][0]
    assert run_ok(record)
    found = exploration(dies=ODD)
    add_branches(target, found, judge_branches(found))
    validate_record(record)
    flow = next(f for f in target["flows"] if f["flow"] == "tcp/443")
    assert flow["verdict"]["state"] == "partially-filtered"
    assert flow["verdict"]["branch"] == {
        "failing": 6, "of": 12, "how": "dropped", "hop": 3, "address": BRANCH_B,
    }  # fmt: skip
    (finding,) = [f for f in target["findings"] if f["kind"] == "partially-filtered"]
    assert finding["severity"] == "critical" and finding["first_hop"] == 3
    assert finding["responder"] == BRANCH_B
    assert {(e["ttl"], e["responder"], e["count"]) for e in finding["evidence"]} >= {
        (3, BRANCH_A, 6), (3, BRANCH_B, 6), (4, None, 6),
    }  # fmt: skip
    assert not run_ok(record)
    (entry,) = target["multipath"]
    assert entry["hops"][2]["responders"][0]["flow_ids"]  # each hop's identifiers kept
    text = render_text(build_view(record), width=200)
    assert "partially-filtered" in text
    assert "6 of 12 flow hashes dropped after hop 3 (198.18.103.2)" in text
    assert "Branches (--mda)" in text and "6 flow hashes, 0 reach the target" in text
    # The other formats carry the verdict and the branches too.
    view = build_view(record)
    markdown = render_markdown(view)
    assert "### Branches (--mda)" in markdown
    assert f"| tcp/443 | 3 | {BRANCH_B} | 6 | **0** |" in markdown
    html = render_html(view)
    assert "<h3>Branches (--mda)</h3>" in html and BRANCH_B in html
    # The path diagram stacks the branch routers at hop 3 and forks the flow's lane.
    assert f"2 branches at hop 3: {', '.join(sorted((BRANCH_A, BRANCH_B)))}" in html
    assert '<g class="split">' in html
    rows = list(csv.DictReader(io.StringIO(render_csv(record))))
    assert {r["state"] for r in rows if r["flow"] == "tcp/443"} == {"partially-filtered"}
    # `run` and `diff` say where as the branch's hop and router, with the share: not
    # where the trace's one flow hash went (it reached the target here).
    config = parse_config(
        f'[[target]]\nhost = "{TARGET}"\nname = "web"\nservices = ["tcp/443"]\n'
        'expect = { "tcp/443" = "open" }\n'
    ).targets[0]
    judged = next(j for j in judge(config, target, TARGET, traced=True) if j.flow == "tcp/443")
    # The metric names the hop the words name: the branch's router, dropping (issue 31).
    assert (judged.got, judged.met, metrics.stop_hop(judged)) == ("partially-filtered", False, 3)
    said = f"6 of 12 flow hashes dropped after hop 3 ({BRANCH_B}); the others reach it"
    assert where(judged) == said
    assert stop(flow) == said
    rejected = copy.deepcopy(sim_record())["targets"][0]
    found = exploration(dies=ODD, how="rejected")
    add_branches(rejected, found, judge_branches(found))
    judged = next(j for j in judge(config, rejected, TARGET, traced=True) if j.flow == "tcp/443")
    assert (
        where(judged) == f"6 of 12 flow hashes rejected by hop 3 ({BRANCH_B}); the others reach it"
    )
    assert metrics.stop_hop(judged) == 3  # the same hop as a drop there: one meaning


def test_branches_where_every_hash_passes_are_an_info_finding_and_the_run_stays_ok() -> None:
    record = copy.deepcopy(sim_record())
    target = record["targets"][0]
    # The plain trace's ECMP finding says --mda judges every branch; once it has, it
    # no longer says so.
    plain = "hop 3 is load-balanced (ECMP)"
    target["findings"].append({"kind": "ecmp", "summary": plain + ECMP_HINT + " [note]"})
    found = exploration(flow="tcp/80")
    add_branches(target, found, judge_branches(found))
    (ecmp,) = [f for f in target["findings"] if f["kind"] == "ecmp"]
    assert ecmp["summary"] == plain + " [note]"
    target["findings"].remove(ecmp)  # (only its words were made for this test)
    validate_record(record)
    (finding,) = [f for f in target["findings"] if f["kind"] == "multipath"]
    assert finding["severity"] == "info"
    assert finding["summary"].startswith("tcp/80: 2 branches at hop 3; 12 of 12")
    assert run_ok(record)
