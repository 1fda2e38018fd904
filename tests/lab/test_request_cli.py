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
from tests.lab.conftest import REQUEST_SCENARIOS, MakeLab
from tests.lab.test_run_cli import in_lab
from tests.lab.test_unprivileged import trace_as_nobody

#: A request flow's protocol, the option that names it, its contrast flow's protocol.
FLOW_OF = {
    AppKind.TLS: ("tls", "--sni", "tcp"),
    AppKind.HTTP: ("http", "--host-header", "tcp"),
    AppKind.DNS: ("dns", "--qname", "udp"),
}


@pytest.mark.parametrize("name", REQUEST_SCENARIOS)
def test_the_request_is_blocked_where_the_syn_passes(make_lab: MakeLab, name: str) -> None:
    lab = make_lab(name)
    (request,) = lab.plan.scenario.truth.requests
    protocol, option, contrast = FLOW_OF[request.kind]
    flow = f"{protocol}/{request.port}"
    done = in_lab(
        lab, "trace", lab.server(), lab.server(True), "-p", flow, option, request.name,
        "--control-name", request.control, "-c", "2", "-i", "0.1", "--timeout", "1",
        "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the request is not answered
    record = json.loads(done.stdout)
    validate_record(record)
    for target in record["targets"]:
        syn = next(f for f in target["flows"] if f["flow"] == f"{contrast}/{request.port}")
        assert syn["verdict"]["state"] == "open"  # the SYN passes: the false answer of old
        (traced,) = target["requests"]
        assert traced["flow"] == flow and traced["name"] == request.name
        assert traced["state"] == "blocked-after-handshake" and traced["reason"] == request.reason
        assert traced["box_hop"] == request.hop and traced["by_name"] is True
        assert traced["box_address"] in lab.hop(request.hop or 0, ":" in target["address"])
        if request.reason in ("reset", "block-page", "dns-injected"):
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


def test_an_ordinary_user_localizes_a_forged_dns_answer_on_path(make_lab: MakeLab) -> None:
    """DNS needs no raw socket: the error queue names the routers, the plain socket reads
    the forged answer and the server's own after it."""
    from reachtest.lab.inject import FORGED_V4

    lab = make_lab("dns-qname-inject")
    (request,) = lab.plan.scenario.truth.requests
    done = trace_as_nobody(
        lab, "--unprivileged", lab.server(True), "-p", "dns/53", "--qname", request.name,
        "--control-name", request.control, "-c", "2", "-i", "0.1", "--timeout", "1", "-n",
        "--json", "-",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    (target,) = json.loads(done.stdout)["targets"]
    (traced,) = target["requests"]
    assert traced["transport"] == "ordinary" and traced["query_type"] == "A"
    assert (traced["state"], traced["reason"], traced["box_hop"], traced["on_path"]) == (
        "blocked-after-handshake", "dns-injected", request.hop, True,
    )  # fmt: skip
    assert traced["box_address"] in lab.hop(request.hop or 0, True)
    assert traced["answer"] == f"NOERROR A {FORGED_V4}"


def test_a_request_that_is_answered_passes_and_exits_0(make_lab: MakeLab) -> None:
    lab = make_lab("clean")
    done = in_lab(
        lab, "trace", "server", "-4", "-p", "tls/443", "-p", "http/80", "-p", "dns/53",
        "--qname", "allowed.example", "--control-name", "example.com", "-c", "2", "-i", "0.1",
        "--timeout", "1", "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (target,) = json.loads(done.stdout)["targets"]
    states = {r["flow"]: (r["state"], r["name"]) for r in target["requests"]}
    assert states == {
        "tls/443": ("answered", "server"), "http/80": ("answered", "server"),
        "dns/53": ("answered", "allowed.example"),
    }  # fmt: skip
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
    assert f"reset in-path at hop {request.hop} (" in failing[0]  # the verdict's words
    got = metrics.parse((tmp_path / "reachtest.prom").read_text())
    labels = (("port", "443"), ("protocol", "tls"), ("target", "web"))
    assert got[("probe_success", labels)] == 0
    assert got[("reachtest_stop_hop", labels)] == request.hop
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


DNS_RUN_CONFIG = """\
history = "history.sqlite"
reports = "reports"

[[target]]
host = "{server}"
name = "resolver"
services = ["dns/53"]
qname = "blocked.example"
qtype = "aaaa"
control_name = "allowed.example"
expect = {{ "dns/53" = "blocked", "udp/53" = "open" }}
rounds = 2
interval = 0.1
timeout = 1
policy = "always"
"""


def test_run_expects_a_forged_dns_answer_and_the_udp_flow_open(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """`run` with `services = ["dns/53"]`: the UDP flow of the port is traced as the
    contrast, the query (type AAAA) is judged forged on-path at the box's hop, and both
    expectations hold (exit 0)."""
    from reachtest.lab.inject import FORGED_V6

    lab = make_lab("dns-qname-inject")
    (request,) = lab.plan.scenario.truth.requests
    config = tmp_path / "dns.toml"
    config.write_text(DNS_RUN_CONFIG.format(server=lab.server(True)))
    done = in_lab(lab, "run", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    (saved,) = (tmp_path / "reports").rglob("*.json")
    (target,) = json.loads(saved.read_text())["targets"]
    (traced,) = target["requests"]
    assert (traced["reason"], traced["box_hop"], traced["on_path"]) == (
        "dns-injected", request.hop, True,
    )  # fmt: skip
    assert traced["query_type"] == "AAAA" and traced["answer"] == f"NOERROR AAAA {FORGED_V6}"
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        rows = dict(db.execute("SELECT flow, state FROM services").fetchall())
    assert (rows["udp/53"], rows["dns/53"]) == ("open", "blocked-after-handshake"), rows
