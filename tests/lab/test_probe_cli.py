"""`reachtest probe` as a user runs it inside the lab: JSON lines, summary, errors."""

from __future__ import annotations

import json
import subprocess

from tests.lab.conftest import MakeLab, reachtest_cmd


def run_in(lab_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab_id, "--", *reachtest_cmd(), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_probe_prints_one_json_line_per_outcome_with_names_resolved_in_the_lab(
    make_lab: MakeLab,
) -> None:
    lab = make_lab("tcp-drop")
    done = run_in(
        lab.lab_id,
        "probe",
        "server",
        "-4",
        "-p",
        "tcp/443,tcp/80",
        "-c",
        "2",
        "-i",
        "0.2",
        "--timeout",
        "0.5",
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    truth = lab.plan.scenario.truth
    reached = {
        (o["flow"], o["kind"], o["responder"]) for o in lines if o["ttl"] == truth.server_hop
    }
    assert ("tcp/80", "tcp-syn-ack", lab.server()) in reached
    assert ("icmp", "echo-reply", lab.server()) in reached
    assert ("tcp/443", "timeout", None) in reached
    assert {o["round"] for o in lines} == {0, 1}
    assert all(o["rtt_ms"] is None or o["rtt_ms"] >= 0 for o in lines)
    summary = done.stderr.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("reachtest: sent ")
    assert "strays: none" in summary[0]


def test_probe_of_an_unknown_host_is_a_one_line_usage_error(make_lab: MakeLab) -> None:
    lab = make_lab("clean", hops=1)
    done = run_in(lab.lab_id, "probe", "no-such-host")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "unknown host 'no-such-host'" in done.stderr
    assert done.stdout == ""
