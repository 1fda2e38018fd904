#!/usr/bin/env python3
"""Benchmark long runs: peak RSS, record size and CPU per round of `reachtest trace` at
300, 3,000 and 30,000 rounds in the lab, and 86,400 rounds (a day at one round a second)
on the simulated network, next to mtr at 300 and 3,000 rounds measured in the same run.

Lab `clean` (5 hops); every command runs inside the client namespace (no default route):
  reachtest trace server -4 -p tcp/443 -p tcp/80 -p udp/53 -c N -i 0.02 -n --json FILE
  mtr --report -n -c N -i 0.02 server-address            (ICMP, mtr's default)
Peak RSS and CPU (user + system) are GNU time's figures for the command (`apt install
time`); the record is the JSON file's size. The simulated rows run the same engine and
streaming statistics in a fresh process on a virtual clock (4 flows, 5 routers), the
record built at the end.
Targets (issue 18): RSS at 3,000 rounds within 1.25x of 300, record within 3x, CPU per
round flat. --runs repeats the 300 and 3,000 rows (medians); 30,000 and 86,400 run once
(--long 0 leaves them out). Always tears the lab down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import lab_allowed

LAB = "benchlong"
REACHTEST = str(Path(sys.executable).parent / "reachtest")
FLOWS = ["-p", "tcp/443", "-p", "tcp/80", "-p", "udp/53"]
TIME = "/usr/bin/time"


def measured(argv: list[str]) -> tuple[float, float, float, int, str]:
    """(peak RSS in MB, CPU seconds, wall seconds, exit code, stderr) of a command, by GNU
    time: a child of this Python would start with its resident pages counted (fork copies
    them: about 14 MB, more than mtr's own), a child of `time` with a few hundred KB."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            [TIME, "-f", "%M %U %S", "-o", out.name, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, err = process.communicate()
        wall = time.perf_counter() - start
        rss_kb, user, system = out.read().split()[-3:]
    return int(rss_kb) / 1024, float(user) + float(system), wall, process.returncode, err


def ours(inside: list[str], rounds: int, out: Path) -> dict[str, float]:
    argv = [*inside, REACHTEST, "trace", "server", "-4", *FLOWS, "-c", str(rounds),
            "-i", "0.02", "-n", "--json", str(out)]  # fmt: skip
    rss, cpu, wall, code, err = measured(argv)
    if code not in (0, 1):  # 1: findings
        raise SystemExit(f"bench_long: trace failed ({code}): {err}")
    record = json.loads(out.read_text())
    assert record["rounds_done"] == rounds, record["rounds_done"]
    return {"rss_mb": rss, "cpu_s": cpu, "wall_s": wall, "record_mb": out.stat().st_size / 1e6}


def theirs(inside: list[str], mtr: str, rounds: int, server: str) -> dict[str, float]:
    rss, cpu, wall, code, err = measured(
        [*inside, mtr, "--report", "-n", "-c", str(rounds), "-i", "0.02", server]
    )
    if code != 0:
        raise SystemExit(f"bench_long: mtr failed ({code}): {err}")
    return {"rss_mb": rss, "cpu_s": cpu, "wall_s": wall, "record_mb": float("nan")}


def simulated_worker(rounds: int, out: str) -> None:
    """In a fresh process: a run of ``rounds`` on the simulated network, streamed into the
    statistics as a trace session does, the record written at the end; beside it
    (``out``.frames) the wall time of a live-view frame after 10 rounds and at the end."""
    from datetime import UTC, datetime

    from reachtest.analysis.accumulate import Accumulator
    from reachtest.analysis.analyse import analyse
    from reachtest.engine.simulated import SimHop, SimPath, SimulatedNetwork
    from reachtest.engine.tracer import Tracer
    from reachtest.model import ICMP_FLOW, RunResult, TraceParams, tcp, udp
    from reachtest.report.record import RunMeta, build_record, dumps
    from reachtest.report.terminal import Progress, render
    from reachtest.report.view import build_view

    hops = tuple(SimHop(address=f"198.18.{i}.2") for i in range(1, 6))
    net = SimulatedNetwork(
        paths=(SimPath(target="198.18.6.2", hops=hops, open=frozenset({"icmp", "tcp/80"})),),
        keep_sent=0,  # the simulation's own log of probes, for tests: not ours to measure
    )
    params = TraceParams(rounds=rounds, interval_s=1.0, timeout_s=1.0, max_ttl=10)
    accumulated = Accumulator()
    now = datetime.now(UTC)
    meta = RunMeta(command=("bench",), started=now, finished=now)
    frames: dict[str, float] = {}

    def frame_ms() -> float:
        """The median wall time of 5 live-view frames (what `_live_frame` does)."""
        times = []
        for _ in range(5):
            start = time.perf_counter()
            result = snapshot()
            analysis = analyse(accumulated, params, result.budgets)
            record = build_record(result, analysis, meta, detail=False)
            render(build_view(record), 120, Progress(round=0, rounds=rounds, elapsed_s=0.0))
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    def fold(outcome: object) -> None:
        accumulated.add(outcome)  # type: ignore[arg-type]
        if "early_ms" not in frames and accumulated.rounds > 10:
            frame_ms()  # the first frame pays for imports: not counted
            frames["early_ms"] = frame_ms()

    tracer = Tracer(
        net,
        ["198.18.6.2"],
        [ICMP_FLOW, tcp(443), tcp(80), udp(53)],
        params,
        on_outcome=fold,
        keep_outcomes=False,
    )

    def snapshot() -> RunResult:
        return RunResult(
            params=params, targets=tracer.targets, flows=tracer.flows, started_ns=0,
            finished_ns=net.now_ns(), outcomes=(), extras=(), strays=(), stray_counts=(),
            sent=tracer.sent, budgets=tracer.budgets(),
        )  # fmt: skip

    result = tracer.run()
    frames["late_ms"] = frame_ms()
    record = build_record(result, analyse(accumulated, params, result.budgets), meta)
    Path(out).write_text(dumps(record))
    Path(out + ".frames").write_text(json.dumps(frames))


def simulated(rounds: int, out: Path) -> dict[str, float]:
    rss, cpu, wall, code, err = measured(
        [sys.executable, __file__, "--simulate", str(rounds), "--out", str(out)]
    )
    if code != 0:
        raise SystemExit(f"bench_long: the simulated run failed: {err}")
    frames = json.loads(Path(str(out) + ".frames").read_text())
    return {
        "rss_mb": rss,
        "cpu_s": cpu,
        "wall_s": wall,
        "record_mb": out.stat().st_size / 1e6,
        **frames,
    }


def row(name: str, rounds: int, runs: list[dict[str, float]]) -> dict[str, float]:
    m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    record = "-" if m["record_mb"] != m["record_mb"] else f"{m['record_mb']:.2f}"
    frames = (
        f"  live frame {m['early_ms']:.0f} ms at round 10, {m['late_ms']:.0f} ms at the end"
        if "late_ms" in m
        else ""
    )
    print(
        f"  {name:30s} {rounds:>7,d} rounds  RSS {m['rss_mb']:7.1f} MB  record {record:>6s} MB"
        f"  CPU {m['cpu_s']:7.2f} s  {1000 * m['cpu_s'] / rounds:6.3f} ms/round"
        f"  (wall {m['wall_s']:.0f} s, {len(runs)} run{'s' if len(runs) > 1 else ''}){frames}",
        flush=True,
    )
    return m


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions of the short rows [3]")
    parser.add_argument("--long", type=int, default=30000, help="the long lab row [30000]")
    parser.add_argument("--day", type=int, default=86400, help="simulated rounds [86400]")
    parser.add_argument("--simulate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        simulated_worker(args.simulate, args.out)
        return 0

    from reachtest.lab import manager

    if not lab_allowed("bench_long"):
        return 3
    if not os.path.exists(TIME):
        print("bench_long: GNU time is not installed (apt install time)", file=sys.stderr)
        return 3
    mtr = shutil.which("mtr")
    if mtr is None:
        print("bench_long: mtr is not installed (apt install mtr-tiny): its rows are skipped")
    work = Path(tempfile.mkdtemp(prefix="bench_long."))
    plan = manager.up("clean", lab_id=LAB)
    try:
        inside = ["ip", "netns", "exec", plan.topology.netns("client")]
        server = str(plan.topology.server_address())
        print("bench_long: lab clean, icmp + tcp/443 + tcp/80 + udp/53, -i 0.02", flush=True)
        got: dict[tuple[str, int], dict[str, float]] = {}
        for rounds in (300, 3000):
            samples: dict[str, list[dict[str, float]]] = {"reachtest": [], "mtr": []}
            for _ in range(args.runs):
                samples["reachtest"].append(ours(inside, rounds, work / "run.json"))
                if mtr:
                    samples["mtr"].append(theirs(inside, mtr, rounds, server))
            for name, runs in samples.items():
                if runs:
                    got[(name, rounds)] = row(name, rounds, runs)
        if args.long:
            got[("reachtest", args.long)] = row(
                "reachtest", args.long, [ours(inside, args.long, work / "run.json")]
            )
    finally:
        manager.down(LAB)
    print("simulated network (virtual clock), same engine and statistics:", flush=True)
    for rounds in (300, 3000, *([args.day] if args.day else [])):
        got[("simulated", rounds)] = row(
            "reachtest (simulated)", rounds, [simulated(rounds, work / "sim.json")]
        )
    shutil.rmtree(work, ignore_errors=True)
    print("ratios (3,000 rounds over 300; targets: RSS <= 1.25, record <= 3, CPU/round ~1):")
    for name in ("reachtest", "mtr", "simulated"):
        a, b = got.get((name, 300)), got.get((name, 3000))
        if a and b:
            record = (
                "" if b["record_mb"] != b["record_mb"] else
                f", record {b['record_mb'] / a['record_mb']:.2f}x"
            )  # fmt: skip
            per_round = (b["cpu_s"] / 3000) / (a["cpu_s"] / 300)
            print(f"  {name:22s} RSS {b['rss_mb'] / a['rss_mb']:.2f}x{record}, "
                  f"CPU per round {per_round:.2f}x")  # fmt: skip
    if ("mtr", 3000) in got:
        a, b = got[("reachtest", 3000)], got[("mtr", 3000)]
        print(f"  reachtest / mtr at 3,000 rounds: RSS {a['rss_mb'] / b['rss_mb']:.1f}x, "
              f"CPU {a['cpu_s'] / b['cpu_s']:.1f}x (mtr: ICMP only, 1 flow of 4)")  # fmt: skip
    for name, rounds in ((("reachtest", args.long)), ("simulated", args.day)):
        a, b = got.get((name, 3000)), got.get((name, rounds))
        if a and b and rounds:
            ratio = b["rss_mb"] / a["rss_mb"]
            print(f"  {name:22s} {rounds:,d} over 3,000 rounds: RSS {ratio:.2f}x,"
                  f" record {b['record_mb'] / a['record_mb']:.2f}x, CPU per round "
                  f"{(b['cpu_s'] / rounds) / (a['cpu_s'] / 3000):.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
