#!/usr/bin/env python3
"""Benchmark `reachtest run` over many lab targets, next to nmap measured in the same run.

Brings up the `tcp-drop` lab (r3 drops tcp/443) with --targets N extra server addresses
(198.19.0.0/16), writes two configurations of N targets x 3 services (tcp/80, tcp/443,
udp/53, plus the ICMP echo check), and runs each row --runs times, interleaved, from
inside the lab's client namespace (no default route). Prints medians of wall and CPU
time and the ratio to nmap; always tears the lab down. Needs root and nmap.

Rows:
  * nmap -sS -sU -p T:80,443,U:53 -n -Pn over the N targets (the peer: one probe pass);
  * reachtest run, fast check only: every expectation holds (tcp/443 expected blocked),
    policy on-failure, so nothing is traced;
  * reachtest run with traces for 10 failing targets: those expect tcp/443 open.
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

LAB = "benchrun"

TARGET = """
[[target]]
host = "{address}"
expect = {{ icmp = "reachable", "tcp/80" = "open", "tcp/443" = "{https}", "udp/53" = "open" }}
"""


def config(path: Path, addresses: list[str], failing: int) -> Path:
    head = (
        'history = "history.sqlite"\nreports = "reports"\nprometheus = "reachtest.prom"\n\n'
        '[defaults]\nservices = ["tcp/80", "tcp/443", "udp/53"]\npolicy = "on-failure"\n'
        "rounds = 5\ninterval = 0.2\ntimeout = 1\nmax_ttl = 10\n"
    )
    body = "".join(
        TARGET.format(address=a, https="open" if i < failing else "blocked")
        for i, a in enumerate(addresses)
    )
    path.write_text(head + body)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions per row [3]")
    parser.add_argument("--targets", type=int, default=200, help="lab targets [200]")
    args = parser.parse_args()

    from reachtest.lab import manager

    if not lab_allowed("bench_run"):
        return 3
    nmap = shutil.which("nmap")
    if nmap is None:
        print("bench_run: nmap is not installed (apt install nmap)", file=sys.stderr)
        return 3
    plan = manager.up("tcp-drop", lab_id=LAB, targets=args.targets)
    out = Path(tempfile.mkdtemp(prefix="bench-run-"))
    try:
        inside = ["ip", "netns", "exec", plan.topology.netns("client")]
        addresses = [str(a) for a in plan.topology.extra_targets()[0]][: args.targets]
        for folder in ("fast", "traced"):
            (out / folder).mkdir()
        fast = config(out / "fast" / "reachtest.toml", addresses, 0)
        traced = config(out / "traced" / "reachtest.toml", addresses, 10)
        peer = f"nmap -sS -sU -p T:80,443,U:53 ({len(addresses)} targets)"
        rows = [
            (peer, [*inside, nmap, "-sS", "-sU", "-p", "T:80,443,U:53", "-n", "-Pn",
                    "--max-retries", "1", "-T4", *addresses]),
            ("reachtest run, fast check only", [*inside, REACHTEST, "run", "--config", str(fast)]),
            ("reachtest run, traces for 10 failing", [*inside, REACHTEST, "run", "--config",
                                                     str(traced)]),
        ]  # fmt: skip
        samples: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for name, argv in rows:
                samples.setdefault(name, []).append(measured(argv))
        peer_wall = statistics.median(w for w, _ in samples[peer])
        print(f"{len(addresses)} targets x 3 services (+ ICMP echo), medians of {args.runs} runs")
        print(f"{'command':48} {'wall s':>8} {'CPU s':>7} {'wall / nmap':>11}")
        for name, _ in rows:
            wall = statistics.median(w for w, _ in samples[name])
            cpu = statistics.median(c for _, c in samples[name])
            print(f"{name:48} {wall:8.2f} {cpu:7.2f} {wall / peer_wall:11.2f}")
        prom = (out / "traced" / "reachtest.prom").read_text()
        failing = prom.count('reachtest_expectation_met{expected="open",port="443"')
        print(f"(the traced config's metrics hold {failing} tcp/443 expectations)")
    finally:
        manager.down(LAB)
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
