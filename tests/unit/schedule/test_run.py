"""`reachtest run` without the network: expectations, the trace policy, judging a run
record, the summary for cron, the Prometheus textfile (read back with prometheus_client's
parser) and the lock between overlapping runs (real processes, real flock)."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reachtest.model import ICMP_FLOW, tcp, udp
from reachtest.schedule import metrics
from reachtest.schedule.config import TargetConfig
from reachtest.schedule.lock import LockHeld, hold
from reachtest.schedule.run import Batch, judge, meets, summary, where, why_trace
from tests.unit.report.conftest import TARGET, router, sim_record

WEB = TargetConfig(
    host="server",
    name="web",
    flows=(ICMP_FLOW, tcp(443), tcp(80), udp(53)),
    expect={"icmp": "reachable", "tcp/443": "open", "tcp/80": "open", "udp/53": "blocked"},
    labels={"site": "lab"},
)


@pytest.mark.parametrize(
    ("expected", "got", "ok"),
    [
        ("open", "open", True),
        ("open", "filtered", False),
        ("filtered", "filtered", True),
        ("filtered", "open|filtered", False),
        ("closed", "closed", True),
        ("blocked", "filtered", True),
        ("blocked", "closed", True),
        ("blocked", "open|filtered", True),
        ("blocked", "open", False),
        ("reachable", "reachable", True),
        ("reachable", "unreachable", False),
        ("unreachable", "unreachable", True),
        ("open", "unresolved", False),
        ("blocked", "unresolved", False),
    ],
)
def test_an_expectation_holds_only_for_its_word(expected: str, got: str, ok: bool) -> None:
    assert meets(expected, got) is ok


def test_the_policy_picks_what_gets_a_full_trace() -> None:
    now = {"icmp": "reachable", "tcp/443": "filtered"}
    same = dict(now)
    moved = {"icmp": "reachable", "tcp/443": "open"}
    assert why_trace("always", False, now, same) == "policy always"
    assert why_trace("on-failure", True, now, same) == "an expectation is not met"
    assert why_trace("on-failure", False, now, moved) is None
    assert why_trace("on-change", False, now, same) is None
    assert why_trace("on-change", False, now, moved) == "changed since the last run: tcp/443"
    assert why_trace("on-change", False, now, None) == "no earlier run to compare with"
    assert why_trace("on-change", True, now, same) == "an expectation is not met"


@pytest.fixture(scope="module")
def drop() -> dict[str, Any]:
    return sim_record({3: router(3, drop=frozenset({"tcp/443"}))})


def test_judging_a_traced_drop_says_where_it_stops(drop: dict[str, Any]) -> None:
    judged = {j.flow: j for j in judge(WEB, drop["targets"][0], TARGET, traced=True)}
    https = judged["tcp/443"]
    assert (https.got, https.met, https.reason) == ("filtered", False, "no-response")
    assert (https.last_hop, https.last_address) == (3, "198.18.3.2")  # r3 drops what it forwards
    assert where(https) == "silent after hop 3 (198.18.3.2)"
    assert metrics.stop_hop(https) == 3  # the hop the words name
    assert https.loss_ratio == 1.0 and https.finding and "tcp/443" in https.finding
    assert (judged["tcp/80"].got, judged["tcp/80"].met) == ("open", True)
    assert judged["tcp/80"].loss_ratio == 0.0 and judged["tcp/80"].rtt_ms is not None
    assert (judged["udp/53"].got, judged["udp/53"].met) == ("open", False)  # expected blocked
    assert (judged["icmp"].got, judged["icmp"].met) == ("reachable", True)
    assert judged["icmp"].distance == 6 and where(judged["icmp"]) == ""


def test_an_unresolved_target_fails_every_expectation() -> None:
    judged = judge(WEB, None, None, traced=False)
    assert [j.got for j in judged] == ["unresolved"] * 4
    assert [j.met for j in judged] == [False, False, False, False]


def _batch(record: dict[str, Any], traced: bool = True) -> Batch:
    started = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    return Batch(
        started=started,
        finished=started + timedelta(seconds=4.5),
        judged=tuple(judge(WEB, record["targets"][0], TARGET, traced=traced)),
        records=(("check", record),),
        traced={"web": "an expectation is not met"} if traced else {},
        reports=(Path("reports/x.json"), Path("reports/x.html")),
        changes=(("web", "tcp/443", "open", "filtered"),),
        durations_s={"web": 2.25},
        run_id=7,
    )


def test_the_summary_names_the_service_and_the_hop(drop: dict[str, Any]) -> None:
    lines = summary(_batch(drop), "h.sqlite")
    assert lines[0].startswith("reachtest run: 2 of 4 expectations not met · 1 targets (1 traced)")
    assert any(
        "web (198.18.6.2) tcp/443: expected open, got filtered (no-response); "
        "silent after hop 3 (198.18.3.2)" in line
        for line in lines
    )
    assert "  web tcp/443: open -> filtered" in lines
    assert "report: reports/x.html" in lines and "history: run 7 in h.sqlite" in lines


def test_a_clean_run_sums_up_in_one_line() -> None:
    clean = _batch(sim_record(), traced=False)
    assert not clean.ok  # udp/53 answers, and WEB expects it blocked
    web = replace(WEB, expect={"tcp/443": "open", "icmp": "reachable"})
    judged = tuple(judge(web, sim_record()["targets"][0], TARGET, traced=False))
    fine = replace(clean, judged=judged, changes=())
    assert fine.ok
    assert summary(fine)[0].startswith("reachtest run: all 2 expectations met · 1 targets")


def test_the_metrics_parse_with_the_values_of_the_run_and_the_config_labels(
    drop: dict[str, Any],
) -> None:
    got = metrics.parse(metrics.render(_batch(drop)))

    def value(name: str, flow: str | None = None, **extra: str) -> float:
        labels: dict[str, str] = {"target": "web", "site": "lab", **extra}
        if flow is not None:
            protocol, _, port = flow.partition("/")
            labels |= {"protocol": protocol, "port": port}
        return got[(name, tuple(sorted(labels.items())))]

    assert value("probe_success", "tcp/443") == 0 and value("probe_success", "tcp/80") == 1
    assert value("reachtest_expectation_met", "tcp/443", expected="open") == 0
    assert value("reachtest_expectation_met", "udp/53", expected="blocked") == 0
    assert value("reachtest_expectation_met", "icmp", expected="reachable") == 1
    assert value("reachtest_stop_hop", "tcp/443") == 3
    assert value("reachtest_stop_hop", "tcp/80") == 0
    assert value("reachtest_target_hops", "icmp") == 6
    assert value("reachtest_loss_ratio", "tcp/443") == 1.0
    assert value("probe_duration_seconds") == 2.25 and value("reachtest_traced") == 1
    assert value("reachtest_resolved") == 1


def test_an_unresolved_target_shows_in_the_metrics_and_labels_differ_per_target(
    drop: dict[str, Any],
) -> None:
    dns = replace(WEB, name="dns", host="nx.invalid", labels={"team": "net"})
    batch = _batch(drop)
    batch = replace(
        batch,
        judged=batch.judged + tuple(judge(dns, None, None, traced=False, why_not="no such name")),
        unresolved={"dns": "no such name"},
    )
    got = metrics.parse(metrics.render(batch))
    assert got[("reachtest_resolved", (("site", ""), ("target", "dns"), ("team", "net")))] == 0
    assert got[("reachtest_resolved", (("site", "lab"), ("target", "web"), ("team", "")))] == 1
    key = (("port", "443"), ("protocol", "tcp"), ("site", ""), ("target", "dns"), ("team", "net"))
    assert got[("probe_success", key)] == 0
    assert got[("reachtest_expectation_met", (("expected", "open"), *key))] == 0
    lines = summary(batch)
    assert "1 not resolved" in lines[0]
    assert any("dns tcp/443: expected open, got unresolved (no such name)" in x for x in lines)


def _hold_for(path: str, seconds: float, ready: Any) -> None:
    with hold(Path(path)):
        ready.set()
        time.sleep(seconds)


def test_a_second_run_finds_the_lock_and_says_who_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite.lock"
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_for, args=(str(path), 1.5, ready))
    holder.start()
    try:
        assert ready.wait(10)
        with (
            pytest.raises(LockHeld, match=rf"holds {path} \(pid {holder.pid}, since "),
            hold(path),
        ):
            pass
        began = time.monotonic()
        with hold(path, wait_s=20):  # waits for the holder to let go
            assert time.monotonic() - began > 0.3
    finally:
        holder.join(10)
    assert holder.exitcode == 0


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite.lock"
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_for, args=(str(path), 60, ready))
    holder.start()
    assert ready.wait(10)
    holder.kill()
    holder.join(10)
    with hold(path):  # no stale lock after SIGKILL
        pass


def test_promtool_finds_nothing_to_lint_in_the_textfile(drop: dict[str, Any]) -> None:
    from tests.unit.serve.test_exporter_http import promtool_lint

    text = metrics.render(_batch(drop))
    assert "reachtest_stop_hop" in text
    assert promtool_lint(text) == ""
