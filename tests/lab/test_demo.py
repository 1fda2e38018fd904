"""`reachtest demo` as a new user runs it: exit 0, the three reports written and true to
the combo scenario, the findings printed, the lab gone; and gone too after a Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from reachtest.cli import DEMO_LAB
from reachtest.lab import netns
from reachtest.lab.scenarios import scenario
from reachtest.lab.topology import NETNS_PREFIX
from reachtest.report.record import validate_record
from tests.lab.conftest import reachtest_cmd

PREFIX = f"{NETNS_PREFIX}{DEMO_LAB}-"


def demo_namespaces() -> list[str]:
    return [n for n in netns.list_netns() if n.startswith(PREFIX)]


def test_demo_end_to_end(lab_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    done = subprocess.run(
        [*reachtest_cmd(), "demo", "--out-dir", str(out), "-c", "3", "-i", "0.2"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert demo_namespaces() == []
    files = sorted(out.iterdir())
    assert [p.suffix for p in files] == [".html", ".json", ".md"], files
    html, run, markdown = files
    record = json.loads(run.read_text())
    validate_record(record)
    truth = scenario("combo", 5).truth
    (target,) = record["targets"]
    assert target["reachable"] and target["distance"] == truth.server_hop
    wanted = {f.flow.label: f for f in truth.flows}
    for flow in target["flows"]:
        want = wanted[flow["flow"]]
        got = (flow["verdict"]["state"], flow["verdict"]["reason"], flow["verdict"]["reason_hop"])
        state = None if want.state is None else str(want.state)
        assert got == (state, str(want.reason), want.reason_hop), flow["flow"]
    assert {f["flow"] for f in target["flows"]} >= {"tcp/443", "tcp/8080", "udp/53", "tcp/80"}
    for finding in target["findings"]:
        if finding["severity"] == "critical":
            assert finding["summary"] in done.stdout
    assert html.resolve().as_uri() in done.stdout.replace("\n", "")
    assert "<h1>reachtest report</h1>" in html.read_text()
    assert markdown.read_text().startswith("# reachtest report")


def test_demo_removes_the_lab_on_ctrl_c(lab_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    demo = subprocess.Popen(
        [*reachtest_cmd(), "demo", "--out-dir", str(out), "-c", "100", "-i", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 60
        while "Tracing" not in (demo.stdout.readline() if demo.stdout else ""):
            assert time.monotonic() < deadline and demo.poll() is None, "the demo did not start"
        time.sleep(1.5)  # well inside the trace
        assert demo_namespaces(), "the lab should be up while the demo traces"
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C on its terminal does
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert demo_namespaces() == []
    assert not out.exists() or not list(out.iterdir())
