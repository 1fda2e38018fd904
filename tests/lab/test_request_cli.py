"""`reachtest trace -p tls/443` and `-p http/80` in the application-filter scenarios:
the request after the handshake is traced next to the SYN-level flow of the same port,
which says `open` in the same run (the contrast the issue is about), while the request
is blocked at the box's hop: reset or dropped, in-path or on-path, filtered by name (the
control is answered). As root (raw sockets) and as uid 65534 (ordinary sockets)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from reachtest.lab.scenarios import AppKind
from reachtest.report.record import validate_record
from tests.lab.conftest import MakeLab
from tests.lab.test_run_cli import in_lab
from tests.lab.test_unprivileged import trace_as_nobody


@pytest.mark.parametrize("name", ["tls-sni-reset", "http-host-drop", "tls-sni-inject"])
def test_the_request_is_blocked_where_the_syn_passes(make_lab: MakeLab, name: str) -> None:
    lab = make_lab(name)
    (request,) = lab.plan.scenario.truth.requests
    flow = f"{'tls' if request.kind is AppKind.TLS else 'http'}/{request.port}"
    option = "--sni" if request.kind is AppKind.TLS else "--host-header"
    done = in_lab(
        lab, "trace", lab.server(), lab.server(True), "-p", flow, option, request.name,
        "--control-name", request.control, "-c", "2", "-i", "0.1", "--timeout", "1",
        "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the request is not answered
    record = json.loads(done.stdout)
    validate_record(record)
    for target in record["targets"]:
        syn = next(f for f in target["flows"] if f["flow"] == f"tcp/{request.port}")
        assert syn["verdict"]["state"] == "open"  # the SYN passes: the false answer of old
        (traced,) = target["requests"]
        assert traced["flow"] == flow and traced["name"] == request.name
        assert traced["state"] == "blocked-after-handshake" and traced["reason"] == request.reason
        assert traced["box_hop"] == request.hop and traced["by_name"] is True
        assert traced["box_address"] in lab.hop(request.hop or 0, ":" in target["address"])
        if request.reason == "reset":
            assert traced["on_path"] is (not request.in_path)
        critical = [f for f in target["findings"] if f["kind"] == "blocked-after-handshake"]
        assert len(critical) == 1 and critical[0]["flow"] == flow
        assert f"hop {request.hop}" in critical[0]["summary"]


def test_an_ordinary_user_traces_the_request_too(make_lab: MakeLab) -> None:
    lab = make_lab("tls-sni-reset")
    (request,) = lab.plan.scenario.truth.requests
    done = trace_as_nobody(
        lab, "--unprivileged", lab.server(), "-p", "tls/443", "--sni", request.name,
        "-c", "2", "-i", "0.1", "--timeout", "1", "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    (target,) = json.loads(done.stdout)["targets"]
    (traced,) = target["requests"]
    assert traced["transport"] == "ordinary" and traced["on_path"] is None
    assert (traced["state"], traced["reason"], traced["box_hop"]) == (
        "blocked-after-handshake", "reset", request.hop,
    )  # fmt: skip


def test_a_request_that_is_answered_passes_and_exits_0(make_lab: MakeLab) -> None:
    lab = make_lab("clean")
    done = in_lab(
        lab, "trace", "server", "-4", "-p", "tls/443", "-p", "http/80", "-c", "2", "-i", "0.1",
        "--timeout", "1", "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (target,) = json.loads(done.stdout)["targets"]
    states = {r["flow"]: (r["state"], r["name"]) for r in target["requests"]}
    assert states == {"tls/443": ("answered", "server"), "http/80": ("answered", "server")}
    answers = {r["flow"]: r["answer"] for r in target["requests"]}
    assert answers["tls/443"].startswith("\\x16\\x03")  # a handshake record, escaped
    assert answers["http/80"].startswith("HTTP/1.1 200 OK\\x0d\\x0a")


RUN_CONFIG = """\
history = "history.sqlite"
prometheus = "reachtest.prom"

[[target]]
host = "{server}"
name = "web"
services = ["tls/443", "tcp/80"]
sni = "blocked.example"
expect = {{ "tls/443" = "open", "tcp/443" = "open" }}
rounds = 2
interval = 0.1
timeout = 1
policy = "on-failure"
"""


def test_run_judges_the_request_and_says_where_it_is_reset(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """`run` with `"tls/443" = "open"`: the SYN-level expectation holds, the request's
    does not; the summary names the hop; the metrics and the history say so."""
    from reachtest.schedule import metrics

    lab = make_lab("tls-sni-reset")
    (request,) = lab.plan.scenario.truth.requests
    config = tmp_path / "web.toml"
    config.write_text(RUN_CONFIG.format(server=lab.server()))
    done = in_lab(lab, "run", "--config", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    failing = [line for line in done.stdout.splitlines() if "expected" in line]
    assert len(failing) == 1, done.stdout  # tcp/443 is open, as expected
    assert (
        "web" in failing[0]
        and "tls/443: expected open, got blocked-after-handshake" in (failing[0])
    )
    assert f"reset after hop {request.hop} (" in failing[0]
    got = metrics.parse((tmp_path / "reachtest.prom").read_text())
    labels = (("port", "443"), ("protocol", "tls"), ("target", "web"))
    assert got[("probe_success", labels)] == 0
    assert got[("reachtest_blocked_at_hop", labels)] == (request.hop or 0) + 1
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        rows = db.execute(
            "SELECT state, reason_hop FROM services WHERE flow = 'tls/443' ORDER BY run_id"
        ).fetchall()
    assert rows[-1] == ("blocked-after-handshake", request.hop), rows


def test_a_drop_is_placed_on_a_rate_limited_path(make_lab: MakeLab) -> None:
    """Every router at the kernel's ICMP limits (`ratelimited-path`), r2 dropping HTTP
    requests for a Host: the first silence may be a router's rate limit, so it is proven
    (the request sent alone once the budgets refilled) before the drop is placed."""
    lab = make_lab("ratelimited-path", rules=("r2:host-drop:dropped.example",))
    done = in_lab(
        lab, "trace", "server", "-4", "-p", "http/80", "--host-header", "dropped.example",
        "-c", "2", "-i", "0.3", "--timeout", "1", "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    (target,) = json.loads(done.stdout)["targets"]
    (traced,) = target["requests"]
    assert (traced["state"], traced["reason"], traced["box_hop"]) == (
        "blocked-after-handshake", "dropped", 2,
    ), traced  # fmt: skip
    assert traced["box_address"] in lab.hop(2)
