"""Differential: `reachtest trace` and mtr (Debian mtr-tiny) see the same hops, for ICMP
and for a TCP port, on a clean path and where a filter drops the port."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
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


def mtr_loss(lab: Lab, v6: bool) -> dict[str, float]:
    """Loss% per hop address from `mtr --json` at its default pace (one probe a second)."""
    mtr = shutil.which("mtr")
    if mtr is None:
        pytest.skip("mtr is needed for this differential test (apt install mtr-tiny)")
    done = in_client(lab, mtr, "--json", "-n", "-c", "10", "-6" if v6 else "-4", lab.server(v6))
    assert done.returncode == 0, done.stderr
    return {h["host"]: float(h["Loss%"]) for h in json.loads(done.stdout)["report"]["hubs"]}


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_limited_is_not_loss_where_mtr_says_zero(
    make_lab: MakeLab, v6: bool, tmp_path: Path
) -> None:
    """Every router at the kernel's ICMP limits, four flows at default pace: mtr says 0%
    at every hop; so do reachtest's icmp column, in the record and on the terminal, and
    no cell of any flow shows loss that is only a limit (its non-answers all limited)."""
    lab = make_lab("ratelimited-path")
    theirs = mtr_loss(lab, v6)
    assert theirs and all(v == 0.0 for v in theirs.values()), theirs
    done = in_client(
        lab, "env", "COLUMNS=250", *reachtest_cmd(), "trace", lab.server(v6), "-p", "tcp/443",
        "-p", "tcp/80",
        "-p", "udp/53", "-c", "10", "-n", "--report", "--json", str(tmp_path / "run.json"),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # tcp/443 is dropped at r3
    record = json.loads((tmp_path / "run.json").read_text())
    [target] = record["targets"]
    icmp = next(f for f in target["flows"] if f["flow"] == "icmp")
    ours = {h["responders"][0]["address"]: h["loss_pct"] for h in icmp["hops"] if h["responders"]}
    assert set(ours) == set(theirs), (ours, theirs)
    assert all(v == 0.0 for v in ours.values()), ours
    for flow in target["flows"]:
        for hop in flow["hops"]:
            if hop["snt"] > hop["rcv"] and hop["snt"] - hop["rcv"] == hop["limited"]:
                assert hop["loss_pct"] == 0, (flow["flow"], hop)
    # The terminal's icmp Loss% (the first percentage of each hop row) reads the same.
    rows = [line.split() for line in done.stdout.splitlines() if re.match(r" *\d+ \S", line)]
    shown = [next(t for t in row if t.endswith("%")) for row in rows]
    assert shown and all(s == "0.0%" for s in shown), shown
    limited = any(h["limited"] for f in target["flows"] for h in f["hops"])
    assert ("Loss% leaves out" in done.stdout) == limited
