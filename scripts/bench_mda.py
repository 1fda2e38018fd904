"""Benchmark: enumerating the branches of a load-balanced path (issue 28, ``trace --mda``).

On lab paths whose hop 3 is 2 (``ecmp``) or 3 (``ecmp3-branch-drop``) parallel routers,
or 2 branches of different lengths (``ecmp-uneven-drop``), hashing on the 5-tuple:
reachtest's MDA (``engine/multipath.py``, ordinary sockets, 95% confidence a hop, each
flow hash's fate at the target included) next to scamper's tracelb (MDA, 95% per hop;
its default pace of one probe per 250 ms, and ``-W 15``, 150 ms, the least it accepts:
below, it runs nothing) in the same run, for UDP (destination port 33435, the source
port varied) and TCP (port 80).
Probes sent (each tool's own count, and the client interface's transmitted packets),
wall time, and the routers each found; medians of N.

Usage: sudo .venv/bin/python scripts/bench_mda.py [--rounds N] [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from benchlib import lab_allowed

from reachtest.engine.multipath import explore
from reachtest.lab import manager, netns

Found = tuple[int, frozenset[str]]  # (probes by the tool's own count, routers found)


def sent_packets(space: str) -> int:
    shown = subprocess.run(
        ["ip", "-n", space, "-s", "-j", "link", "show", "to-r1"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(json.loads(shown)[0]["stats64"]["tx"]["packets"])


def scamper(space: str, server: str, method: str, port: int, wait: int | None) -> Found:
    command = f"tracelb -P {method} -d {port} -c 95" + (f" -W {wait}" if wait else "")
    done = subprocess.run(
        ["ip", "netns", "exec", space, "scamper", "-O", "json", "-c", command, "-i", server],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        item = json.loads(line)
        if item.get("type") == "tracelb":
            routers = frozenset(n["addr"] for n in item.get("nodes", ()) if n["addr"] != server)
            return int(item["probec"]), routers
    raise RuntimeError(f"scamper said nothing: {done.stderr.strip()}")


SCENARIOS = ("ecmp", "ecmp3-branch-drop", "ecmp-uneven-drop")


def bench(scenario: str, rounds: int) -> dict[str, list[tuple[float, int, int, frozenset[str]]]]:
    lab_id = f"b{os.getpid() % 100000:x}"
    plan = manager.up(scenario, lab_id=lab_id)
    topo = plan.topology
    space = topo.netns("client")
    server = str(topo.server_address())
    distance = max(n.hop for n in topo.nodes)
    truth = frozenset(str(a) for ttl in range(1, distance) for a in topo.hop_addresses(ttl))
    try:

        def ours(kind: str, port: int) -> Callable[[], Found]:
            def run() -> Found:
                with netns.entered(space):
                    # The hops before the server, as trace --mda probes them.
                    found = explore(server, kind, port, range(1, distance), timeout_s=1.0)
                routers = {
                    p.responder
                    for by_id in found.paths.values()
                    for p in by_id.values()
                    if p.responder and p.responder != server
                }
                return found.probes, frozenset(routers)

            return run

        methods: dict[str, Callable[[], Found]] = {
            "reachtest --mda udp": ours("udp", 33435),
            "reachtest --mda tcp/80": ours("tcp", 80),
        }
        if shutil.which("scamper"):
            for wait in (None, 15):
                pace = "" if wait is None else f" -W {wait}"
                methods[f"scamper tracelb udp-sport{pace}"] = lambda w=wait: scamper(
                    space, server, "udp-sport", 33435, w
                )
                methods[f"scamper tracelb tcp-sport/80{pace}"] = lambda w=wait: scamper(
                    space, server, "tcp-sport", 80, w
                )
        results: dict[str, list[tuple[float, int, int, frozenset[str]]]] = {m: [] for m in methods}
        for _ in range(rounds):
            for method, run in methods.items():
                before, start = sent_packets(space), time.perf_counter()
                probes, routers = run()
                wall = time.perf_counter() - start
                results[method].append((wall, probes, sent_packets(space) - before, routers))
                time.sleep(1.0)  # the routers' ICMP budgets refill between tools
        results["truth"] = [(0.0, 0, 0, truth)]
    finally:
        manager.down(lab_id)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="Only these labs (repeatable)."
    )
    args = parser.parse_args()
    if not lab_allowed("bench_mda"):
        return 3
    ok = True
    for scenario in args.scenario or SCENARIOS:
        results = bench(scenario, args.rounds)
        truth = results.pop("truth")[0][3]
        print(f"bench_mda: {scenario} ({len(truth)} routers on the path), medians of "
              f"{args.rounds}")  # fmt: skip
        medians = {}
        for method, runs in results.items():
            wall = statistics.median(r[0] for r in runs)
            probes = statistics.median(r[1] for r in runs)
            packets = statistics.median(r[2] for r in runs)
            complete = sum(1 for r in runs if r[3] >= truth)
            medians[method] = (wall, probes)
            print(f"  {method:36} wall {wall:6.2f} s  probes {probes:5.0f}  packets "
                  f"{packets:5.0f}  every router found in {complete}/{len(runs)}")  # fmt: skip
            ok = ok and complete == len(runs) if method.startswith("reachtest") else ok
        for proto, theirs in (("udp", "udp-sport"), ("tcp/80", "tcp-sport/80")):
            mine = medians[f"reachtest --mda {proto}"]
            for pace in ("", " -W 15"):
                other = medians.get(f"scamper tracelb {theirs}{pace}")
                if other is None:
                    continue
                print(f"  scamper tracelb {theirs}{pace}: {other[1] / max(mine[1], 1):.2f}x "
                      f"the probes, {other[0] / max(mine[0], 1e-3):.1f}x the wall time of "
                      f"reachtest --mda {proto}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
