#!/usr/bin/env python3
"""Benchmark `reachtest trace` in the lab next to mtr, measured in the same run.

Brings up the `clean` lab, runs every command from inside the lab's client namespace
(no default route), repeats each --runs times, prints medians of wall time and CPU time
(user + system of the process tree) and the ratio to reachtest, and always tears the lab
down. Needs root and Debian's mtr-tiny (a missing mtr is skipped and said so).

Rows:
  * reachtest trace -c 10: 1 target x (icmp + tcp/443 + tcp/80 + udp/53), report mode;
  * mtr --report -c 10 (ICMP only), and mtr --report -c 10 --tcp -P 443 (one service);
  * the same three with -i 0.1 (ten rounds a second), where start-up costs show.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from benchlib import lab_allowed, run_measured

LAB = "benchtr"
REACHTEST = str(Path(sys.executable).parent / "reachtest")


def measured(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process tree) of one run."""
    wall, cpu, done = run_measured(argv)
    if done.returncode not in (0, 1):
        command = " ".join(argv)
        raise SystemExit(f"bench_trace: {command} failed ({done.returncode}):\n{done.stderr}")
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions per row [3]")
    args = parser.parse_args()

    from reachtest.lab import manager

    if not lab_allowed("bench_trace"):
        return 3
    mtr = shutil.which("mtr")
    if mtr is None:
        print("bench_trace: mtr is not installed (apt install mtr-tiny): its rows are skipped")
    plan = manager.up("clean", lab_id=LAB)
    try:
        client = plan.topology.netns("client")
        server = str(plan.topology.server_address(v6=False))
        inside = ["ip", "netns", "exec", client]
        rows: list[tuple[str, list[str]]] = []
        for interval in ("1", "0.1"):
            trace = [REACHTEST, "trace", server, "-p", "tcp/443", "-p", "tcp/80", "-p",
                     "udp/53", "-c", "10", "-i", interval, "--report", "-n"]  # fmt: skip
            rows.append((f"reachtest trace -c 10 -i {interval} (icmp + 3 services)", trace))
            if mtr:
                base = [mtr, "--report", "-c", "10", "-i", interval, "-n", server]
                rows.append((f"mtr --report -c 10 -i {interval} (icmp)", base))
                tcp = [*base, "--tcp", "-P", "443"]
                rows.append((f"mtr --report -c 10 -i {interval} --tcp -P 443", tcp))
        samples: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):  # interleaved, so drift hits every row alike
            for name, argv in rows:
                samples.setdefault(name, []).append(measured([*inside, *argv]))
        print(f"{'command':58} {'wall s':>8} {'CPU s':>7} {'wall ratio':>10}")
        for interval in ("1", "0.1"):
            ours = next(n for n, _ in rows if n.startswith("reachtest") and f"-i {interval} " in n)
            ours_wall = statistics.median(w for w, _ in samples[ours])
            for name, _ in rows:
                if f"-i {interval} " not in name:
                    continue
                wall = statistics.median(w for w, _ in samples[name])
                cpu = statistics.median(c for _, c in samples[name])
                ratio = ours_wall / wall
                print(f"{name:58} {wall:8.2f} {cpu:7.2f} {ratio:10.2f}")
        print(f"(medians of {args.runs} runs; ratio = reachtest wall / row wall, below 1: "
              "reachtest faster)")  # fmt: skip
    finally:
        manager.down(LAB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
