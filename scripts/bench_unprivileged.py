#!/usr/bin/env python3
"""Benchmark the unprivileged transport in the lab next to raw sockets and to the peers
that trace without root, all measured in the same run.

Brings up the `clean` lab and runs every command from inside its client namespace (no
default route); repeats each --runs times, interleaved, and prints medians of wall time
and CPU time (user + system of the process tree) and the ratio to reachtest's raw run.
The "as uid 65534" rows run as that user with no capability: reachtest through
SUDO_UID (it gives root up before opening any socket), the peers through setpriv. Always
tears the lab down. Needs root; a missing peer is skipped and said so.

Rows (1 target; reachtest: icmp + tcp/443 + tcp/80 + udp/53, report mode):
  * reachtest trace -c 10, raw sockets (root, then the user);
  * reachtest trace -c 10 --unprivileged, as uid 65534;
  * mtr --report -c 10 -u (UDP, through its privileged helper mtr-packet), as uid 65534;
  * tracepath (UDP, unprivileged, one probe per hop), as uid 65534;
with -i 1 and -i 0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

from benchlib import lab_allowed, run_measured

LAB = "benchup"
REACHTEST = str(Path(sys.executable).parent / "reachtest")
NOBODY = "65534"


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process tree) of one run; NaN when the program
    refused to run so (mtr takes no interval under 1 s from a user who is not root)."""
    wall, cpu, done = run_measured(argv, env, cwd="/")
    if done.returncode not in (0, 1) or not done.stdout.strip():
        print(f"bench_unprivileged: {' '.join(argv[-8:])} refused: {done.stderr.strip()[:120]}")
        return float("nan"), float("nan")
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions per row [3]")
    args = parser.parse_args()

    from reachtest.lab import manager

    if not lab_allowed("bench_unprivileged"):
        return 3
    mtr, tracepath = shutil.which("mtr"), shutil.which("tracepath")
    for name, found in (("mtr", mtr), ("tracepath", tracepath)):
        if found is None:
            print(f"bench_unprivileged: {name} is not installed: its rows are skipped")
    plain = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    as_user = plain | {"SUDO_UID": NOBODY, "SUDO_GID": NOBODY}
    setpriv = ["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"]
    plan = manager.up("clean", lab_id=LAB)
    try:
        inside = ["ip", "netns", "exec", plan.topology.netns("client")]
        server = str(plan.topology.server_address(v6=False))
        rows: list[tuple[str, list[str], dict[str, str]]] = []
        for interval in ("1", "0.1"):
            trace = [REACHTEST, "trace", server, "-p", "tcp/443", "-p", "tcp/80", "-p",
                     "udp/53", "-c", "10", "-i", interval, "--report", "-n"]  # fmt: skip
            rows.append((f"reachtest trace -i {interval}, raw", trace, plain))
            rows.append((f"reachtest trace -i {interval} --unprivileged, uid 65534",
                         [*trace, "--unprivileged"], as_user))  # fmt: skip
            if mtr:
                udp = [*setpriv, mtr, "--report", "-c", "10", "-i", interval, "-n", "-u", server]
                rows.append((f"mtr -u --report -c 10 -i {interval}, uid 65534", udp, plain))
        if tracepath:
            rows.append(("tracepath -n, uid 65534", [*setpriv, tracepath, "-n", server], plain))
        samples: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):  # interleaved, so drift hits every row alike
            for name, argv, env in rows:
                samples.setdefault(name, []).append(measured([*inside, *argv], env))
        print(f"{'command':52} {'wall s':>8} {'CPU s':>7} {'wall ratio':>10}")
        for interval in ("1", "0.1"):
            ours = statistics.median(w for w, _ in samples[f"reachtest trace -i {interval}, raw"])
            for name, _argv, _env in rows:
                if f"-i {interval}" not in name:
                    continue
                wall = statistics.median(w for w, _ in samples[name])
                cpu = statistics.median(c for _, c in samples[name])
                print(f"{name:52} {wall:8.3f} {cpu:7.2f} {ours / wall:10.2f}")
        if tracepath:
            name = "tracepath -n, uid 65534"
            wall = statistics.median(w for w, _ in samples[name])
            cpu = statistics.median(c for _, c in samples[name])
            print(f"{name:52} {wall:8.3f} {cpu:7.2f} {'-':>10}")
        print(f"(medians of {args.runs} runs; ratio = reachtest raw wall / row wall at the same "
              "interval)")  # fmt: skip
    finally:
        manager.down(LAB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
