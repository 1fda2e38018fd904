"""The receive socket's kernel filter with real packets: while a lab router floods the
client with unrelated UDP (20,000 datagrams a second), a trace still concludes the
ground truth, and the unrelated packets never reach Python (the record's
unrelated-traffic count stays near zero; without the filter it is in the thousands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.lab.conftest import Lab, MakeLab, reachtest_cmd

ROOT = Path(__file__).resolve().parents[2]


def _flood(lab: Lab, seconds: int) -> subprocess.Popen[str]:
    """20,000 UDP datagrams a second from r1 to the client, once it printed "ready"."""
    flood = subprocess.Popen(
        ["ip", "netns", "exec", lab.plan.topology.netns("r1"), sys.executable, "-m",
         "tests.lab.flood", "--to", str(lab.plan.topology.client_address()),
         "--pps", "20000", "--seconds", str(seconds)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert flood.stdout is not None and flood.stdout.readline().strip() == "ready"
    return flood


def _traced(lab: Lab, env: dict[str, str]) -> dict[str, Any]:
    flood = _flood(lab, 6)
    try:
        assert flood.stdout is not None
        argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
        done = subprocess.run(
            [*argv, "trace", "server", "-4", "-p", "tcp/443", "-p", "tcp/80", "-p", "udp/53",
             "-c", "5", "-i", "0.2", "-n", "--json", "-"],
            capture_output=True, text=True, timeout=120, check=False, env=env,
        )  # fmt: skip
        sent = int(flood.stdout.readline() or 0)
        assert flood.wait(timeout=20) == 0
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert sent > 50_000, f"the flood sent only {sent}"
    assert done.returncode == 1, done.stderr  # tcp/443 is dropped in tcp-drop
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def test_unrelated_traffic_never_reaches_python(make_lab: MakeLab) -> None:
    lab = make_lab("tcp-drop")
    env = {k: v for k, v in os.environ.items() if k != "REACHTEST_NO_FILTER"}
    filtered = _traced(lab, env)
    unfiltered = _traced(lab, env | {"REACHTEST_NO_FILTER": "1"})
    for record in (filtered, unfiltered):
        (target,) = record["targets"]
        states = {f["flow"]: f["verdict"]["state"] for f in target["flows"]}
        assert states == {"icmp": None, "tcp/443": "filtered", "tcp/80": "open",
                          "udp/53": "open"}  # fmt: skip
    seen = filtered["totals"]["strays"].get("unrelated-traffic", 0)
    without = unfiltered["totals"]["strays"].get("unrelated-traffic", 0)
    assert without > 5_000, f"the flood did not reach the client ({without} without filter)"
    assert seen < 50, f"{seen} unrelated packets got through the filter"


def test_the_kernels_drops_are_counted(make_lab: MakeLab) -> None:
    """A receive socket that is not read while a flood fills its buffer: the kernel's
    drop count (PACKET_STATISTICS) says so; a quiet trace's record says 0."""
    import time

    from reachtest.engine.transport import RawTransport
    from reachtest.lab import netns
    from reachtest.model import ICMP_FLOW, TraceParams, tcp
    from tests.lab.conftest import run_engine

    lab = make_lab("tcp-drop")
    quiet = run_engine(
        lab, [lab.server()], [ICMP_FLOW, tcp(80)], TraceParams(rounds=2, interval_s=0.2)
    )
    assert quiet.kernel_dropped == 0
    with netns.entered(lab.client):
        transport = RawTransport(receive_buffer=64 * 1024)  # no filter: the flood gets in
    try:
        flood = _flood(lab, 1)
        try:
            assert flood.stdout is not None
            assert int(flood.stdout.readline() or 0) > 5_000
            assert flood.wait(timeout=20) == 0
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
        time.sleep(0.2)
        packets, drops = transport.receive_stats()
        assert drops > 1_000 and packets > 0, (packets, drops)
        assert transport.receive_stats() == (packets, drops)  # summed, not reset
    finally:
        transport.close()
