#!/usr/bin/env python3
"""Benchmark `reachtest trace` on rate-limited paths next to mtr, measured in the same run.

For each lab (`ratelimited-path`: every router and the server keep the kernel's ICMP rate
limits and r3 drops tcp/443; `clean`: no limits, the no-regression check) it runs from
inside the lab's client namespace (no default route), --runs times, interleaved:

  * reachtest trace -c 10 (icmp + tcp/443 + tcp/80 + udp/53), report mode, --json;
  * mtr --report -c 10 (ICMP), and mtr --report -c 10 --tcp -P 443 (one service).

Before every command it waits --settle seconds, so each starts with the routers' ICMP
budgets refilled. It prints medians of wall and CPU time, the wall ratio to reachtest,
whether reachtest's verdicts are right (from its run record), and the *cells with
unexplained loss*: for reachtest, (flow, hop) cells before the target that show
non-answers which neither a `limited` mark nor a finding explains; for mtr, hops before
the target with Loss% above 0 (mtr explains none). Needs root and Debian's mtr-tiny
(a missing mtr is skipped and said so). Always tears its labs down.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import lab_allowed, run_measured

LAB = "benchrl"
REACHTEST = str(Path(sys.executable).parent / "reachtest")
MTR_HOP = re.compile(r"^\s*(\d+)\.\|--\s+(\S+)\s+([\d.]+)%")
#: What a correct trace of each lab concludes: flow -> (state, where it stops).
TRUTH = {
    "ratelimited-path": {"tcp/443": ("filtered", 3), "tcp/80": ("open", 6), "udp/53": ("open", 6)},
    "clean": {"tcp/443": ("open", 6), "tcp/80": ("open", 6), "udp/53": ("open", 6)},
}


def measured(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process tree, stdout) of one run."""
    wall, cpu, done = run_measured(argv)
    if done.returncode not in (0, 1):
        raise SystemExit(f"bench_ratelimit: {' '.join(argv)} failed:\n{done.stderr}")
    return wall, cpu, done.stdout


def reachtest_quality(record: dict[str, Any], lab: str) -> tuple[bool, int]:
    """(verdicts right, cells with unexplained loss) of one run record."""
    [target] = record["targets"]
    distance = target["distance"] or 0
    right = target["reachable"]
    for flow in target["flows"]:
        want = TRUTH[lab].get(flow["flow"])
        if want is None:
            continue
        state, stop = want
        verdict, path = flow["verdict"], flow["path"]
        where = path["distance"] if verdict["reached"] else (path["last_hop"] or 0)
        right = right and verdict["state"] == state and where == stop
    covered: set[int] = set()
    for f in target["findings"]:
        if f["kind"] == "forwarding-loss":
            covered |= set(range(f["last_hop"], 256))
        elif f["kind"] == "silent-hop":
            covered.add(f["first_hop"])
    unexplained = 0
    for flow in target["flows"]:
        last = flow["path"]["last_hop"] or 0
        for hop in flow["hops"]:
            if hop["ttl"] >= distance or hop["ttl"] > last or hop["ttl"] in covered:
                continue  # the target itself, beyond where the flow stops, or explained
            if hop["snt"] - hop["rcv"] > hop.get("limited", 0):
                unexplained += 1
    return right, unexplained


def mtr_lossy_hops(text: str, distance: int) -> int:
    """Hops before the target where mtr's report shows loss."""
    hops = [MTR_HOP.match(line) for line in text.splitlines()]
    return sum(1 for m in hops if m and int(m.group(1)) < distance and float(m.group(3)) > 0)


def bench(lab: str, runs: int, settle_s: float, mtr: str | None) -> list[str]:
    from reachtest.lab import manager

    plan = manager.up(lab, lab_id=LAB)
    try:
        topo = plan.topology
        server = str(topo.server_address(v6=False))
        distance = topo.hops + 1
        inside = ["ip", "netns", "exec", topo.netns("client")]
        ours = "reachtest trace -c 10 (icmp + tcp/443 + tcp/80 + udp/53)"
        rows: list[tuple[str, list[str]]] = [
            (ours, [REACHTEST, "trace", server, "-p", "tcp/443", "-p", "tcp/80", "-p",
                    "udp/53", "-c", "10", "--report", "-n", "--json", "-"]),
        ]  # fmt: skip
        if mtr:
            base = [mtr, "--report", "-c", "10", "-n", server]
            rows += [
                ("mtr --report -c 10 (icmp)", base),
                ("mtr --report -c 10 --tcp -P 443", [*base, "--tcp", "-P", "443"]),
            ]
        samples: dict[str, list[tuple[float, float, str]]] = {name: [] for name, _ in rows}
        for _ in range(runs):  # interleaved, so drift hits every row alike
            for name, argv in rows:
                time.sleep(settle_s)  # every command starts with refilled ICMP budgets
                samples[name].append(measured([*inside, *argv]))
        lines = []
        ours_wall = statistics.median(s[0] for s in samples[ours])
        for name, _ in rows:
            wall = statistics.median(s[0] for s in samples[name])
            cpu = statistics.median(s[1] for s in samples[name])
            if name == ours:
                quality = [reachtest_quality(json.loads(s[2]), lab) for s in samples[name]]
                verdicts = f"{sum(ok for ok, _ in quality)}/{len(quality)} right"
                lossy = statistics.median(n for _, n in quality)
            else:
                verdicts = "-"
                lossy = statistics.median(mtr_lossy_hops(s[2], distance) for s in samples[name])
            lines.append(
                f"{lab:17} {name:56} {wall:7.2f} {cpu:6.2f} {ours_wall / wall:6.2f} "
                f"{verdicts:>10} {lossy:>11g}"
            )
        return lines
    finally:
        manager.down(LAB)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions per row [3]")
    parser.add_argument("--settle", type=float, default=7.0, help="seconds before each [7]")
    parser.add_argument(
        "--lab", action="append", choices=sorted(TRUTH), help="only these labs [both]"
    )
    args = parser.parse_args()

    if not lab_allowed("bench_ratelimit"):
        return 3
    mtr = shutil.which("mtr")
    if mtr is None:
        print("bench_ratelimit: mtr is not installed (apt install mtr-tiny): its rows are skipped")
    print(f"{'lab':17} {'command':56} {'wall s':>7} {'CPU s':>6} {'ratio':>6} "
          f"{'verdicts':>10} {'lossy cells':>11}")  # fmt: skip
    for lab in args.lab or ["ratelimited-path", "clean"]:
        for line in bench(lab, args.runs, args.settle, mtr):
            print(line, flush=True)
    print(f"(medians of {args.runs} runs; ratio = reachtest wall / row wall, below 1: "
          "reachtest faster; lossy cells: reachtest's unexplained by a limited mark or a "
          "finding, mtr's hops before the target showing loss)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
