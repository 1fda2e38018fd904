#!/usr/bin/env python3
"""Benchmark the receive socket's kernel filter: CPU of a trace with and without
~20,000 packets/s of unrelated UDP arriving at the client, filter on and off, measured
in the same run.

Brings up the `tcp-drop` lab; the flood comes from r1's namespace (tests/lab/flood.py);
every trace runs from inside the client namespace (no default route): `trace server -4
-p tcp/443 -p tcp/80 -p udp/53 -c 5 -i 0.2 -n --json -`. Repeats each row --runs times,
interleaved, prints medians of CPU (user + system of the trace's process tree), the
unrelated packets that reached Python, and the ratio to the quiet run with the filter.
`REACHTEST_NO_FILTER=1` is the switch that turns the filter off. Always tears the lab down.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import lab_allowed, run_measured

LAB = "benchbpf"
ROOT = Path(__file__).resolve().parents[1]
REACHTEST = str(Path(sys.executable).parent / "reachtest")


def traced(inside: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(CPU seconds of the trace's process tree, unrelated packets it read)."""
    _wall, cpu, done = run_measured(
        [*inside, REACHTEST, "trace", "server", "-4", "-p", "tcp/443", "-p", "tcp/80", "-p",
         "udp/53", "-c", "5", "-i", "0.2", "-n", "--json", "-"],
        env,
    )  # fmt: skip
    if done.returncode not in (0, 1):
        raise SystemExit(f"bench_filter: trace failed ({done.returncode}): {done.stderr}")
    strays = json.loads(done.stdout)["totals"]["strays"]
    return cpu, int(strays.get("unrelated-traffic", 0))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions per row [3]")
    args = parser.parse_args()

    from reachtest.lab import manager

    if not lab_allowed("bench_filter"):
        return 3
    plan = manager.up("tcp-drop", lab_id=LAB)
    try:
        inside = ["ip", "netns", "exec", plan.topology.netns("client")]
        client = str(plan.topology.client_address())
        on = {k: v for k, v in os.environ.items() if k != "REACHTEST_NO_FILTER"}
        off = on | {"REACHTEST_NO_FILTER": "1"}
        rows = [
            ("quiet, filter", on, False),
            ("quiet, no filter", off, False),
            ("20k pps flood, filter", on, True),
            ("20k pps flood, no filter", off, True),
        ]
        samples: dict[str, list[tuple[float, int]]] = {}
        for _ in range(args.runs):
            for name, env, flooding in rows:
                flood = None
                if flooding:
                    flood = subprocess.Popen(
                        ["ip", "netns", "exec", plan.topology.netns("r1"), sys.executable,
                         "-m", "tests.lab.flood", "--to", client, "--pps", "20000",
                         "--seconds", "8"],
                        cwd=ROOT, stdout=subprocess.PIPE, text=True,
                    )  # fmt: skip
                    assert flood.stdout is not None
                    flood.stdout.readline()
                    time.sleep(0.2)
                try:
                    samples.setdefault(name, []).append(traced(inside, env))
                finally:
                    if flood is not None:
                        flood.kill()
                        flood.wait()
        base = statistics.median(c for c, _ in samples["quiet, filter"])
        print(f"{'trace -c 5 (icmp + 3 services)':34} {'CPU s':>7} {'unrelated read':>15} "
              f"{'CPU ratio':>10}")  # fmt: skip
        for name, _env, _flooding in rows:
            cpu = statistics.median(c for c, _ in samples[name])
            read = statistics.median(n for _, n in samples[name])
            print(f"{name:34} {cpu:7.2f} {read:15.0f} {cpu / base:10.2f}")
        print(f"(medians of {args.runs} runs; ratio to the quiet run with the filter)")
    finally:
        manager.down(LAB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
