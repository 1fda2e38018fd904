#!/usr/bin/env python3
"""Benchmark `reachtest lab up` + `lab down` (as a user runs them) against a baseline.

The baseline builds the same plan the ad-hoc way lab scripts usually do: one `ip`
process per command (namespace, link, address, route), then deletes the namespaces.
Prints the median of several runs and the ratio reachtest / baseline. Needs root.
Nothing here sends a packet: it only creates and removes namespaces.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reachtest.lab import netns
from reachtest.lab.plan import build_plan
from reachtest.lab.scenarios import scenario

LAB = "bench"


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def reachtest_cycle(hops: int, targets: int) -> tuple[float, float]:
    exe = str(Path(sys.executable).parent / "reachtest")
    up = timed(
        [exe, "lab", "up", "clean", "--name", LAB, "--hops", str(hops), "--targets", str(targets)]
    )
    down = timed([exe, "lab", "down", "--name", LAB])
    return up, down


def baseline_cycle(hops: int, targets: int) -> tuple[float, float]:
    plan = build_plan("bench0", scenario("clean", hops), targets=targets)
    start = time.perf_counter()
    for node in plan.nodes:
        subprocess.run(["ip", "netns", "add", node.netns], check=True)
    for line in plan.links:
        subprocess.run(["ip", *line.split()], check=True)
    for node in plan.nodes:
        for line in (*node.addresses, *node.routes):
            subprocess.run(["ip", "-n", node.netns, *line.split()], check=True)
    up = time.perf_counter() - start
    start = time.perf_counter()
    for node in plan.nodes:
        subprocess.run(["ip", "netns", "delete", node.netns], check=True)
    return up, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hops", type=int, default=5)
    parser.add_argument("--targets", type=int, nargs="*", default=[0, 1000])
    args = parser.parse_args()
    netns.require_lab_privileges()
    print(f"lab up + down, {args.hops} hops, median of {args.runs} runs (seconds)")
    print(f"{'targets':>8} {'up':>7} {'down':>7} {'total':>7} {'baseline':>9} {'ratio':>6}")
    for targets in args.targets:
        ours = [reachtest_cycle(args.hops, targets) for _ in range(args.runs)]
        base = [baseline_cycle(args.hops, targets) for _ in range(args.runs)]
        up = statistics.median(u for u, _ in ours)
        down = statistics.median(d for _, d in ours)
        total = statistics.median(u + d for u, d in ours)
        base_total = statistics.median(u + d for u, d in base)
        print(
            f"{targets:>8} {up:7.3f} {down:7.3f} {total:7.3f} {base_total:9.3f} "
            f"{total / base_total:6.2f}"
        )
    print("baseline: the same plan with one `ip` process per command, no services, no rules")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
