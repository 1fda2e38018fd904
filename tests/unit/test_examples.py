"""The examples users copy are checked: the exporter's configuration loads; Prometheus'
own promtool accepts the scrape configuration and the alert rules, runs the alerts' unit
tests, and parses every PromQL expression of the Grafana dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from reachtest.serve.config import load_exporter_config

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "examples" / "prometheus"
#: Grafana's variables, as a query would see them.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(
                "promtool is missing (Debian package prometheus; scripts/setup installs it)"
            )
        pytest.skip("promtool is missing (apt install prometheus)")
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def test_the_example_exporter_configuration_loads() -> None:
    config = load_exporter_config(ROOT / "examples" / "exporter.toml")
    assert set(config.modules) == {"web", "dns"}
    assert config.modules["web"].mode == "trace" and config.allow


def test_promtool_accepts_the_scrape_configuration() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_alert_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
             for r in g["rules"]}  # fmt: skip
    tested_names = set(
        re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text())
    )
    assert names == tested_names, "every alert has a unit test"


def dashboard_expressions() -> list[str]:
    board = json.loads((PROMETHEUS / "dashboard.json").read_text())
    found = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", query["query"])
            assert inner, query
            found.append(inner.group(1))
    return found


def as_rules(expressions: list[str]) -> str:
    def grafana(expr: str) -> str:
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        return re.sub(r"\$\w+", ".*", expr)

    rules = [
        {"record": f"dashboard:expr_{i}", "expr": grafana(e)} for i, e in enumerate(expressions)
    ]
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 8
    (tmp_path / "dashboard.yml").write_text(as_rules(expressions))
    done = promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # ... and the check can fail: one broken expression is refused
    (tmp_path / "broken.yml").write_text(as_rules([*expressions, "max by (ttl (up)"]))
    assert promtool("check", "rules", "broken.yml", cwd=tmp_path).returncode != 0
