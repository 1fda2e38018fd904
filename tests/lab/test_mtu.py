"""Path MTU and PMTU black holes (issue 27) in the `mtu` and `mtu-blackhole` scenarios:
the link after the middle router carries 1400 bytes, and its routers say so or not.

The truth with the tools admins have (ping -M do -s, tracepath, a big HTTP answer
fetched with curl), then `trace --mtu` against it: every flow's path MTU, the hop after
which bigger packets die, black hole or not; over IPv4 and IPv6, as root and as uid
65534 (ordinary sockets only); on a clean path one probe per flow and no finding."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reachtest.lab.scenarios import SMALL_MTU
from reachtest.report.record import validate_record
from tests.lab.conftest import Lab, MakeLab, reachtest_cmd
from tests.lab.test_unprivileged import trace_as_nobody


def in_client(lab: Lab, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *argv],
        capture_output=True, text=True, timeout=timeout, check=False, input="",
    )  # fmt: skip


def ping(lab: Lab, v6: bool, size: int) -> str:
    """One echo of ``size`` bytes on the wire (DF set), its output."""
    payload = size - (48 if v6 else 28)
    done = in_client(
        lab, "ping", "-6" if v6 else "-4", "-n", "-c", "1", "-W", "1", "-M", "do", "-s",
        str(payload), lab.server(v6),
    )  # fmt: skip
    return done.stdout + done.stderr


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("name", ["mtu", "mtu-blackhole"])
def test_admins_tools_see_the_small_link(make_lab: MakeLab, name: str, v6: bool) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth.mtu
    assert truth is not None and truth.mtu == SMALL_MTU
    bigger = ping(lab, v6, SMALL_MTU + 1)  # first: before the kernel caches a path MTU
    if truth.black_hole:
        assert "0 received" in bigger and "mtu" not in bigger.lower(), bigger
    else:
        said = (
            f"Packet too big: mtu={SMALL_MTU}"
            if v6
            else f"Frag needed and DF set (mtu = {SMALL_MTU})"
        )
        assert said in bigger, bigger
        assert any(a in bigger for a in lab.hop(truth.hop, v6)), bigger
    assert "1 received" in ping(lab, v6, SMALL_MTU)
    server = f"[{lab.server(True)}]" if v6 else lab.server()
    fetched = in_client(lab, "curl", "-s", "-o", "/dev/null", "-m", "5", f"http://{server}/big")
    assert fetched.returncode == (28 if truth.black_hole else 0), fetched  # 28: timed out
    small = in_client(lab, "curl", "-s", "-o", "/dev/null", "-m", "5", f"http://{server}/")
    assert small.returncode == 0, small  # small answers pass either way


def test_tracepath_finds_the_named_mtu(make_lab: MakeLab) -> None:
    lab = make_lab("mtu")
    done = in_client(lab, "tracepath", "-n", "-4", lab.server(), timeout=60)
    assert f"pmtu {SMALL_MTU}" in done.stdout, done.stdout


def trace_mtu(lab: Lab, v6: bool, nobody: bool, *more: str) -> tuple[int, dict]:
    args = [
        lab.server(v6), "-p", "tcp/80", "-p", "udp/53", *more, "--mtu", "-c", "2", "-i", "0.1",
        "--timeout", "1", "-n", "--json", "-",
    ]  # fmt: skip
    if nobody:
        done = trace_as_nobody(lab, "--unprivileged", *args)
    else:
        done = in_client(lab, *reachtest_cmd(), "trace", *args, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    record = json.loads(done.stdout)
    validate_record(record)
    return done.returncode, record


@pytest.mark.parametrize("nobody", [False, True], ids=["root", "uid-65534"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("name", ["mtu", "mtu-blackhole"])
def test_trace_finds_the_path_mtu_and_where_bigger_packets_die(
    make_lab: MakeLab, name: str, v6: bool, nobody: bool
) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth.mtu
    assert truth is not None
    code, record = trace_mtu(lab, v6, nobody)
    (target,) = record["targets"]
    found = {m["flow"]: m for m in target["mtu"]}
    assert set(found) == {"icmp", "tcp/80", "udp/53"}
    for flow, m in found.items():
        assert (m["mtu"], m["limit"]) == (SMALL_MTU, SMALL_MTU + 1), (flow, m)
        assert m["black_hole"] is truth.black_hole and m["named"] is (not truth.black_hole)
        assert m["hop"] == truth.hop and m["address"] in lab.hop(truth.hop, v6), (flow, m)
    kind = "pmtu-black-hole" if truth.black_hole else "path-mtu"
    findings = [f for f in target["findings"] if f["kind"] == kind]
    assert {f["flow"] for f in findings} == set(found)
    assert all(f"after hop {truth.hop}" in f["summary"] for f in findings)
    assert code == (1 if truth.black_hole else 0)  # a black hole fails the run


def test_a_clean_path_costs_one_probe_per_flow(make_lab: MakeLab) -> None:
    """And a closed TCP port is not sized: its refused handshake carried no data."""
    lab = make_lab("clean")
    code, record = trace_mtu(lab, False, False, "-p", "tcp/9")
    assert code == 1  # tcp/9 is closed
    (target,) = record["targets"]
    assert {(m["flow"], m["mtu"], m["probes"]) for m in target["mtu"]} == {
        ("icmp", 1500, 1), ("tcp/80", 1500, 1), ("udp/53", 1500, 1), ("tcp/9", None, 1),
    }  # fmt: skip
    assert not [f for f in target["findings"] if f["kind"] in ("pmtu-black-hole", "path-mtu")]


RUN_CONFIG = """\
history = "history.sqlite"
prometheus = "reachtest.prom"

