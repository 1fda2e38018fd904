#!/usr/bin/env python3
"""Benchmark the probe engine in the lab, next to traceroute and nmap measured in the same run.

Brings up the `clean` lab (ICMP rate limits lifted on every node) with extra target
addresses, runs every measurement from inside the lab's client namespace (which has no
default route), prints medians and ratios, and always tears the lab down. Needs root,
and Debian's traceroute and nmap for the peer columns (missing peers are skipped and
said so).

Measured:
  * one fast round: 1 target x (icmp, tcp/443, tcp/22, udp/53) x 30 TTLs, the engine
    alone and the `reachtest probe --fast` command, next to `traceroute -I/-T/-U`
    (one probe per hop) and `nmap -sS -sU --traceroute`;
  * the sweep: N targets (1000) x 4 flows x 16 TTLs x 1 round: wall time, match rate,
    probes/s sent and matched on one core, CPU us per probe, peak RSS;
  * memory in the number of rounds: peak RSS after 20 and 200 rounds (streaming).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAB = "benche"
FLOWS = ("icmp", "tcp/443", "tcp/22", "udp/53")


# -- workers: run inside the client namespace, print one JSON line ---------------------------


def worker(kind: str, targets: list[str], rounds: int) -> None:
    from reachtest.engine.tracer import Tracer
    from reachtest.engine.transport import RawTransport
    from reachtest.model import TraceParams
    from reachtest.spec import parse_flow

    flows = [parse_flow(f) for f in FLOWS]
    if kind == "sweep":
        params = TraceParams(
            fast=True, max_ttl=16, rate_pps=0, max_in_flight=1_000_000, timeout_s=1.0
        )
    elif kind == "round":
        params = TraceParams(fast=True, max_ttl=30, rate_pps=0, timeout_s=1.0)
    else:  # rounds: memory over many rounds, streaming as a live view does
        params = TraceParams(rounds=rounds, interval_s=0.005, timeout_s=0.2, max_ttl=10)
    transport = RawTransport()
    tracer = Tracer(transport, targets, flows, params, keep_outcomes=kind != "rounds")
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = tracer.run()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    transport.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(
        json.dumps(
            {
                "sent": tracer.sent,
                "matched": tracer.matched,
                "strays": sum(n for _, n in result.stray_counts),
                "kernel_dropped": result.kernel_dropped or 0,
                "wall_s": wall,
                "cpu_s": cpu,
                "rss_mb": after.ru_maxrss / 1024,
            }
        )
    )


# -- the driver ------------------------------------------------------------------------------


def in_client(argv: list[str], netns_name: str) -> list[str]:
    return ["ip", "netns", "exec", netns_name, *argv]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_worker(netns_name: str, kind: str, targets: list[str], rounds: int = 0) -> dict[str, float]:
    """Run one measurement in a fresh process in the client namespace (clean peak RSS)."""
    argv = [sys.executable, __file__, "--worker", kind, "--rounds", str(rounds)]
    argv += targets or ["--from-lab"]  # the sweep reads the lab's extra targets itself
    done = subprocess.run(in_client(argv, netns_name), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_engine: the {kind} worker failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="repetitions per figure [5]")
    parser.add_argument("--targets", type=int, default=1000, help="targets in the sweep [1000]")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--from-lab", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("addresses", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        targets = args.addresses
        if args.from_lab:
            from reachtest.lab.manager import status

            lab = status(LAB)
            v4, _v6 = lab_targets(lab.state.targets if lab.state else 0)
            targets = v4
        worker(args.worker, targets, args.rounds)
        return 0

    from reachtest.lab import manager, netns

    try:
        netns.require_lab_privileges()
    except Exception as exc:  # a benchmark script: say why and stop
        print(f"bench_engine: {exc}", file=sys.stderr)
        return 3
    plan = manager.up("clean", lab_id=LAB, targets=args.targets)
    try:
        client = plan.topology.netns("client")
        server = str(plan.topology.server_address(v6=False))
        report(args, client, server)
    finally:
        manager.down(LAB)
    return 0


def lab_targets(count: int) -> tuple[list[str], list[str]]:
    from reachtest.lab.topology import target_addresses

    v4, v6 = target_addresses(count)
    return [str(a) for a in v4], [str(a) for a in v6]


def report(args: argparse.Namespace, client: str, server: str) -> None:
    runs = args.runs
    exe = str(Path(sys.executable).parent / "reachtest")
    print(
        f"reachtest engine benchmark: {runs} runs each, medians; lab 'clean', 5 hops, from {client}"
    )
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")

    # -- one fast round ------------------------------------------------------------------
    engine = [run_worker(client, "round", [server]) for _ in range(runs)]
    ours_engine = median([r["wall_s"] for r in engine])
    probe = [exe, "probe", server, "--fast", "-m", "30", "--rate", "0", "--timeout", "1"]
    for flow in FLOWS[1:]:
        probe += ["-p", flow]
    cli = [timed(in_client(probe, client)) for _ in range(runs)]
    ours_cli = median(cli)
    print("One fast round: 1 target x (icmp, tcp/443, tcp/22, udp/53) x 30 TTLs")
    print("  (reachtest waits up to 1 s for a reply; traceroute gets -q 1 -w 1 to match)")
    print(
        f"  {'reachtest engine (in process)':44s} {ours_engine * 1000:9.1f} ms  "
        f"({median([r['sent'] for r in engine]):.0f} probes, "
        f"{median([r['matched'] for r in engine]):.0f} matched)"
    )
    print(f"  {'reachtest probe --fast (command, 4 flows)':44s} {ours_cli * 1000:9.1f} ms")
    trace = ["traceroute", "-n", "-q", "1", "-w", "1", "-m", "30"]
    peers = {
        "traceroute -I (icmp)": [*trace, "-I", server],
        "traceroute -T -p 443 (tcp/443)": [*trace, "-T", "-p", "443", server],
        "traceroute -T -p 22 (tcp/22)": [*trace, "-T", "-p", "22", server],
        "traceroute -U -p 53 (udp/53)": [*trace, "-U", "-p", "53", server],
        "nmap -sS -sU -p T:443,22,U:53 --traceroute": [
            *("nmap", "-n", "-Pn", "-sS", "-sU", "-p", "T:443,22,U:53", "--traceroute"),
            server,
        ],
    }
    total = 0.0
    for name, argv in peers.items():
        if shutil.which(argv[0]) is None:
            print(f"  {name:44s} skipped: {argv[0]} not installed (apt install {argv[0]})")
            continue
        took = median([timed(in_client(argv, client)) for _ in range(runs)])
        if name.startswith("traceroute"):
            total += took
        print(
            f"  {name:44s} {took * 1000:9.1f} ms   "
            f"reachtest command / this = {ours_cli / took:5.2f}"
        )
    if total:
        print(
            f"  {'the four traceroutes, one after another':44s} {total * 1000:9.1f} ms   "
            f"reachtest command / this = {ours_cli / total:5.2f}"
        )

    # -- the sweep ------------------------------------------------------------------------
    print(f"\nSweep: {args.targets} targets x 4 flows x 16 TTLs x 1 round (fast, no rate cap)")
    sweeps = [run_worker(client, "sweep", [], 0) for _ in range(runs)]
    wall = median([r["wall_s"] for r in sweeps])
    cpu = median([r["cpu_s"] for r in sweeps])
    sent = median([r["sent"] for r in sweeps])
    matched = median([r["matched"] for r in sweeps])
    strays = median([r["strays"] for r in sweeps])
    print(f"  wall time            {wall:8.2f} s      (target <= 5 s)")
    print(
        f"  probes sent          {sent:8.0f}        matched {matched:.0f} "
        f"({100 * matched / sent:.2f} %), strays {strays:.0f}"
    )
    print(
        f"  sent+matched per s   {matched / wall:8.0f} /s wall, "
        f"{matched / cpu:.0f} /s per CPU second (target >= 20000)"
    )
    print(f"  CPU per probe        {cpu / sent * 1e6:8.1f} us")
    print(f"  peak RSS             {median([r['rss_mb'] for r in sweeps]):8.1f} MB")

    # -- memory over rounds ---------------------------------------------------------------
    print("\nMemory in the number of rounds: 1 target x 4 flows, streaming outcomes")
    for rounds in (20, 200):
        mem = [run_worker(client, "rounds", [server], rounds) for _ in range(min(runs, 3))]
        print(
            f"  {rounds:4d} rounds: peak RSS {median([r['rss_mb'] for r in mem]):6.1f} MB, "
            f"{median([r['sent'] for r in mem]):.0f} probes"
        )


if __name__ == "__main__":
    sys.exit(main())
