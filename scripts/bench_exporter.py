"""Benchmark of `reachtest exporter` in the lab (run as root; nothing leaves the lab).

1. The warm cost of one probe (trace mode, icmp + 3 services, 5 rounds): the engine's
   CPU, and the CPU beyond it (analysis, the run record, the verdicts, the exposition),
   median of repeated probes; target: <= 50 ms beyond the engine. Beside it, the peer in
   the same lab: the CPU per scrape of Debian's blackbox_exporter (icmp prober) against
   reachtest's check mode with icmp only (the nearest thing blackbox does).
2. Load: a lab with 200 extra targets, a real Prometheus scraping each every 30 s
   (timeout 25 s) through the exporter pinned to one core, for 5 minutes: scrapes that
   failed or missed their timeout, the slowest scrape, the exporter's CPU share and its
   resident memory over time (first minute against last). The exporter runs with the
   environment its systemd unit sets (``--glibc-default``: without it).

    python scripts/bench_exporter.py [--probes 15] [--minutes 5] [--targets 200] [--skip-load]
        [--glibc-default]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import lab_allowed

from reachtest.lab import manager, netns
from reachtest.schedule.install import EXPORTER_ENVIRONMENT

EXE = str(Path(sys.executable).parent / "reachtest")
PROM_PORT = 19090
MODULE = """\
[exporter]
allow = ["198.18.0.0/15", "2001:db8::/32"]
concurrency = {concurrency}
queue = {queue}
[module.web]
services = ["tcp/443", "tcp/80", "udp/53"]
mode = "trace"
rounds = {rounds}
interval = {interval}
timeout = 1.0
max_ttl = {max_ttl}
[module.ping]
services = []
mode = "check"
rounds = 1
timeout = 1.0
"""


@contextmanager
def process(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(ns: str, url: str, timeout: float = 60) -> bytes:
    with netns.entered(ns), urllib.request.urlopen(url, timeout=timeout) as answer:
        data: bytes = answer.read()
        return data


def wait_listening(ns: str, url: str) -> None:
    for _ in range(100):
        try:
            get(ns, url, 2)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answers {url}")


def warm_probe(plan: Any, probes: int) -> dict[str, float]:
    """Engine CPU and CPU beyond it per probe, in this process inside the client."""
    from reachtest.engine.bpf import for_run
    from reachtest.engine.transport import RawTransport
    from reachtest.serve.config import parse_exporter_config
    from reachtest.serve.probe import exposition, run_probe

    server = str(plan.topology.server_address())
    hops = plan.scenario.truth.server_hop
    config = parse_exporter_config(
        MODULE.format(concurrency=4, queue=16, rounds=5, interval=0.1, max_ttl=hops + 2)
    )
    module = config.modules["web"]
    engine, beyond = [], []
    marks: dict[str, float] = {}

    def make(address: str, flows: Any) -> Any:
        """A raw transport that notes the CPU time when the engine is done with it."""
        transport = RawTransport(receive_filter=for_run([address], flows))
        close = transport.close

        def closing() -> None:
            marks["engine_done"] = time.process_time()
            close()

        transport.close = closing  # type: ignore[method-assign]
        return transport

    with netns.entered(plan.topology.netns("client")):
        for i in range(probes + 2):
            marks.clear()

            began = time.process_time()
            result = run_probe(module, server, server, make, budget_s=None, labels={})
            exposition(result, False)
            ended = time.process_time()
            if i >= 2:  # warm: imports and first-time caches done
                engine.append(marks["engine_done"] - began)
                beyond.append(ended - marks["engine_done"])
            assert not result.partial and result.success, result.judged
    return {
        "engine_ms": statistics.median(engine) * 1000,
        "beyond_ms": statistics.median(beyond) * 1000,
    }


def peer_icmp(plan: Any, scrapes: int, tmp: Path) -> dict[str, float] | None:
    """CPU per icmp scrape: blackbox_exporter against reachtest's check mode."""
    blackbox = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if blackbox is None:
        print("  (blackbox_exporter not installed: apt install prometheus-blackbox-exporter)")
        return None
    client = plan.topology.netns("client")
    server = str(plan.topology.server_address())
    (tmp / "blackbox.yml").write_text(
        "modules:\n  icmp:\n    prober: icmp\n    timeout: 2s\n"
        "    icmp: {preferred_ip_protocol: ip4}\n"
    )
    (tmp / "exporter.toml").write_text(
        MODULE.format(concurrency=4, queue=16, rounds=1, interval=0.1, max_ttl=8)
    )
    out = {}
    peers = {
        "blackbox": (
            [
                blackbox,
                f"--config.file={tmp / 'blackbox.yml'}",
                "--web.listen-address=127.0.0.1:19115",
            ],
            f"http://127.0.0.1:19115/probe?module=icmp&target={server}",
        ),
        "reachtest": (
            [
                EXE,
                "exporter",
                "--config",
                str(tmp / "exporter.toml"),
                "--listen",
                "127.0.0.1:19469",
            ],
            f"http://127.0.0.1:19469/probe?module=ping&target={server}",
        ),
    }
    for name, (argv, url) in peers.items():
        with process(["ip", "netns", "exec", client, *argv], tmp / f"{name}.log") as proc:
            wait_listening(client, url.split("/probe")[0] + "/metrics")
            for _ in range(3):
                get(client, url)
            before = cpu_s(proc.pid)
            began = time.monotonic()
            for _ in range(scrapes):
                body = get(client, url).decode()
                assert "probe_success 1" in body, body[:500]
            wall = time.monotonic() - began
            out[f"{name}_cpu_ms"] = (cpu_s(proc.pid) - before) / scrapes * 1000
            out[f"{name}_wall_ms"] = wall / scrapes * 1000
    return out


