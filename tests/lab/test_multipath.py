"""Multipath in the lab, real packets, v4 and v6, as an ordinary user: MDA finds every
branch of each ECMP scenario (branches of equal and of different lengths) in 19 runs of
20 at least (asked for 99% over the path: a
test at 95% would fail by the rule's own odds one CI run in ten or so), and
``trace --mda`` says partially-filtered, naming the branch that blocks, its hop and
address, where plain sockets from the same source ports agree on which fail and which
pass (the truth: each port's fate, stable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reachtest.analysis.where import of_flow
from reachtest.lab.scenarios import Action
from reachtest.report.record import validate_record
from tests.lab.conftest import BRANCH_SCENARIOS, Lab, MakeLab, reachtest_cmd
from tests.lab.where_agreement import disagreements

NOBODY = "65534"
RUNS = 20

#: Run inside the client namespace as uid 65534: explore a flow ``RUNS`` times (new
#: source ports each time), print each run's responders per TTL as JSON lines.
EXPLORE = """
import json, sys
from reachtest.engine.multipath import explore
address, kind = sys.argv[1], sys.argv[2]
port, last, runs = (int(a) for a in sys.argv[3:6])
for _ in range(runs):
    e = explore(address, kind, port, range(1, last + 1), timeout_s=1.0, confidence=0.998)
    print(json.dumps({"probes": e.probes, "settled": e.settled, "hops": {
        t: sorted({p.responder for p in e.paths[t].values()
                   if p.outcome == "time-exceeded" and p.responder}) for t in e.ttls}}))
"""

#: Plain sockets from given source ports, full TTL: which reach the server (the truth).
#: Each port twice, the ports at once (a silent port waits its timeout in parallel).
PLAIN = """
import json, socket, struct, sys
from concurrent.futures import ThreadPoolExecutor
address, port, ids = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
def fates(flow_id):
    out = []
    for _ in range(2):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.bind(("::" if ":" in address else "0.0.0.0", flow_id))
            s.settimeout(1.5)
            try:
                s.connect((address, port))
                out.append("reached")
            except OSError:
                out.append("failed")
    return out
with ThreadPoolExecutor(max_workers=len(ids) or 1) as pool:
    print(json.dumps(dict(zip(ids, pool.map(fates, ids)))))
"""


def as_nobody(lab: Lab, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    env = dict(os.environ)
    return subprocess.run(
        [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *setpriv, *argv],
        capture_output=True, text=True, timeout=timeout, check=False, cwd="/", env=env,
    )  # fmt: skip


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize(
    ("name", "flow"),
    [("ecmp", "udp/53"), ("ecmp3-branch-drop", "tcp/80"), ("ecmp-uneven-drop", "tcp/80")],
)
def test_mda_finds_every_branch_in_19_runs_of_20(
    make_lab: MakeLab, name: str, flow: str, v6: bool
) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    m, width = truth.ecmp_hop, truth.ecmp_width
    assert m is not None
    kind, _, port = flow.partition("/")
    done = as_nobody(
        lab, sys.executable, "-c", EXPLORE, lab.server(v6), kind, port, str(truth.hops), str(RUNS)
    )
    assert done.returncode == 0, done.stderr
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(runs) == RUNS
    want = {m: lab.hop(m, v6), m + 1: lab.hop(m + 1, v6)}
    assert len(want[m]) == width  # the lab's own truth: one address per branch
    complete = 0
    for run in runs:
        hops = {int(t): set(r) for t, r in run["hops"].items()}
        for ttl, addresses in hops.items():  # never an address that is not there
            assert addresses <= lab.hop(ttl, v6), (ttl, addresses)
        complete += all(hops[t] == want[t] for t in want)
    assert complete >= RUNS - 1, (complete, runs[:3])
    probes = sorted(r["probes"] for r in runs)
    print(f"{name} {flow} v6={v6}: {complete}/{RUNS} complete, probes median {probes[RUNS // 2]}")


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("name", BRANCH_SCENARIOS)
def test_trace_mda_says_partially_filtered_at_the_blocking_branch(
    make_lab: MakeLab, name: str, v6: bool
) -> None:
    lab = make_lab(name)
    block = lab.plan.scenario.truth.branch_block
    assert block is not None
    topology = lab.plan.topology
    address = topology.facing_client(block.node)
    blocker = str(address.ipv6.ip if v6 else address.ipv4.ip)
    done = as_nobody(
        lab, *reachtest_cmd(), "trace", lab.server(v6), "-p", block.flow.label, "-p", "tcp/80",
        "-c", "2", "-i", "0.1", "--timeout", "0.5", "-n", "--mda", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # a partial filter fails the run
    record = json.loads(done.stdout)
    validate_record(record)
    (target,) = record["targets"]
    verdicts = {f["flow"]: f["verdict"] for f in target["flows"]}
    assert verdicts["tcp/80"]["state"] == "open"
    verdict = verdicts[block.flow.label]
    assert verdict["state"] == "partially-filtered", target.get("multipath")
    how = "dropped" if block.action is Action.DROP else "rejected"
    assert verdict["branch"]["how"] == how
    assert (verdict["branch"]["hop"], verdict["branch"]["address"]) == (block.hop, blocker)
    (finding,) = [f for f in target["findings"] if f["kind"] == "partially-filtered"]
    assert finding["first_hop"] == block.hop and finding["responder"] == blocker
    # Every output says the branch's hop, address and words (issue 31).
    said = f"flow hashes {how if how == 'rejected' else 'dropped'} "
    problems = [
        p
        for p in disagreements(record, lab.plan.scenario.truth, lambda h, v: lab.hop(h, v6=v))
        if "the truth says" not in p and "is not" not in p  # the truth of one hash's path
    ]
    assert not problems, "\n".join(problems)
    assert said + ("by" if how == "rejected" else "after") + f" hop {block.hop} ({blocker})" in (
        of_flow(next(f for f in target["flows"] if f["flow"] == block.flow.label)).words()  # type: ignore[union-attr]
    )
    # The truth: plain connections from the same source ports, each twice.
    entry = next(m for m in target["multipath"] if m["flow"] == block.flow.label)
    fates = {
        f["flow_id"]: "reached" if all(o in ("answered", "refused") for o in f["outcomes"])
        else "failed"
        for f in entry["fates"]
    }  # fmt: skip
    plain = as_nobody(
        lab, sys.executable, "-c", PLAIN, lab.server(v6), str(block.flow.port),
        json.dumps(sorted(fates)),
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    truth = {int(k): v for k, v in json.loads(plain.stdout).items()}
    assert all(len(set(v)) == 1 for v in truth.values()), truth  # stable per port
    assert {k: v[0] for k, v in truth.items()} == fates
    failing = sum(1 for v in fates.values() if v == "failed")
    assert verdict["branch"]["failing"] == failing and 0 < failing < len(fates)
    # tcp/80 on the same lab: branches, every hash passes.
    other = next(m for m in target["multipath"] if m["flow"] == "tcp/80")
    # Branches seen, every hash passes; all of them only as often as MDA's 95 % promises
    # (held to 19 runs in 20 above: one run here met 2 of r3a/r3b/r3c for tcp/80).
    assert other["state"] == "all-reached" and 2 <= other["widest"] <= block.width


HELD_RUNS = 6
#: As EXPLORE, held to ``known`` routers at the ECMP hop (what another flow met there).
HELD = """
import json, sys
from reachtest.engine.multipath import explore, widths
address, kind = sys.argv[1], sys.argv[2]
port, last, runs, hop, known = (int(a) for a in sys.argv[3:8])
for _ in range(runs):
    e = explore(address, kind, port, range(1, last + 1), timeout_s=0.5, at_least={hop: known})
    answered = sum(1 for p in e.paths[hop].values() if p.outcome == "time-exceeded")
    print(json.dumps({"answered": answered, "routers": widths(e)[hop], "probes": e.probes}))
