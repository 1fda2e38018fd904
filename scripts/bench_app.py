"""Benchmark: localizing a reset ClientHello after the handshake, and a forged DNS answer
(issue 26).

On a lab path of 6 routers (``tls-sni-reset``: r3 resets ClientHellos naming
blocked.example; ``dns-qname-inject``: an on-path box at r3 forges answers for it; the
server is hop 7; the link into r2 delays 10 ms each way, as a real
path would, since the lab's links answer in 20 us), the test name and its control at
every TTL from 1 to the server, all at once (reachtest's ``engine/requests.py``), against the same
requests one TTL at a time, one name after the other (OONI's tlsmiddlebox order), in
the same run. Wall and CPU time, medians of 5, and their ratio; the verdict of each must
be the same (the box at hop 3, the control answered).

Usage: sudo .venv/bin/python scripts/bench_app.py [--rounds N] [--timeout S]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

from benchlib import lab_allowed

from reachtest.analysis.requests import judge_requests
from reachtest.engine.requests import RequestOutcome, trace_requests
from reachtest.lab import manager, netns
from reachtest.lab.scenarios import CONTROL_NAME, TEST_NAME
from reachtest.packet.requests import RequestKind

HOPS = 6


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(run: Callable[[], list[RequestOutcome]]) -> tuple[float, float, str]:
    cpu, start = _cpu(), time.perf_counter()
    outcomes = run()
    wall = time.perf_counter() - start
    verdict = judge_requests(outcomes, TEST_NAME, CONTROL_NAME)
    said = f"{verdict.state}/{verdict.reason} at hop {verdict.box_hop}, control {verdict.by_name}"
    return wall, _cpu() - cpu, said


#: What is measured: (scenario, request kind, port).
CASES = (
    ("tls-sni-reset", RequestKind.TLS, 443),
    ("dns-qname-inject", RequestKind.DNS, 53),
)


def bench(
    scenario: str, kind: RequestKind, port: int, args: argparse.Namespace
) -> dict[str, list[tuple[float, float, str]]]:
    """Every method's runs in a lab of ``scenario`` of its own."""
    lab_id = f"b{os.getpid() % 100000:x}"
    rules = (f"r2:delay:{args.delay_ms:g}",) if args.delay_ms > 0 else ()
    plan = manager.up(scenario, lab_id=lab_id, hops=HOPS, rules=rules)
    try:
        server = str(plan.topology.server_address())
        ttls = range(1, HOPS + 2)
        names = [TEST_NAME, CONTROL_NAME]

        def together(raw: bool) -> Callable[[], list[RequestOutcome]]:
            return lambda: trace_requests(
                server, port, kind, names, ttls, timeout_s=args.timeout, raw=raw
            )

        def one_at_a_time(raw: bool) -> Callable[[], list[RequestOutcome]]:
            def run() -> list[RequestOutcome]:
                out: list[RequestOutcome] = []
                for name in names:
                    for ttl in ttls:
                        out += trace_requests(
                            server, port, kind, [name], [ttl], timeout_s=args.timeout, raw=raw
                        )
                return out

            return run

        # DNS needs no raw socket: its methods are the same with and without.
        methods = {
            "together, raw sockets": together(True),
            "serial, raw sockets": one_at_a_time(True),
        }
        if kind is not RequestKind.DNS:
            methods |= {
                "together, ordinary sockets": together(False),
                "serial, ordinary sockets": one_at_a_time(False),
            }
        results: dict[str, list[tuple[float, float, str]]] = {m: [] for m in methods}
        with netns.entered(plan.topology.netns("client")):
            for _ in range(args.rounds):
                for method, run in methods.items():
                    results[method].append(measure(run))
    finally:
        manager.down(lab_id)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per request")
    parser.add_argument(
        "--delay-ms", type=float, default=10.0,
        help="one-way delay of the link into r2, as on a real path (0: the lab's 20 us)",
    )  # fmt: skip
    args = parser.parse_args()
    if not lab_allowed("bench_app"):
        return 3
    ok = True
    for scenario, kind, port in CASES:
        results = bench(scenario, kind, port, args)
        print(f"bench_app: {scenario} ({kind}/{port}), {HOPS} routers (server at hop "
              f"{HOPS + 1}), the link into r2 {args.delay_ms:g} ms each way, 2 names x "
              f"{HOPS + 1} TTLs, request timeout {args.timeout:g} s, medians of "
              f"{args.rounds}")  # fmt: skip
        medians = {}
        for method, runs in results.items():
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            verdicts = sorted({r[2] for r in runs})
            medians[method] = (wall, cpu)
            print(f"  {method:27} wall {wall:6.3f} s  CPU {cpu:6.3f} s  verdicts: {verdicts}")
        for sockets in ("raw sockets", "ordinary sockets"):
            if f"together, {sockets}" not in medians:
                continue
            fast, slow = medians[f"together, {sockets}"][0], medians[f"serial, {sockets}"][0]
            print(f"  {sockets}: one TTL at a time / all at once = {slow / fast:.1f}x wall "
                  f"(goal: all at once <= 3 s and >= 5x faster)")  # fmt: skip
            ok = ok and fast <= 3.0 and slow / fast >= 5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
