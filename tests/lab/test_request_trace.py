"""Requests traced TTL by TTL after the handshake (engine/requests.py, judged by
analysis/requests.py) in the application-filter scenarios (TLS, HTTP and DNS; in-path and
on-path), over IPv4 and IPv6, with raw sockets and without (as an ordinary user has):
the box's hop (and with raw sockets, or for DNS, its address), reset, dropped, a block
page or a forged DNS answer, in-path or on-path, filtered by name (the control
answered), at the distance the ground truth gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reachtest.analysis.requests import BLOCKED
from reachtest.lab import netns
from reachtest.lab.scenarios import AppKind
from reachtest.session import trace_request
from tests.lab.conftest import REQUEST_SCENARIOS, MakeLab, reachtest_cmd


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "ordinary"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("name", REQUEST_SCENARIOS)
def test_the_box_is_found_at_its_hop_and_the_control_passes(
    make_lab: MakeLab, name: str, v6: bool, raw: bool
) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    (request,) = truth.requests
    kind = {AppKind.TLS: "tls", AppKind.HTTP: "http", AppKind.DNS: "dns"}[request.kind]
    with netns.entered(lab.plan.topology.netns("client")):
        verdict, outcomes = trace_request(
            lab.server(v6), request.port, kind, request.name, request.control,
            range(1, truth.server_hop + 1), timeout_s=1.0, raw=raw,
        )  # fmt: skip
    assert verdict.state == BLOCKED and verdict.reason == request.reason, outcomes
    assert verdict.by_name is True and verdict.distance == truth.server_hop, outcomes
    # A drop needs the routers' ICMP: raw sockets, or for DNS the socket's error queue.
    sees_icmp = raw or kind == "dns"
    knows_hop = sees_icmp or request.reason != "dropped"
    assert verdict.box_hop == (request.hop if knows_hop else None), outcomes
    if sees_icmp:
        assert request.hop is not None
        assert verdict.box_address in lab.hop(request.hop, v6), outcomes
    if request.reason != "dropped":  # in-path or on-path: what came after tells
        assert verdict.on_path == ((not request.in_path) if sees_icmp else None), outcomes
    control = [o for o in outcomes if o.name == request.control]
    served = [o for o in control if o.ttl >= truth.server_hop]
    assert served and all(o.outcome == "answered" for o in served), control
    expected = {"tls": "server-hello", "http": "http-200", "dns": "dns-noerror"}[kind]
    assert {o.answer for o in served} == {expected}


AS_NOBODY = """
import json, sys
from reachtest.analysis.requests import judge_requests
from reachtest.engine.requests import trace_requests
from reachtest.packet.requests import RequestKind
server, last, name, control = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
outcomes = trace_requests(server, 443, RequestKind.TLS, [name, control], range(1, last + 1),
                          timeout_s=1.0)
verdict = judge_requests(outcomes, name, control)
print(json.dumps([verdict.state, verdict.reason, verdict.box_hop, verdict.by_name]))
"""


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_an_ordinary_user_finds_the_reset_at_its_hop(make_lab: MakeLab, v6: bool) -> None:
    """As uid 65534 with no capability (raw sockets refused: the engine does without)."""
    lab = make_lab("tls-sni-reset")
    truth = lab.plan.scenario.truth
    (request,) = truth.requests
    done = subprocess.run(
        [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", "setpriv", "--reuid",
         "65534", "--regid", "65534", "--clear-groups", "--inh-caps", "-all",
         "--bounding-set", "-all", sys.executable, "-c", AS_NOBODY, lab.server(v6),
         str(truth.server_hop), request.name, request.control],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [BLOCKED, "reset", request.hop, True]
