"""A real Prometheus scrapes two reachtest exporters, one in each of two labs (two
vantage points), over a management link into each lab's client; the client keeps no
default route. After ``tcp-drop`` on one side and ``clean`` on the other, Prometheus'
HTTP API says which vantage is blocked, for which flow, at which hop, and the example
alert rules (loaded as they are) go pending for the blocked side only."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from reachtest.lab import netns
from reachtest.lab.topology import NETNS_PREFIX
from reachtest.model import tcp
from tests.lab.conftest import TEST_PREFIX, Lab, MakeLab, reachtest_cmd

ROOT = Path(__file__).resolve().parents[2]
PORT = 9469
PROMETHEUS_PORT = 19090
#: The management links: the client's side .1, Prometheus' side .2 (outside every lab's
#: own links and targets).
LINKS = ("198.18.250.0", "198.18.251.0")

CONFIG = """\
[exporter]
allow = ["198.18.0.0/15", "2001:db8::/32"]
[module.web]
services = ["tcp/443", "tcp/80"]
expect = {{ "tcp/443" = "open", "tcp/80" = "open" }}
mode = "trace"
rounds = 3
interval = 0.2
timeout = 1.0
max_ttl = {max_ttl}
"""


def prometheus_config(rules: Path) -> str:
    jobs = []
    for n, vantage in enumerate(("site-a", "site-b")):
        exporter = f"{LINKS[n].rsplit('.', 1)[0]}.1:{PORT}"
        jobs.append(
            f"""  - job_name: reachtest-web-{vantage}
    metrics_path: /probe
    params: {{module: [web]}}
    static_configs: [{{targets: [server]}}]
    relabel_configs:
      - {{source_labels: [__address__], target_label: __param_target}}
      - {{source_labels: [__param_target], target_label: target}}
      - {{source_labels: [__param_module], target_label: module}}
      - {{target_label: __address__, replacement: "{exporter}"}}
"""
        )
    return (
        "global: {scrape_interval: 4s, scrape_timeout: 3s, evaluation_interval: 2s}\n"
        f"rule_files: [{json.dumps(str(rules))}]\n"
        "scrape_configs:\n" + "".join(jobs)
    )


@contextmanager
def management(labs: list[Lab]) -> Iterator[str]:
    """A namespace with a veth into each lab's client; removed whatever happens."""
    name = f"{NETNS_PREFIX}{TEST_PREFIX}{secrets.token_hex(3)}-mgmt"
    netns.add_netns([name])
    try:
        netns.ip_batch(["link set lo up"], netns=name)
        for n, lab in enumerate(labs):
            prefix = LINKS[n].rsplit(".", 1)[0]
            outer, inner = f"mg{n}", f"mgmt{n}"
            netns.ip_batch(
                [f"link add {outer} netns {name} type veth peer name {inner} netns {lab.client}"]
            )
            netns.ip_batch(
                [f"address add {prefix}.2/30 dev {outer}", f"link set {outer} up"], netns=name
            )
            netns.ip_batch(
                [f"address add {prefix}.1/30 dev {inner}", f"link set {inner} up"], netns=lab.client
            )
        yield name
    finally:
        netns.delete_netns(name)


@contextmanager
def started(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process of ours, ended by its PID (SIGTERM, then SIGKILL) whatever happens."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def query(mgmt: str, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql}
    )
    with netns.entered(mgmt), urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def by_vantage(mgmt: str, promql: str) -> dict[str, float]:
    return {r["metric"].get("vantage", "?"): float(r["value"][1]) for r in query(mgmt, promql)}


def test_prometheus_tells_the_blocked_vantage_and_hop_apart(make_lab: MakeLab) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing (Debian package prometheus; scripts/setup)")
        pytest.skip("prometheus is missing (apt install prometheus)")
    blocked, clean = make_lab("tcp-drop"), make_lab("clean")
    truth = blocked.plan.scenario.truth
    [dropped] = [f for f in truth.flows if f.flow == tcp(443)]
    with tempfile.TemporaryDirectory(prefix="reachtest-prom-") as folder, ExitStack() as stack:
        tmp = Path(folder)
        config = tmp / "exporter.toml"
        config.write_text(CONFIG.format(max_ttl=truth.server_hop + 2))
        mgmt = stack.enter_context(management([blocked, clean]))
        for n, (lab, vantage) in enumerate(((blocked, "site-a"), (clean, "site-b"))):
            listen = f"{LINKS[n].rsplit('.', 1)[0]}.1:{PORT}"
            stack.enter_context(started(
                ["ip", "netns", "exec", lab.client, *reachtest_cmd(), "exporter",
                 "--config", str(config), "--listen", listen, "--vantage", vantage],
                tmp / f"exporter-{vantage}.log",
            ))  # fmt: skip
        (tmp / "prometheus.yml").write_text(
            prometheus_config(ROOT / "examples/prometheus/alerts.yml")
        )
        server = stack.enter_context(started(
            ["ip", "netns", "exec", mgmt, prometheus,
             f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
            tmp / "prometheus.log",
        ))  # fmt: skip
        success: dict[str, float] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(success) < 2:
            assert server.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            time.sleep(2)
            try:
                success = by_vantage(mgmt, "probe_success")
            except OSError:
                continue  # not listening yet
        logs = {p.name: p.read_text()[-1500:] for p in tmp.glob("*.log")}
        assert success == {"site-a": 0.0, "site-b": 1.0}, logs
        flow = by_vantage(mgmt, 'reachtest_flow_success{flow="tcp/443"}')
        assert flow == {"site-a": 0.0, "site-b": 1.0}
        assert by_vantage(mgmt, 'reachtest_flow_success{flow="tcp/80"}') == {
            "site-a": 1.0, "site-b": 1.0,
        }  # fmt: skip
        hop = by_vantage(mgmt, 'reachtest_stop_hop{flow="tcp/443"}')
        assert hop == {"site-a": float(dropped.last_hop), "site-b": 0.0}, hop  # the dropper
        other = clean.plan.scenario.truth.server_hop
        assert by_vantage(mgmt, "reachtest_target_hops") == {
            "site-a": float(truth.server_hop), "site-b": float(other),
        }  # fmt: skip
        # the example alert: pending (its `for` is 2 minutes) for the blocked side only
        alerts: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30  # rules are evaluated every 2 s
        while not alerts and time.monotonic() < deadline:
            time.sleep(1)
            alerts = query(mgmt, 'ALERTS{alertname="ReachtestServiceBlocked"}')
        assert {a["metric"]["alertstate"] for a in alerts} <= {"pending", "firing"}
        assert {(a["metric"]["vantage"], a["metric"]["flow"]) for a in alerts} == {
            ("site-a", "tcp/443")
        }
        # its description names the router that drops: the hop every report names
        url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/alerts"
        with netns.entered(mgmt), urllib.request.urlopen(url, timeout=10) as answer:
            firing = json.load(answer)["data"]["alerts"]
        (blocked,) = [a for a in firing if a["labels"]["alertname"] == "ReachtestServiceBlocked"]
        assert blocked["annotations"]["description"].startswith(
            f"It stops at hop {dropped.last_hop}: the router there drops or rejects it."
        ), blocked["annotations"]
        assert query(mgmt, "reachtest_exporter_probes_total") == []  # own metrics not scraped