"""


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_held_to_the_routers_another_flow_met_no_run_takes_one_branch_for_the_path(
    make_lab: MakeLab, v6: bool
) -> None:
    # tcp/443 behind one branch of two: 6 identifiers all hash onto the blocking branch
    # once in 32 runs, and MDA (6 answers from 1 router: settled) would call the path
    # blocked. Held to the 2 routers tcp/80 met there, each run asks 11 identifiers.
    lab = make_lab("ecmp-branch-drop")
    truth = lab.plan.scenario.truth
    m, width = truth.ecmp_hop, truth.ecmp_width
    assert m is not None
    done = as_nobody(
        lab, sys.executable, "-c", HELD, lab.server(v6), "tcp", "443", str(truth.hops),
        str(HELD_RUNS), str(m), str(width),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(runs) == HELD_RUNS
    assert all(r["answered"] >= 11 for r in runs), runs  # the stopping point of 2 routers
    # 11 identifiers on one branch: 1 run in 1024; one such run of 6 is let pass.
    assert sum(r["routers"] == width for r in runs) >= HELD_RUNS - 1, runs


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_a_flow_on_the_longer_branch_is_traced_to_the_target_and_judged_open(
    make_lab: MakeLab, v6: bool
) -> None:
    # ecmp-uneven-drop: r3b's branch is one router longer. A flow hashed onto it meets
    # routers one TTL later and the server at TTL 7, not 6: it must be probed that far
    # (not stopped at the distance the other flows found) and called open, and the
    # others' answers at TTL 6 stay the server's own (not a middlebox's). Each run's
    # flows get new source ports: over 3 runs of 4 flows some take the long branch.
    lab = make_lab("ecmp-uneven-drop")
    distance = lab.plan.scenario.truth.server_hop
    flows = ("tcp/80", "tcp/8080", "tcp/22", "udp/53")
    longer = 0
    for _ in range(3):
        done = subprocess.run(
            [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd(),
             "trace", lab.server(v6), *(x for f in flows for x in ("-p", f)), "-c", "2",
             "-i", "0.1", "--timeout", "1", "-n", "--json", "-"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        (target,) = json.loads(done.stdout)["targets"]
        assert target["distance"] == distance
        for flow in target["flows"]:
            if flow["flow"] == "icmp":
                continue
            assert flow["verdict"]["state"] == "open", (flow["flow"], flow["path"])
            assert flow["path"]["last_hop"] in (distance, distance + 1), flow["path"]
            longer += flow["path"]["last_hop"] == distance + 1
        assert not [f for f in target["findings"] if f["kind"].startswith("forged")]
    assert longer, "no flow took the longer branch in 12 (1 chance in 4096)"
