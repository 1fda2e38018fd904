"""The engine under ECMP and under attack, with real packets.

ECMP: Paris flows keep one path per flow across rounds, while classic probes (a new
source port per probe) spread over both parallel routers. Injection: a process in a
router namespace forges thousands of ICMP errors and RSTs during a run; none may be
attributed to a probe and every one must be counted as a stray.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from reachtest.lab import netns
from reachtest.lab.scenarios import middle
from reachtest.model import ICMP_FLOW, TraceParams, tcp, udp
from tests.lab import netprobe
from tests.lab.conftest import MakeLab, run_engine
from tests.lab.forger import FORGED_TTL
from tests.lab.test_engine_truth import allowed

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_paris_flows_keep_one_path_while_classic_probes_spread(make_lab: MakeLab, v6: bool) -> None:
    lab = make_lab("ecmp")
    hop = middle(5)
    flows = [ICMP_FLOW, *(tcp(p) for p in range(1000, 1016)), *(udp(p) for p in range(2000, 2008))]
    params = TraceParams(rounds=6, interval_s=0.05, timeout_s=0.5, max_ttl=7)
    result = run_engine(lab, [lab.server(v6)], flows, params)
    with netns.entered(lab.client):
        classic = {
            netprobe.udp_probe(lab.server(v6), 33434 + n, ttl=hop, sport=41000 + n).responder
            for n in range(32)
        }
    paths: dict[str, set[str | None]] = defaultdict(set)
    rounds: dict[str, int] = defaultdict(int)
    for outcome in result.outcomes:
        if outcome.ttl == hop:
            paths[outcome.flow.label].add(outcome.responder)
            rounds[outcome.flow.label] += 1
    assert set(rounds.values()) == {6}, rounds
    assert all(len(seen) == 1 for seen in paths.values()), {
        f: s for f, s in paths.items() if len(s) != 1
    }
    used = set().union(*paths.values())
    assert used == lab.hop(hop, v6), f"25 fixed flows should use both routers, used {used}"
    assert classic == lab.hop(hop, v6), f"classic probes should spread, got {classic}"


def test_forged_errors_and_resets_are_strays_never_outcomes(make_lab: MakeLab) -> None:
    lab = make_lab("combo")
    truth = lab.plan.scenario.truth
    topology = lab.plan.topology
    me4, me6 = sorted(lab.hop(1)), sorted(lab.hop(1, v6=True))
    forger = subprocess.Popen(
        [
            "ip", "netns", "exec", topology.netns("r1"),
            sys.executable, "-m", "tests.lab.forger",
            "--client4", str(topology.client_address(v6=False)),
            "--client6", str(topology.client_address(v6=True)),
            "--me4", me4[0], "--me6", me6[0], "--seconds", "1.0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert forger.stdout is not None
        assert forger.stdout.readline().strip() == "ready"
        params = TraceParams(rounds=12, interval_s=0.2, timeout_s=0.5, max_ttl=truth.server_hop + 2)
        targets = [lab.server(False), lab.server(True)]
        result = run_engine(lab, targets, [f.flow for f in truth.flows], params)
        forged = int(forger.stdout.readline())
        assert forger.wait(timeout=10) == 0
    finally:
        if forger.poll() is None:
            forger.kill()
            forger.wait()
    strays = sum(n for _, n in result.stray_counts)
    attributed = [o for o in (*result.outcomes, *result.extras) if o.reply_ttl == FORGED_TTL]
    assert forged >= 2000, f"the forger sent only {forged} packets"
    assert attributed == [], attributed[:5]
    assert strays == forged, f"{forged} forged, {strays} strays: {result.stray_counts}"
    reasons = dict(result.stray_counts)
    assert reasons.get("inconsistent-quote", 0) + reasons.get("unknown-probe", 0) > forged // 2
    assert reasons.get("unknown-flow", 0) > 0  # the random quotes
    wrong = []
    for outcome in result.outcomes:
        flow = truth.flow(outcome.flow)
        want = allowed(lab, truth, flow, outcome.ttl, ":" in outcome.target)
        if (str(outcome.kind), outcome.responder) not in want:
            wrong.append(outcome)
    assert wrong == [], wrong[:5]
