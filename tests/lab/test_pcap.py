"""`trace --pcap` in the lab, read back by Debian's tshark: one packet per probe sent and
per reply received (as the run record counts them), both families in one file, probes as
the kernel sent them (valid IPv4 header checksums), time-exceeded replies that decode
with the probe they quote, and timestamps inside the run."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from tests.lab.conftest import MakeLab
from tests.lab.test_trace_cli import trace_in

FIELDS = (
    "frame.time_epoch", "ip.src", "ipv6.src", "ip.ttl", "ipv6.hlim", "ip.checksum.status",
    "icmp.type", "icmpv6.type", "tcp.flags.syn", "tcp.flags.ack", "udp.dstport",
)  # fmt: skip


def tshark(pcap: Path, *args: str) -> list[dict[str, str]]:
    exe = shutil.which("tshark")
    if exe is None:
        pytest.skip("Debian's tshark is not installed (scripts/setup installs it)")
    argv = [exe, "-r", str(pcap), "-o", "ip.check_checksum:TRUE", "-T", "fields", "-E",
            "separator=|", *(a for f in FIELDS for a in ("-e", f)), *args]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [dict(zip(FIELDS, line.split("|"), strict=True)) for line in done.stdout.splitlines()]


def test_the_pcap_holds_every_probe_and_reply(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab("tcp-drop")
    pcap, run = tmp_path / "run.pcap", tmp_path / "run.json"
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{lab.server()}\n{lab.server(True)}\n")
    done = trace_in(
        lab, "-F", str(hosts), "-p", "tcp/443", "-p", "tcp/80", "-p", "udp/53",
        "-c", "3", "-i", "0.2", "--timeout", "0.5", "-n",
        "--json", str(run), "--pcap", str(pcap),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = json.loads(run.read_text())
    totals = record["totals"]
    packets = tshark(pcap)
    assert len(packets) == totals["sent"] + totals["answered"] + totals["duplicate_or_late"]
    ours = {"198.18.1.1", "2001:db8:0:1::1"}
    # With the quoted probe decoded, tshark lists two sources for ICMP errors: the first.
    sent = [p for p in packets if (p["ip.src"] or p["ipv6.src"]).split(",")[0] in ours]
    assert len(sent) == totals["sent"]
    assert {p["ip.checksum.status"] for p in sent if p["ip.src"]} == {"1"}  # kernel-made: good
    assert {p["ip.ttl"] for p in sent if p["ip.src"]} >= {"1", "2", "3", "6"}
    assert {p["ipv6.hlim"] for p in sent if p["ipv6.src"]} >= {"1", "2", "3", "6"}
    exceeded = tshark(pcap, "-Y", "icmp.type == 11 || icmpv6.type == 3")
    assert exceeded and all(p["icmp.type"].startswith("11") or p["icmpv6.type"].startswith("3")
                            for p in exceeded)  # fmt: skip
    quoted = tshark(pcap, "-Y", "icmp.type == 11 && icmp.ext || icmp.type == 11 && ip.ttl == 1")
    assert quoted, "no time-exceeded quoting a probe sent with TTL 1"
    assert tshark(pcap, "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 1")  # tcp/80 answers
    stamps = [float(p["frame.time_epoch"]) for p in packets]
    assert stamps == sorted(stamps)
    start = datetime.fromisoformat(record["started"].replace("Z", "+00:00")).timestamp()
    end = datetime.fromisoformat(record["finished"].replace("Z", "+00:00")).timestamp()
    assert start - 0.01 <= stamps[0] and stamps[-1] <= end + 0.01


def test_pcap_refuses_stdout_before_any_probe(make_lab: MakeLab) -> None:
    lab = make_lab("clean")
    done = trace_in(lab, "server", "-p", "443", "--pcap", "-")
    assert done.returncode == 2 and "--pcap needs a FILE" in done.stderr


def test_the_pcap_holds_the_requests_traced_after_the_handshake(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """`-p tls/443`: the ClientHellos with the test name sent at TTL 1 .. the server's
    distance (the kernel's own segments), the routers' time-exceeded for TTL 1-3, the
    box's resets in the server's name from TTL 4 on; nothing of it without --pcap."""
    lab = make_lab("tls-sni-reset")
    truth = lab.plan.scenario.truth
    (request,) = truth.requests
    pcap = tmp_path / "run.pcap"
    done = trace_in(
        lab, lab.server(), "-p", "tls/443", "--sni", request.name, "-c", "2", "-i", "0.1",
        "--timeout", "1", "-n", "--report", "--pcap", str(pcap),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    exe = shutil.which("tshark")
    assert exe is not None
    hellos = subprocess.run(
        [exe, "-r", str(pcap), "-Y", f'tls.handshake.extensions_server_name == "{request.name}"',
         "-T", "fields", "-e", "ip.ttl"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sorted(map(int, hellos)) == list(range(1, truth.server_hop + 1))
    resets = tshark(pcap, "-Y", f"ip.src == {lab.server()} && tcp.flags.reset == 1")
    assert len(resets) >= truth.server_hop - (request.hop or 0)  # TTL 4 .. the server
    exceeded = {p["ip.src"].split(",")[0] for p in tshark(pcap, "-Y", "icmp.type == 11")}
    for ttl in range(1, (request.hop or 0) + 1):
        assert exceeded & lab.hop(ttl), (ttl, exceeded)
