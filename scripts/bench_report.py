#!/usr/bin/env python3
"""Benchmark what the reports cost, in the lab, next to mtr measured in the same run.

Brings up the `combo` lab and, from inside its client namespace (no default route),
runs each row --runs times, interleaved; prints medians of wall and CPU time (the process
tree) and the ratio to mtr, and always tears the lab down. Needs root and mtr-tiny.

Rows:
  * mtr --report -c 10 -i 0.1 --tcp -P 443 (the peer: text only);
  * reachtest trace -c 10 -i 0.1 (icmp + 5 services), the text report;
  * the same with --json, --html, --markdown and --pcap (every output at once);
  * reachtest show RUN.json --format html / markdown / text (rendering alone).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import lab_allowed

sys.path.insert(0, str(Path(__file__).parent))
from bench_trace import REACHTEST, measured

LAB = "benchrp"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="repetitions per row [5]")
    args = parser.parse_args()

    from reachtest.lab import manager

    if not lab_allowed("bench_report"):
        return 3
    mtr = shutil.which("mtr")
    if mtr is None:
        print("bench_report: mtr is not installed (apt install mtr-tiny)", file=sys.stderr)
        return 3
    plan = manager.up("combo", lab_id=LAB)
    out = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        inside = ["ip", "netns", "exec", plan.topology.netns("client")]
        server = str(plan.topology.server_address(v6=False))
        trace = [REACHTEST, "trace", server, "-p", "tcp/22,80,443,8080", "-p", "udp/53",
                 "-c", "10", "-i", "0.1", "--report", "-n"]  # fmt: skip
        everything = [*trace, "--json", str(out / "run.json"), "--html", str(out / "r.html"),
                      "--markdown", str(out / "r.md"), "--pcap", str(out / "r.pcap")]  # fmt: skip
        peer = "mtr --report -c 10 -i 0.1 --tcp -P 443"
        rows = [
            (peer, [*inside, mtr, "--report", "-c", "10", "-i", "0.1", "-n", "--tcp",
                    "-P", "443", server]),
            ("reachtest trace (text report)", [*inside, *trace]),
            ("reachtest trace --json --html --markdown --pcap", [*inside, *everything]),
        ]  # fmt: skip
        samples: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for name, argv in rows:
                samples.setdefault(name, []).append(measured(argv))
        record = str(out / "run.json")
        shows = [
            (f"reachtest show --format {fmt}", [REACHTEST, "show", record, "--format", fmt])
            for fmt in ("text", "markdown", "html")
        ]
        for _ in range(args.runs):
            for name, argv in shows:
                samples.setdefault(name, []).append(measured([*argv, "-o", str(out / "x")]))
        peer_wall = statistics.median(w for w, _ in samples[peer])
        print(f"{'command':50} {'wall s':>8} {'CPU s':>7} {'wall / mtr':>10}")
        for name, _ in rows + shows:
            wall = statistics.median(w for w, _ in samples[name])
            cpu = statistics.median(c for _, c in samples[name])
            print(f"{name:50} {wall:8.2f} {cpu:7.2f} {wall / peer_wall:10.2f}")
        sizes = {p.suffix: p.stat().st_size for p in out.iterdir() if p.suffix != ""}
        print("sizes: " + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(sizes.items())))
        print(f"(medians of {args.runs} runs, interleaved; the show rows need no network)")
    finally:
        manager.down(LAB)
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
