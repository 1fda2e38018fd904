"""Differential tests: the engine's raw outcomes agree with traceroute and nmap run on the
same lab (Debian's traceroute and nmap, installed by scripts/setup)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from reachtest.model import FlowSpec, Outcome, ReplyKind, TraceParams
from reachtest.spec import parse_flow
from tests.lab.conftest import Lab, MakeLab, run_engine

pytestmark = pytest.mark.usefixtures("peers_installed")


@pytest.fixture
def peers_installed() -> None:
    for program in ("traceroute", "nmap"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt install {program}; scripts/setup does)")


def engine(lab: Lab, targets: list[str], flows: list[FlowSpec], max_ttl: int) -> list[Outcome]:
    params = TraceParams(rounds=1, timeout_s=1.0, max_ttl=max_ttl, gap_limit=max_ttl)
    return list(run_engine(lab, targets, flows, params).outcomes)


def traceroute(lab: Lab, args: list[str], dst: str, max_ttl: int) -> dict[int, str | None]:
    argv = ["ip", "netns", "exec", lab.client, "traceroute", "-n", "-q", "1", "-w", "1"]
    argv += ["-m", str(max_ttl), *args, dst]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    hops: dict[int, str | None] = {}
    for line in out.splitlines()[1:]:
        found = re.match(r"\s*(\d+)\s+(\S+)", line)
        if found:
            hops[int(found[1])] = None if found[2] == "*" else found[2]
    return hops


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_hops_match_traceroute_for_icmp_and_tcp(make_lab: MakeLab, v6: bool) -> None:
    lab = make_lab("tcp-drop")
    dst = lab.server(v6)
    max_ttl = lab.plan.scenario.truth.server_hop + 1
    flows = {
        "-I": parse_flow("icmp"),
        "-T -p 443": parse_flow("tcp/443"),
        "-T -p 80": parse_flow("tcp/80"),
    }
    ours = engine(lab, [dst], list(flows.values()), max_ttl)
    for args, flow in flows.items():
        theirs = traceroute(lab, [*(["-6"] if v6 else []), *args.split()], dst, max_ttl)
        mine = {o.ttl: o.responder for o in ours if o.flow == flow}
        common = sorted(set(theirs) & set(mine))
        assert len(common) >= 4, (args, theirs, mine)
        assert {t: mine[t] for t in common} == {t: theirs[t] for t in common}, args


NMAP_STATE = {
    ReplyKind.TCP_SYN_ACK: "open",
    ReplyKind.TCP_RST: "closed",
    ReplyKind.TIMEOUT: "filtered",
    ReplyKind.UDP_REPLY: "open",
    ReplyKind.PORT_UNREACHABLE: "closed",
}


def test_answers_at_the_target_match_nmaps_port_states(make_lab: MakeLab) -> None:
    lab = make_lab("tcp-drop")
    dst = lab.server()
    tcp_ports, udp_ports = (22, 80, 443, 9), (53, 123, 9)
    argv = [
        "ip",
        "netns",
        "exec",
        lab.client,
        "nmap",
        "-n",
        "-Pn",
        "-sS",
        "-sU",
        "--reason",
        "-oG",
        "-",
    ]
    argv += [
        "-p",
        "T:" + ",".join(map(str, tcp_ports)) + ",U:" + ",".join(map(str, udp_ports)),
        dst,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    theirs = {
        f"{proto}/{port}": state
        for port, state, proto in re.findall(r"(\d+)/([a-z|]+)/(tcp|udp)/", out)
    }
    flows = [parse_flow(f"tcp/{p}") for p in tcp_ports] + [
        parse_flow(f"udp/{p}") for p in udp_ports
    ]
    hop = lab.plan.scenario.truth.server_hop
    at_target = {
        o.flow.label: NMAP_STATE[o.kind]
        for o in engine(lab, [dst], flows, hop)
        if o.ttl == hop  # the TTL that reaches the server
    }
    assert len(theirs) == len(flows), out
    assert at_target == theirs