def prom_query(ns: str, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{PROM_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = json.loads(get(ns, url))
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(ns: str, promql: str) -> float | None:
    result = prom_query(ns, promql)
    return float(result[0]["value"][1]) if result else None


def load(targets: int, minutes: float, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit("prometheus is missing (apt install prometheus)")
    lab_id = "bexp" + os.urandom(2).hex()
    plan = manager.up("clean", lab_id=lab_id, targets=targets)
    try:
        client = plan.topology.netns("client")
        addresses = [str(a) for a in plan.topology.extra_targets()[0]][:targets]
        hops = plan.scenario.truth.server_hop
        (tmp / "load.toml").write_text(
            MODULE.format(concurrency=16, queue=32, rounds=3, interval=0.2, max_ttl=hops + 2)
        )
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 30s, scrape_timeout: 25s}\nscrape_configs:\n"
            "  - job_name: probe\n    metrics_path: /probe\n    params: {module: [web]}\n"
            f"    static_configs: [{{targets: {json.dumps(addresses)}}}]\n"
            "    relabel_configs:\n"
            "      - {source_labels: [__address__], target_label: __param_target}\n"
            "      - {source_labels: [__param_target], target_label: target}\n"
            "      - {target_label: __address__, replacement: '127.0.0.1:19469'}\n"
            "  - job_name: exporter\n    scrape_interval: 10s\n    scrape_timeout: 5s\n"
            "    static_configs: [{targets: ['127.0.0.1:19469']}]\n"
        )
        exporter = [
            "taskset",
            "-c",
            "0",
            EXE,
            "exporter",
            "--config",
            str(tmp / "load.toml"),
            "--listen",
            "127.0.0.1:19469",
        ]
        server = [
            prometheus,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{PROM_PORT}",
        ]
        with (
            process(["ip", "netns", "exec", client, *exporter], tmp / "exporter.log", env),
            process(["ip", "netns", "exec", client, *server], tmp / "prometheus.log"),
        ):
            wait_listening(client, "http://127.0.0.1:19469/metrics")
            began = time.monotonic()
            end = began + minutes * 60
            while time.monotonic() < end:
                time.sleep(15)
                done = time.monotonic() - began
                ok = scalar(client, 'count(up{job="probe"} == 1)') or 0
                print(
                    f"  {done / 60:4.1f} min: {ok:.0f} of {targets} targets scraped fine",
                    flush=True,
                )
            span = f"{int(minutes * 60) + 30}s"
            scrapes = scalar(client, f'sum(count_over_time(up{{job="probe"}}[{span}]))') or 0
            good = scalar(client, f'sum(sum_over_time(up{{job="probe"}}[{span}]))') or 0
            slowest = scalar(
                client, f'max(max_over_time(scrape_duration_seconds{{job="probe"}}[{span}]))'
            )
            partial = scalar(client, f"sum(sum_over_time(reachtest_probe_partial[{span}]))") or 0
            success = scalar(client, "count(probe_success == 1)") or 0
            cpu = scalar(client, f'rate(process_cpu_seconds_total{{job="exporter"}}[{span}])')
            rss = prom_query(client, f'process_resident_memory_bytes{{job="exporter"}}[{span}]')
            samples = [float(v) for _, v in rss[0]["values"]] if rss else []
            sixth = max(1, len(samples) // int(max(1, minutes)))
            per_minute = [
                statistics.median(samples[i : i + 6]) / 2**20 for i in range(0, len(samples), 6)
            ]
            print("  exporter RSS by minute (MB): " + " ".join(f"{m:.1f}" for m in per_minute))
            return {
                "scrapes": scrapes,
                "failed": scrapes - good,
                "partial": partial,
                "slowest_s": slowest,
                "succeeding_targets": success,
                "cpu_share": cpu,
                "rss_first_mb": statistics.median(samples[:sixth]) / 2**20 if samples else None,
                "rss_last_mb": statistics.median(samples[-sixth:]) / 2**20 if samples else None,
            }
    finally:
        manager.down(lab_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", type=int, default=15)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="run the exporter without the environment its systemd unit sets",
    )
    args = parser.parse_args()
    if not lab_allowed("bench_exporter"):
        return 3
    lab_id = "bexw" + os.urandom(2).hex()
    with tempfile.TemporaryDirectory(prefix="bench-exporter-") as folder:
        tmp = Path(folder)
        plan = manager.up("clean", lab_id=lab_id)
        try:
            warm = warm_probe(plan, args.probes)
            print(f"warm probe (trace, icmp + 3 services, 5 rounds), median of {args.probes}:")
            print(
                f"  engine {warm['engine_ms']:.1f} ms CPU; beyond the engine "
                f"{warm['beyond_ms']:.1f} ms CPU (target <= 50 ms)"
            )
            peer = peer_icmp(plan, args.probes * 2, tmp)
            if peer:
                print(
                    f"icmp probe per scrape, mean of {args.probes * 2}: blackbox_exporter "
                    f"{peer['blackbox_cpu_ms']:.1f} ms CPU "
                    f"({peer['blackbox_wall_ms']:.0f} ms wall),"
                    f" reachtest check mode {peer['reachtest_cpu_ms']:.1f} ms CPU "
                    f"({peer['reachtest_wall_ms']:.0f} ms wall): ratio "
                    f"{peer['reachtest_cpu_ms'] / peer['blackbox_cpu_ms']:.1f}x"
                )
        finally:
            manager.down(lab_id)
        if not args.skip_load:
            print(
                f"load: {args.targets} targets every 30 s for {args.minutes:g} min, "
                "exporter on one core:"
            )
            env = {} if args.glibc_default else dict(EXPORTER_ENVIRONMENT)
            shown = " ".join(f"{k}={v}" for k, v in env.items()) or "glibc's defaults"
            print(f"  exporter environment: {shown}")
            got = load(args.targets, args.minutes, tmp, env)
            print(
                f"  scrapes {got['scrapes']:.0f}, failed {got['failed']:.0f}, partial "
                f"{got['partial']:.0f}, slowest {got['slowest_s']:.2f} s (timeout 25 s); "
                f"{got['succeeding_targets']:.0f} targets with probe_success 1"
            )
            print(
                f"  exporter CPU {got['cpu_share'] * 100:.0f}% of a core; RSS first minute "
                f"{got['rss_first_mb']:.1f} MB, last minute {got['rss_last_mb']:.1f} MB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
