"""Differential: `reachtest trace` and mtr (Debian mtr-tiny) see the same hops, for ICMP
and for a TCP port, on a clean path and where a filter drops the port."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from reachtest.model import tcp
from tests.lab.conftest import Lab, MakeLab, reachtest_cmd


def in_client(lab: Lab, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", lab.client, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mtr_hops(lab: Lab, *options: str) -> list[str | None]:
    """The host of each hop from `mtr --json`, None for '???', up to the last answer."""
    mtr = shutil.which("mtr")
    if mtr is None:
        pytest.skip("mtr is needed for this differential test (apt install mtr-tiny)")
    done = in_client(
        lab, mtr, "--json", "-n", "-c", "3", "-i", "0.2", "-m", "10", *options, lab.server()
    )
    assert done.returncode == 0, done.stderr
    hubs = json.loads(done.stdout)["report"]["hubs"]
    hosts: list[str | None] = [None if h["host"] == "???" else h["host"] for h in hubs]
    while hosts and hosts[-1] is None:
        hosts.pop()
    return hosts


def our_hops(record: dict[str, Any], label: str) -> list[str | None]:
    """The most frequent responder of each TTL of one flow, up to the last answer."""
    flow = next(f for f in record["targets"][0]["flows"] if f["flow"] == label)
    by_ttl = {h["ttl"]: h for h in flow["hops"]}
    hosts: list[str | None] = []
    for ttl in range(1, max(by_ttl) + 1):
        hop = by_ttl.get(ttl)
        hosts.append(hop["responders"][0]["address"] if hop and hop["responders"] else None)
    while hosts and hosts[-1] is None:
        hosts.pop()
    distance = record["targets"][0]["distance"]
    return hosts[:distance] if distance else hosts


@pytest.mark.parametrize(("scenario", "port"), [("clean", 80), ("tcp-drop", 443)])
def test_trace_and_mtr_see_the_same_hops(make_lab: MakeLab, scenario: str, port: int) -> None:
    lab = make_lab(scenario)
    done = in_client(
        lab, *reachtest_cmd(), "trace", lab.server(), "-p", f"tcp/{port}",
        "-c", "3", "-i", "0.2", "-m", "10", "--timeout", "1", "-n", "--json", "-",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    record = json.loads(done.stdout)
    assert our_hops(record, "icmp") == mtr_hops(lab)
    assert our_hops(record, f"tcp/{port}") == mtr_hops(lab, "--tcp", "-P", str(port))
    last_hop = lab.plan.scenario.truth.flow(tcp(port)).last_hop
    assert len(our_hops(record, f"tcp/{port}")) == min(last_hop, record["targets"][0]["distance"])
