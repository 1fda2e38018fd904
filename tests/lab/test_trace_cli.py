"""`reachtest trace` as a user runs it in the lab: the report, the JSON record checked
against the schema and the scenario's ground truth (IPv4 and IPv6), `show` of the
record, names from the lab's DNS, host files, saved files, errors, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reachtest.lab.scenarios import GroundTruth
from reachtest.model import FindingKind, Protocol
from reachtest.report.record import validate_record
from reachtest.report.view import Mark
from tests.lab.conftest import SINGLE_PATH_SCENARIOS, Lab, MakeLab, reachtest_cmd
from tests.lab.test_analysis_truth import expected_findings
from tests.lab.where_agreement import disagreements

MARKS = {str(m) for m in Mark}


def trace_in(lab: Lab, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
    return subprocess.run(
        [*argv, "trace", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def marks_per_row(report: str) -> dict[int, list[str]]:
    """TTL -> the mark of each flow, read from the text report's hop table."""
    rows: dict[int, list[str]] = {}
    for line in report.splitlines():
        words = line.split()
        if words and words[0].isdigit() and not line.startswith(" " * 6):
            rows[int(words[0])] = [w for w in words[2:] if w in MARKS]
        if line.startswith("Verdicts"):
            break
    return rows


def test_tcp_drop_as_in_the_issue(make_lab: MakeLab, tmp_path: Path) -> None:
    """tcp/443 goes silent after the filtering hop while icmp and tcp/80 reach the
    server; a finding names that hop; exit 1; the JSON validates; `show` prints the same."""
    lab = make_lab("tcp-drop")
    truth = lab.plan.scenario.truth
    blocked = next(f for f in truth.flows if f.flow.label == "tcp/443").last_hop
    record_file = tmp_path / "run.json"
    done = trace_in(
        lab, "server", "-4", "-p", "tcp/443", "-p", "tcp/80", "-p", "udp/53",
        "--report", "-c", "5", "-i", "0.2", "--json", str(record_file),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = done.stdout
    assert "\x1b[" not in report
    rows = marks_per_row(report)
    assert sorted(rows) == list(range(1, truth.server_hop + 1)), report
    flows = ["icmp", "tcp/443", "tcp/80", "udp/53"]
    for ttl, marks in rows.items():
        by_flow = dict(zip(flows, marks, strict=True))
        final = ttl == truth.server_hop
        assert by_flow["icmp"] == ("reply" if final else "pass"), (ttl, by_flow)
        assert by_flow["tcp/80"] == ("open" if final else "pass"), (ttl, by_flow)
        assert by_flow["tcp/443"] == ("pass" if ttl <= blocked else "silent"), (ttl, by_flow)
    hop_address = next(iter(lab.hop(blocked)))
    assert f"tcp/443 is silently dropped after hop {blocked} ({hop_address})" in report
    assert f"r1.{lab.lab_id}.reachtest.test" in report  # names from the lab's DNS
    record = json.loads(record_file.read_text())
    validate_record(record)
    assert record["command"][:4] == ["reachtest", "trace", "server", "-4"]
    shown = subprocess.run(
        [*reachtest_cmd(), "show", str(record_file)], capture_output=True, text=True, check=False
    )
    assert shown.returncode == 1 and shown.stdout == report


def _flow(target: dict[str, Any], label: str) -> dict[str, Any]:
    return next(f for f in target["flows"] if f["flow"] == label)


def check_target(target: dict[str, Any], truth: GroundTruth) -> list[str]:
    """The record's verdicts and findings for one target against the ground truth."""
    problems = []
    if not target["reachable"] or target["distance"] != truth.server_hop:
        problems.append(f"{target['address']}: reachable/distance {target['distance']}")
    for flow in truth.flows:
        got_flow = _flow(target, flow.flow.label)
        v, p = got_flow["verdict"], got_flow["path"]
        got = (v["state"], v["reason"], v["reason_hop"], v["reached"], p["last_hop"])
        want = (
            None if flow.state is None else str(flow.state),
            str(flow.reason),
            flow.reason_hop,
            flow.reached,
            flow.last_hop,
        )
        if got != want:
            problems.append(f"{target['address']} {flow.flow}: got {got}, want {want}")
    labels = {f.flow.label for f in truth.flows}
    noisy = {str(FindingKind.RATE_LIMITING), str(FindingKind.FORWARDING_LOSS)}
    found = {
        (f["kind"], f["flow"], f["first_hop"])
        for f in target["findings"]
        if f["kind"] not in noisy and (f["flow"] is None or f["flow"] in labels)
    }
    want_findings = {(str(k), flow, hop) for k, flow, hop in expected_findings(truth)}
    if found != want_findings:
        problems.append(f"{target['address']} findings: got {found}, want {want_findings}")
    return problems


@pytest.mark.parametrize("name", SINGLE_PATH_SCENARIOS)
def test_trace_concludes_each_scenarios_ground_truth(
    make_lab: MakeLab, name: str, tmp_path: Path
) -> None:
    """One `trace --json -` over the server's IPv4 and IPv6 addresses (a host file):
    every verdict and finding in the record equals the truth, and the exit code follows;
    every output of the run (terminal, Markdown, HTML cards and diagram, CSV, `run`'s
    summary and textfile, the exporter's series, `diff`) says where each flow stops with
    the same hop, address and words, the truth's (``where_agreement``)."""
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    ports = [f.flow.label for f in truth.flows if f.flow.protocol is not Protocol.ICMP]
    if truth.ecmp_hop is not None:
        ports.append("tcp/1000-1007")  # enough flows to use both routers
    noisy = truth.noisy
    host_file = tmp_path / "hosts.txt"
    host_file.write_text(f"# both families\n{lab.server()}\n{lab.server(True)}\n")
    done = trace_in(
        lab, "-F", str(host_file), *(a for p in ports for a in ("-p", p)),
        "-c", "40" if noisy else "8", "-i", "0.05" if noisy else "0.1",
        "--timeout", "0.5", "-m", str(truth.server_hop + 3), "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    record = json.loads(done.stdout)
    validate_record(record)
    assert [t["address"] for t in record["targets"]] == [lab.server(), lab.server(True)]
    problems = [p for t in record["targets"] for p in check_target(t, truth)]
    assert not problems, "\n".join(problems)
    # One answer to "where" (issue 31): every output says the truth's hop and address.
    problems = disagreements(record, truth, lambda hop, v6: lab.hop(hop, v6=v6))
    assert not problems, "\n".join(problems)
    services = [f for f in truth.flows if f.flow.protocol is not Protocol.ICMP]
    all_open = all(f.state is not None and str(f.state) == "open" for f in services)
    assert done.returncode == (0 if all_open else 1)
    assert record["names"] == {} and record["params"]["dns"] is False
    if truth.nat_hop is not None:  # through either NAT, every ICMP error was attributed
        assert "unknown-flow" not in record["totals"]["strays"], record["totals"]["strays"]


def test_unknown_host_and_out_dir(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab("clean")
    done = trace_in(lab, "no-such-host", "-p", "443")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "unknown host 'no-such-host'" in done.stderr
    saved = tmp_path / "reports"
    for _ in range(2):
        done = trace_in(
            lab, "server", "-6", "-p", "https", "-c", "1", "-i", "0.1", "--out-dir", str(saved)
        )
        assert done.returncode == 0, done.stderr
        assert "wrote" in done.stderr
    files = sorted(p.name for p in saved.iterdir())
    assert len(files) == 6, files  # two runs, each a .json, .html and .md, none replaced
    for path in saved.glob("*.json"):
        validate_record(json.loads(path.read_text()))
    stems = {name.rsplit(".", 1)[0] for name in files}
    assert len(stems) == 2 and all(s.endswith(("_server", "_server-2")) for s in stems), files
    for stem in stems:
        assert {f"{stem}.json", f"{stem}.html", f"{stem}.md"} <= set(files)
        assert "<h1>reachtest report</h1>" in (saved / f"{stem}.html").read_text()


def covered_hops(target: dict[str, Any]) -> set[int]:
    """Hops whose non-answers a finding explains (rate limiting, a silent hop, or
    forwarding loss from its hop on)."""
    covered: set[int] = set()
    for f in target["findings"]:
        if f["kind"] in ("icmp-rate-limiting", "silent-hop"):
            covered.add(f["first_hop"])
        elif f["kind"] == "forwarding-loss":
            covered |= set(range(f["last_hop"], 256))
    return covered


@pytest.mark.parametrize("name", ["ratelimited-path", "wan"])
def test_default_trace_on_paths_that_rate_limit_like_real_ones(
    make_lab: MakeLab, name: str, tmp_path: Path
) -> None:
    """The issue's acceptance, with default options (-c 10, -i 1), IPv4 and IPv6 in one run:
    tcp/443 stops at the dropping router with a critical finding proven by a probe sent
    alone; icmp, tcp/80 and udp/53 get through; the routers' rate limiting is one finding
    per router, never forwarding loss; every cell of a flow that gets past a hop and lost
    more than 20% there is explained (a `limited` mark, or a finding for the hop)."""
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    host_file = tmp_path / "hosts.txt"
    host_file.write_text(f"{lab.server()}\n{lab.server(True)}\n")
    record_file = tmp_path / "run.json"
    done = trace_in(
        lab, "-F", str(host_file), "-p", "tcp/443", "-p", "tcp/80", "-p", "udp/53",
        "--report", "--json", str(record_file),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = json.loads(record_file.read_text())
    validate_record(record)
    problems: list[str] = []
    for target in record["targets"]:
        where = target["address"]
        for label in ("icmp", "tcp/80", "udp/53"):
            if not _flow(target, label)["verdict"]["reached"]:
                problems.append(f"{where} {label} did not get through")
        web = _flow(target, "tcp/443")
        if (web["verdict"]["state"], web["path"]["last_hop"]) != ("filtered", 3):
            problems.append(f"{where} tcp/443: {web['verdict']}, {web['path']}")
        blocks = [f for f in target["findings"] if f["kind"] == "blocked-silently"]
        if [(f["flow"], f["first_hop"], f["severity"]) for f in blocks] != [
            ("tcp/443", 3, "critical")
        ] or "proven" not in blocks[0]["note"]:
            problems.append(f"{where} blocks: {blocks}")
        lossy_from = truth.light_loss_from_hop or 256
        early_loss = [
            f
            for f in target["findings"]
            if f["kind"] == "forwarding-loss" and f["last_hop"] < lossy_from
        ]
        if early_loss:
            problems.append(f"{where} forwarding loss where there is none: {early_loss}")
        rate = [f for f in target["findings"] if f["kind"] == "icmp-rate-limiting"]
        hops = [f["first_hop"] for f in rate]
        if len(hops) != len(set(hops)) or any(f["flow"] is not None for f in rate):
            problems.append(f"{where} rate limiting not one finding per router: {rate}")
        if not set(hops) <= set(truth.ratelimited_hops):
            problems.append(
                f"{where} rate limiting at {hops}, want within {truth.ratelimited_hops}"
            )
        covered = covered_hops(target)
        distance = target["distance"]
        for flow in target["flows"]:
            last = flow["path"]["last_hop"] or 0
            for hop in flow["hops"]:
                ttl, lost = hop["ttl"], hop["snt"] - hop["rcv"]
                if ttl >= distance or ttl > last or lost <= 0.2 * hop["snt"]:
                    continue
                if lost > hop["limited"] and ttl not in covered:
                    problems.append(f"{where} {flow['flow']} TTL {ttl}: {lost}/{hop['snt']} lost")
    assert not problems, "\n".join(problems)
    if any(h["limited"] for t in record["targets"] for f in t["flows"] for h in f["hops"]):
        assert " limited" in done.stdout and "rate-limits its ICMP errors" in done.stdout


@pytest.mark.parametrize("family", ["-4", "-6"])
def test_a_forged_reset_is_found_with_one_flow_and_no_icmp(
    make_lab: MakeLab, tmp_path: Path, family: str
) -> None:
    """No other flow meets a router beyond the forger, so only the reply TTLs tell: the
    RST crossed as many routers back as the forger's own time-exceeded."""
    lab = make_lab("tcp-rst-middlebox")
    truth = lab.plan.scenario.truth
    forger = next(f for f in truth.flows if f.flow.label == "tcp/443").reason_hop
    record_file = tmp_path / "run.json"
    done = trace_in(
        lab, "server", family, "--no-icmp", "-p", "tcp/443", "--report", "-c", "4",
        "-i", "0.2", "--json", str(record_file),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = json.loads(record_file.read_text())
    (target,) = record["targets"]
    (flow,) = target["flows"]
    assert flow["verdict"]["reached"] is False
    found = {f["kind"]: f for f in target["findings"]}
    assert "forged-reset" in found, target["findings"]
    assert found["forged-reset"]["last_hop"] == forger + 1
    assert f"a box at or before hop {forger}" in found["forged-reset"]["note"]
    assert "forged-reset" in done.stdout or "forg" in done.stdout.lower()


def test_a_link_losing_ten_percent_is_found_from_its_hop_with_ten_rounds(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """Issue 16's case: r3 loses 10% towards r4 (from TTL 4 on), `trace -c 10` with icmp
    and three services. Pooled over the four flows the test has about 96% power at this
    size (simulated), and when hop 4's few losses fall short by chance the start is placed
    a hop later (never earlier); so two runs are made: at least one must find the link at
    hop 4, each finding is one for every flow from hop 4 or 5, and no run finds a
    flow's own loss or loss before the link."""
    lab = make_lab("clean", rules=("r3:loss:10",))
    starts = []
    for run in range(2):
        record_file = tmp_path / f"run{run}.json"
        done = trace_in(
            lab, "server", "-4", "-p", "tcp/80", "-p", "tcp/443", "-p", "udp/53",
            "-c", "10", "-i", "0.1", "--timeout", "0.5", "--json", str(record_file),
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        (target,) = json.loads(record_file.read_text())["targets"]
        loss = [f for f in target["findings"] if f["kind"] == "forwarding-loss"]
        assert all(f["flow"] is None and f["last_hop"] in (4, 5) for f in loss), loss
        starts += [f["last_hop"] for f in loss]
    assert 4 in starts, f"neither run found the lossy link at hop 4 (found: {starts})"
