"""Flow and host spellings: ports, service names, lists, ranges, host files, and the
one-line errors for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reachtest.errors import UsageError
from reachtest.model import ICMP_FLOW, Protocol, tcp, udp
from reachtest.spec import MAX_FLOWS, flow_list, parse_flow, parse_flows, read_host_file


@pytest.mark.parametrize(
    ("text", "flows"),
    [
        ("icmp", [ICMP_FLOW]),
        ("tcp/443", [tcp(443)]),
        ("UDP/53", [udp(53)]),
        ("443", [tcp(443)]),
        ("https", [tcp(443)]),
        ("dns", [udp(53)]),
        ("ntp", [udp(123)]),
        ("ssh", [tcp(22)]),
        ("tcp/dns", [tcp(53)]),
        ("udp/https", [udp(443)]),
        ("tcp/80,443", [tcp(80), tcp(443)]),
        ("tcp/80,443,udp/53,123", [tcp(80), tcp(443), udp(53), udp(123)]),
        ("https,dns", [tcp(443), udp(53)]),
        ("tcp/8000-8003", [tcp(8000), tcp(8001), tcp(8002), tcp(8003)]),
        ("udp/33434-33435", [udp(33434), udp(33435)]),
        (" tcp/22 , icmp ", [tcp(22), ICMP_FLOW]),
    ],
)
def test_port_spellings(text: str, flows: list[object]) -> None:
    assert parse_flows(text) == flows


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tcp/0", "a port is 1..65535, not 0"),
        ("70000", "a port is 1..65535, not 70000"),
        ("udp/70000", "a port is 1..65535, not 70000"),
        ("sctp/80", "the protocol is icmp, tcp or udp"),
        ("tcp/", "a port is missing after tcp/"),
        ("no-such-service-name", "neither a port number nor a service name"),
        ("tcp/90-80", "90 is above 80"),
        ("tcp/1-1000", f"1000 ports, at most {MAX_FLOWS} per run"),
        (",", "no port in it"),
    ],
)
def test_bad_port_spellings_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=r"^bad ") as caught:
        parse_flows(text)
    assert message in str(caught.value)


@given(st.sampled_from([Protocol.TCP, Protocol.UDP]), st.integers(1, 65535))
def test_every_port_reads_back_from_its_label(protocol: Protocol, port: int) -> None:
    flow = parse_flow(f"{protocol}/{port}")
    assert (flow.protocol, flow.port) == (protocol, port)
    assert parse_flow(flow.label) == flow


def test_flow_list_puts_icmp_first_once_and_keeps_the_users_order() -> None:
    assert flow_list(["tcp/443", "tcp/80", "443", "icmp"]) == (ICMP_FLOW, tcp(443), tcp(80))
    assert flow_list(["tcp/443", "udp/53"], icmp=False) == (tcp(443), udp(53))


def test_flow_list_needs_a_flow_and_caps_the_count() -> None:
    with pytest.raises(UsageError, match="nothing to trace"):
        flow_list([], icmp=False)
    with pytest.raises(UsageError, match="too many flows"):
        flow_list(["tcp/1000-1060", "udp/1000-1060"])


def test_host_file_reads_names_and_skips_comments(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# targets\nserver  198.18.6.2\n\n2001:db8::1 # v6\n")
    assert read_host_file(str(hosts)) == ["server", "198.18.6.2", "2001:db8::1"]


def test_host_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read host file .*No such file"):
        read_host_file(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(UsageError, match="names no host"):
        read_host_file(str(empty))
