"""Multipath in the scheduled and monitored paths (issue 28): `run` with ``mda = true``
and an exporter module with ``mda = true`` judge every branch of the ECMP hop, so a
service that dies on one branch of two is `partially-filtered`, never the `open` or
`filtered` a single flow hash happened to see. The lab's truth: the last router at the
ECMP hop blocks tcp/443, the others forward it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from reachtest.schedule import metrics
from tests.lab.conftest import MakeLab
from tests.lab.test_exporter_prometheus import started
from tests.lab.test_exporter_requests import exporter_argv, flow_series, scrape
from tests.lab.test_run_cli import in_lab

RUN_CONFIG = """\
history = "history.sqlite"
prometheus = "reachtest.prom"
reports = "reports"

[defaults]
services = ["tcp/443", "tcp/80"]
rounds = 2
interval = 0.1
timeout = 0.5
max_ttl = 8
mda = true

[[target]]
host = "{server}"
name = "web"
expect = {{ "tcp/443" = "open", "tcp/80" = "open" }}
"""

EXPORTER_CONFIG = """\
[exporter]
allow = ["198.18.0.0/15", "2001:db8::/32"]

[module.branches]
services = ["tcp/443", "tcp/80"]
expect = { "tcp/443" = "open", "tcp/80" = "open" }
rounds = 2
interval = 0.1
timeout = 0.5
max_ttl = 8
mda = 99
"""


def test_run_with_mda_says_tcp_443_fails_on_one_branch(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab("ecmp-branch-drop")
    branch = lab.plan.scenario.truth.branch_block
    assert branch is not None
    config = tmp_path / "reachtest.toml"
    config.write_text(RUN_CONFIG.format(server=lab.server()))
    done = in_lab(lab, "run", "--config", str(config), timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    failing = [line for line in done.stdout.splitlines() if "expected" in line]
    assert len(failing) == 1, done.stdout
    blocker = lab.plan.topology.facing_client(branch.node).ipv4.ip
    # Where is the blocking branch's hop and router, with the share of flow hashes that
    # die there: not where the trace's single flow hash happened to go.
    line = failing[0]
    (saved,) = (tmp_path / "reports").glob("*_web.json")
    found = [
        {k: m[k] for k in ("flow", "state", "failing", "of", "unstable", "probes", "note")}
        for m in json.loads(saved.read_text())["targets"][0]["multipath"]
    ]
    line += f" {found}"  # what MDA found, said when the test fails
    assert "tcp/443: expected open, got partially-filtered" in line, line
    assert f" flow hashes dropped after hop {branch.hop} ({blocker})" in line, line
    died, tried = re.search(r"(\d+) of (\d+) flow hashes", line).groups()  # type: ignore[union-attr]
    assert 0 < int(died) < int(tried), line
    got = metrics.parse((tmp_path / "reachtest.prom").read_text())

    def value(name: str, flow: str, **extra: str) -> float:
        protocol, _, port = flow.partition("/")
        labels = {"target": "web", "protocol": protocol, "port": port, **extra}
        return got[(name, tuple(sorted(labels.items())))]

    assert value("reachtest_expectation_met", "tcp/443", expected="open") == 0
    assert value("reachtest_expectation_met", "tcp/80", expected="open") == 1


def test_the_exporter_with_mda_says_partially_filtered(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab("ecmp-branch-reject")
    config = tmp_path / "exporter.toml"
    config.write_text(EXPORTER_CONFIG)
    with started(exporter_argv(lab, config), tmp_path / "exporter.log"):
        status, body = scrape(lab.client, f"/probe?target={lab.server()}&module=branches")
        assert status == 200, body + (tmp_path / "exporter.log").read_text()[-1500:]
    got = metrics.parse(body)
    value = flow_series(got)

    assert got[("probe_success", ())] == 0
    assert value("reachtest_flow_state", "tcp/443", state="partially-filtered") == 1
    assert value("reachtest_flow_state", "tcp/443", state="open") == 0
    assert value("reachtest_expectation_met", "tcp/443", expected="open") == 0
    assert value("reachtest_flow_state", "tcp/80", state="open") == 1
    assert value("reachtest_expectation_met", "tcp/80", expected="open") == 1
