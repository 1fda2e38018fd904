"""What the lab benchmarks share: timing a command's process tree, and the privilege check.

Imported by the ``scripts/bench_*.py`` scripts (run as ``python scripts/bench_x.py``, so
this folder is on the import path)."""

from __future__ import annotations

import resource
import subprocess
import sys
import time


def run_measured(
    argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall seconds, CPU seconds of the process tree, the finished process) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def lab_allowed(script: str) -> bool:
    """Can this process make labs? Says why not, in one line, when it cannot."""
    from reachtest.lab import netns

    try:
        netns.require_lab_privileges()
    except Exception as exc:  # a benchmark script: say why and stop
        print(f"{script}: {exc}", file=sys.stderr)
        return False
    return True
