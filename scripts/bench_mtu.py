"""Benchmark: finding the path MTU, and a PMTU black hole (issue 27).

On a lab path of 6 routers whose link after r3 carries 1400 bytes (``mtu``: its routers
say so; ``mtu-blackhole``: they do not), the link into r2 delayed 10 ms each way as on a
real path: reachtest's ``engine/mtu.py`` (ICMP, ordinary sockets) next to tracepath
(iputils) and scamper (``trace -M``) in the same run. Wall time, probes sent (the client
interface's transmitted packets), what each found; medians of N.

Usage: sudo .venv/bin/python scripts/bench_mtu.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from benchlib import lab_allowed

from reachtest.engine.mtu import search
from reachtest.lab import manager, netns

HOPS = 6
#: A peer that finds nothing within this long is stopped (tracepath waits forever in a
#: black hole).
PEER_TIMEOUT_S = 120.0


def sent_packets(space: str) -> int:
    """Packets the client has sent so far (its one link)."""
    shown = subprocess.run(
        ["ip", "-n", space, "-s", "-j", "link", "show", "to-r1"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(json.loads(shown)[0]["stats64"]["tx"]["packets"])


def peer(argv: list[str], space: str) -> Callable[[], str]:
    def run() -> str:
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", space, *argv], capture_output=True, text=True,
                timeout=PEER_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return f"nothing within {PEER_TIMEOUT_S:g} s"
        text = done.stdout
        if argv[0] == "tracepath":
            found = re.search(r"Resume: pmtu (\d+)", text)
            return f"pmtu {found.group(1)}" if found else "no pmtu"
        found = re.findall(r"(\d+)\s+\S+\s+[\d.]+ ms \[(\*?)mtu: (\d+)\]", text)
        first = next(((hop, star, mtu) for hop, star, mtu in found if mtu != "1500"), None)
        if first is None:
            return "mtu 1500"
        hop, star, mtu = first
        return f"mtu {mtu} from hop {hop}" + (" (inferred: no PTB)" if star else "")

    return run


def bench(scenario: str, rounds: int, delay_ms: float) -> dict[str, list[tuple[float, int, str]]]:
    lab_id = f"b{os.getpid() % 100000:x}"
    rules = (f"r2:delay:{delay_ms:g}",) if delay_ms > 0 else ()
    plan = manager.up(scenario, lab_id=lab_id, hops=HOPS, rules=rules)
    space = plan.topology.netns("client")
    server = str(plan.topology.server_address())
    try:
        # The routers' addresses as a trace of the same run knows them (``trace --mtu``
        # passes its own): a router that names an MTU is placed without a sweep.
        known = {
            str(a): ttl for ttl in range(1, HOPS + 1) for a in plan.topology.hop_addresses(ttl)
        }

        def ours() -> str:
            with netns.entered(space):
                found = search(server, "icmp", None, distance=HOPS + 1, known_hops=known)
            where = f" after hop {found.hop}" if found.hop else ""
            what = "black hole" if found.black_hole else "named" if found.named else "clean"
            return f"mtu {found.mtu}{where} ({what})"

        methods: dict[str, Callable[[], str]] = {"reachtest --mtu (icmp)": ours}
        if shutil.which("tracepath"):
            methods["tracepath -n"] = peer(["tracepath", "-n", "-4", server], space)
        if shutil.which("scamper"):
            methods["scamper trace -M"] = peer(["scamper", "-c", "trace -M", "-i", server], space)
        results: dict[str, list[tuple[float, int, str]]] = {m: [] for m in methods}
        for _ in range(rounds):
            for method, run in methods.items():
                # Each method starts without a cached path MTU: flush the client's.
                subprocess.run(["ip", "-n", space, "route", "flush", "cache"], check=False)
                subprocess.run(["ip", "-n", space, "-6", "route", "flush", "cache"], check=False)
                before, start = sent_packets(space), time.perf_counter()
                said = run()
                wall = time.perf_counter() - start
                results[method].append((wall, sent_packets(space) - before, said))
    finally:
        manager.down(lab_id)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    args = parser.parse_args()
    if not lab_allowed("bench_mtu"):
        return 3
    ok = True
    for scenario in ("mtu", "mtu-blackhole"):
        results = bench(scenario, args.rounds, args.delay_ms)
        print(f"bench_mtu: {scenario}, {HOPS} routers, the link after r3 at 1400 bytes, the "
              f"link into r2 {args.delay_ms:g} ms each way, medians of {args.rounds}")  # fmt: skip
        medians = {}
        for method, runs in results.items():
            wall = statistics.median(r[0] for r in runs)
            probes = statistics.median(r[1] for r in runs)
            medians[method] = (wall, probes)
            print(f"  {method:24} wall {wall:6.2f} s  packets {probes:5.0f}  found: "
                  f"{sorted({r[2] for r in runs})}")  # fmt: skip
        ours = medians["reachtest --mtu (icmp)"]
        for method, (wall, probes) in medians.items():
            if method.startswith("reachtest"):
                continue
            ratio = probes / max(ours[1], 1)
            print(f"  {method}: {wall / ours[0]:.1f}x the wall time, {ratio:.1f}x the packets"
                  " of reachtest")  # fmt: skip
        ok = ok and ours[0] < medians.get("tracepath -n", (float("inf"), 0))[0]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
