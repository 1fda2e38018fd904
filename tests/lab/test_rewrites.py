"""Header rewrites per hop (issue 27, tracebox's question) in the `mss-clamp` and
`dscp-rewrite` scenarios: the truth read on the server's wire (a raw capture of what
arrives), then `trace` naming the rewriting hop and the new value, over IPv4 and IPv6,
from the quotes of the routers' time-exceeded alone."""

from __future__ import annotations

import json
import select
import socket
import time

import pytest

from reachtest.lab import netns
from reachtest.lab.scenarios import CLAMPED_MSS, REMARKED_DSCP
from tests.lab.conftest import Lab, MakeLab
from tests.lab.test_trace_cli import trace_in


def arriving_syn(lab: Lab, v6: bool) -> bytes:
    """The IP packet of a SYN to tcp/443 as it reaches the server (a raw capture there,
    while the client connects)."""
    proto = socket.htons(0x86DD if v6 else 0x0800)
    with netns.entered(lab.plan.topology.netns("server")):
        capture = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, proto)
    with capture:
        with netns.entered(lab.plan.topology.netns("client")):
            sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(2)
            sock.connect((lab.server(v6), 443))
            sock.close()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if not select.select([capture], [], [], 0.2)[0]:
                continue
            packet = capture.recv(2048)
            header = 40 if v6 else (packet[0] & 0x0F) * 4
            nxt = packet[6] if v6 else packet[9]
            tcp = packet[header:]
            if nxt == 6 and tcp[2:4] == (443).to_bytes(2, "big") and tcp[13] & 0x12 == 0x02:
                return packet
    raise AssertionError("no SYN reached the server")


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("name", ["mss-clamp", "dscp-rewrite"])
def test_trace_names_the_rewriting_hop_and_the_value(
    make_lab: MakeLab, name: str, v6: bool
) -> None:
    lab = make_lab(name)
    ((hop, field, value),) = lab.plan.scenario.truth.rewrites
    syn = arriving_syn(lab, v6)
    if field == "mss":
        options = syn[(40 if v6 else 20) + 20 :]
        assert options[:2] == b"\x02\x04" and int.from_bytes(options[2:4], "big") == CLAMPED_MSS
    else:
        tclass = ((syn[0] & 0x0F) << 4 | syn[1] >> 4) if v6 else syn[1]
        assert tclass >> 2 == REMARKED_DSCP
    done = trace_in(
        lab, lab.server(v6), "-p", "tcp/443", "-c", "2", "-i", "0.1", "--timeout", "1", "-n",
        "--json", "-",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (target,) = json.loads(done.stdout)["targets"]
    said = [f for f in target["findings"] if f["kind"] == "quote-rewritten"]
    tcp = [f for f in said if f["flow"] == "tcp/443"]
    assert len(tcp) == 1 and tcp[0]["first_hop"] == hop, said
    if field == "mss":
        assert f"hop {hop} clamps the SYN's MSS to {value}" in tcp[0]["summary"]
    else:
        assert f"hop {hop} rewrites the traffic class (DSCP {value}" in tcp[0]["summary"]
        assert {f["flow"] for f in said} == {"icmp", "tcp/443"}  # every flow is remarked
