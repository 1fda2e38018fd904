"""The unprivileged transport with real packets: `sudo reachtest trace --unprivileged`
becomes uid 65534 with no capability *before* it opens a socket, so it traces exactly as
an ordinary user would (ping sockets allowed by the client namespace's
`ping_group_range`, bound UDP sockets, TCP connect). For every scenario it can see
through, IPv4 and IPv6 in one run, the record holds the ground truth, as with raw
sockets. With `ping_group_range` closed, icmp is said to be unavailable in one line and
the services are still traced. Without CAP_NET_RAW and without the flag, it falls back
to ordinary sockets by itself and says so.

Scenarios left out, and why (docs/privileges.md lists them too):
- `tcp-seq-rewrite`: the client's kernel refuses a SYN-ACK that acknowledges no SYN it
  sent, so a connect() never learns the service answered (raw sockets see it).
- `nat-stateless`: the kernel hands an ICMP error to the socket its quote names; a NAT
  that leaves quotes translated names no socket of ours, so hops beyond it are unseen.
- `mss-clamp`, `dscp-rewrite`: the error queue gives the offender and the error, not the
  router's quote, so a header rewritten on the way cannot show (raw sockets see it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from reachtest.model import Protocol
from reachtest.report.record import validate_record
from tests.lab.conftest import SINGLE_PATH_SCENARIOS, Lab, MakeLab, reachtest_cmd
from tests.lab.test_trace_cli import check_target

NOBODY = "65534"
CANNOT = {"tcp-seq-rewrite", "nat-stateless", "mss-clamp", "dscp-rewrite"}


def trace_as_nobody(lab: Lab, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    env |= {"SUDO_UID": NOBODY, "SUDO_GID": NOBODY}
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
    return subprocess.run(
        [*argv, "trace", *args], env=env, capture_output=True, text=True, timeout=timeout,
        check=False, cwd="/",
    )  # fmt: skip


@pytest.mark.parametrize("name", [n for n in SINGLE_PATH_SCENARIOS if n not in CANNOT])
def test_unprivileged_trace_concludes_each_scenarios_ground_truth(
    make_lab: MakeLab, name: str
) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    ports = [f.flow.label for f in truth.flows if f.flow.protocol is not Protocol.ICMP]
    noisy = truth.noisy
    done = trace_as_nobody(
        lab, "--unprivileged", str(lab.server()), str(lab.server(True)),
        *(a for p in ports for a in ("-p", p)),
        "-c", "40" if noisy else "8", "-i", "0.05" if noisy else "0.1",
        "--timeout", "0.5", "-m", str(truth.server_hop + 3), "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    record = json.loads(done.stdout)
    validate_record(record)
    assert record["params"]["transport"] == "unprivileged"
    problems = [p for t in record["targets"] for p in check_target(t, truth)]
    assert not problems, "\n".join(problems)


def test_without_ping_sockets_icmp_is_left_out_in_one_line(make_lab: MakeLab) -> None:
    lab = make_lab("tcp-drop")
    closed = subprocess.run(
        [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--",
         "sysctl", "-q", "-w", "net.ipv4.ping_group_range=1 0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert closed.returncode == 0, closed.stderr
    done = trace_as_nobody(
        lab, "--unprivileged", "server", "-4", "-p", "tcp/443", "-p", "tcp/80", "-c", "3",
        "-i", "0.1", "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # tcp/443 is dropped
    notes = [line for line in done.stderr.splitlines() if "ping_group_range" in line]
    assert len(notes) == 1 and "without icmp" in notes[0], done.stderr
    record = json.loads(done.stdout)
    assert record["flows"] == ["tcp/80", "tcp/443"] or record["flows"] == ["tcp/443", "tcp/80"]
    assert any("no ICMP echo" in n for n in record["params"]["transport_notes"])
    (target,) = record["targets"]
    verdicts = {f["flow"]: f["verdict"] for f in target["flows"]}
    assert verdicts["tcp/80"]["state"] == "open" and verdicts["tcp/443"]["state"] == "filtered"


def test_without_cap_net_raw_it_falls_back_by_itself(make_lab: MakeLab, tmp_path: Path) -> None:
    """Root without CAP_NET_RAW (setpriv drops it from the bounding set, so the trace
    starts without it): no flag needed, one line says so, the verdicts are right."""
    lab = make_lab("tcp-drop")
    setpriv = ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"]
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *setpriv]
    done = subprocess.run(
        [*argv, *reachtest_cmd(), "trace", "server", "-6", "-p", "tcp/443", "-p", "udp/53",
         "-c", "3", "-i", "0.1", "-n", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    notes = [line for line in done.stderr.splitlines() if "ordinary sockets" in line]
    assert len(notes) == 1 and "CAP_NET_RAW" in notes[0], done.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["params"]["transport"] == "unprivileged"
    (target,) = record["targets"]
    verdicts = {f["flow"]: f["verdict"]["state"] for f in target["flows"]}
    assert verdicts == {"icmp": None, "tcp/443": "filtered", "udp/53": "open"}