[[target]]
host = "{server}"
name = "web"
services = ["tcp/80"]
mtu = 1400
rounds = 2
interval = 0.1
timeout = 1
"""


def test_run_judges_the_least_path_mtu_and_the_black_hole(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """`mtu = 1400` in `run`: 1400 bytes pass, but bigger ones vanish without a word, so
    the expectation fails, saying where; the metrics carry each flow's path MTU."""
    from reachtest.schedule import metrics
    from tests.lab.test_run_cli import in_lab

    lab = make_lab("mtu-blackhole")
    truth = lab.plan.scenario.truth.mtu
    assert truth is not None
    config = tmp_path / "web.toml"
    config.write_text(RUN_CONFIG.format(server=lab.server()))
    done = in_lab(lab, "run", "--config", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if " mtu: expected" in x]
    assert f"expected >= {SMALL_MTU}, got {SMALL_MTU} (black-hole)" in line, line
    assert f"after hop {truth.hop} (" in line, line
    got = metrics.parse((tmp_path / "reachtest.prom").read_text())
    for flow in ("icmp", "tcp/80"):
        protocol, _, port = flow.partition("/")
        labels = (("port", port), ("protocol", protocol), ("target", "web"))
        assert got[("reachtest_path_mtu_bytes", labels)] == SMALL_MTU
        assert got[("reachtest_pmtu_black_hole", labels)] == 1


EXPORTER_CONFIG = """\
[exporter]
allow = ["198.18.0.0/15", "2001:db8::/32"]

[module.big]
services = ["tcp/80"]
mtu = true
rounds = 2
interval = 0.1
timeout = 1.0
"""


def test_the_exporter_reports_each_flows_path_mtu(make_lab: MakeLab, tmp_path: Path) -> None:
    from reachtest.schedule import metrics
    from tests.lab.test_exporter_prometheus import started
    from tests.lab.test_exporter_requests import exporter_argv, scrape

    lab = make_lab("mtu")
    config = tmp_path / "exporter.toml"
    config.write_text(EXPORTER_CONFIG)
    with started(exporter_argv(lab, config), tmp_path / "exporter.log"):
        status, body = scrape(lab.client, f"/probe?target={lab.server(True)}&module=big")
    assert status == 200, body
    got = metrics.parse(body)
    for flow in ("icmp", "tcp/80"):
        protocol, _, port = flow.partition("/")
        labels = (("flow", flow), ("port", port), ("protocol", protocol))
        assert got[("reachtest_path_mtu_bytes", labels)] == SMALL_MTU
        assert got[("reachtest_pmtu_black_hole", labels)] == 0  # r3 says so
