"""The lab's special behaviours: ECMP, rate limits, loss, services, extra targets, sizes."""

from __future__ import annotations

import socket
import time

import pytest

from reachtest.lab import netns
from reachtest.lab.plan import DNS_DOMAIN
from reachtest.lab.scenarios import middle
from tests.lab import netprobe
from tests.lab.conftest import MakeLab


def _udp_ttl_responders(dst: str, ttl: int, ports: range) -> dict[int, str | None]:
    """Responder of a TTL-limited UDP probe from each of ``ports`` (as source ports)."""
    return {p: netprobe.udp_probe(dst, 33434, ttl=ttl, sport=p).responder for p in ports}


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_ecmp_spreads_flows_over_both_routers_and_keeps_each_flow_on_one(
    make_lab: MakeLab, v6: bool
) -> None:
    lab = make_lab("ecmp")
    hop = middle(5)
    with netns.entered(lab.client):
        spread = _udp_ttl_responders(lab.server(v6), hop, range(40000, 40032))
        repeat = [
            _udp_ttl_responders(lab.server(v6), hop, range(40000, 40001))[40000] for _ in range(8)
        ]
    assert set(spread.values()) == lab.hop(hop, v6), "32 flows should use both parallel routers"
    assert len(set(repeat)) == 1 and repeat[0] == spread[40000], "one 5-tuple, one path"


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_ratelimited_hop_loses_answers_in_a_burst_while_others_answer_all(
    make_lab: MakeLab, v6: bool
) -> None:
    lab = make_lab("ratelimited-hop")
    limited = lab.plan.scenario.truth.ratelimited_hops[0]
    with netns.entered(lab.client):
        before = netprobe.echo_burst(lab.server(v6), 40, ttl=limited - 1)
        at = netprobe.echo_burst(lab.server(v6), 40, ttl=limited)
    assert before[netprobe.TIMEOUT] == 0, before
    assert at[netprobe.TIMEOUT] >= 20, f"kernel defaults should drop most of a burst: {at}"
    assert sum(n for a, n in at.items() if a.kind == "time-exceeded") >= 1


def test_lossy_link_loses_about_its_share_from_its_hop_on(make_lab: MakeLab) -> None:
    lab = make_lab("lossy-link")
    truth = lab.plan.scenario.truth
    assert truth.lossy_from_hop is not None
    with netns.entered(lab.client):
        before = netprobe.echo_burst(lab.server(), 200, ttl=truth.lossy_from_hop - 1)
        after = netprobe.echo_burst(lab.server(), 200, ttl=64)
    assert before[netprobe.TIMEOUT] == 0
    lost_pct = after[netprobe.TIMEOUT] / 2
    # 20 % of 200 is 40 +- 5.7 (one sd): 10 .. 30 % is beyond 3.5 sd either way.
    assert 10 <= lost_pct <= 30, f"{lost_pct}% lost, want about {truth.loss_pct}%"


def test_server_dns_and_ntp_answer_real_requests(make_lab: MakeLab) -> None:
    import dns.message
    import dns.query
    import dns.rcode
    import dns.reversename

    lab = make_lab("clean")
    fqdn = f"server.{lab.lab_id}.{DNS_DOMAIN}."
    with netns.entered(lab.client):
        forward = dns.query.udp(dns.message.make_query(fqdn, "A"), lab.server(), timeout=2)
        forward6 = dns.query.udp(dns.message.make_query(fqdn, "AAAA"), lab.server(True), timeout=2)
        reverse = dns.query.udp(
            dns.message.make_query(dns.reversename.from_address("198.18.3.2"), "PTR"),
            lab.server(),
            timeout=2,
        )
        missing = dns.query.udp(
            dns.message.make_query("nosuch.example.", "A"), lab.server(), timeout=2
        )
        local = dns.query.udp(
            dns.message.make_query(dns.reversename.from_address("2001:db8:0:4::2"), "PTR"),
            "127.0.0.1",
            timeout=2,
        )
        request = netprobe.ntp_request()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(request, (lab.server(), 123))
            reply = sock.recv(512)
    assert [r.to_text() for r in forward.answer[0]] == [lab.server()]
    assert [r.to_text() for r in forward6.answer[0]] == [lab.server(True)]
    assert reverse.answer[0][0].to_text() == f"r3.{lab.lab_id}.{DNS_DOMAIN}."
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert local.answer[0][0].to_text() == f"r4.{lab.lab_id}.{DNS_DOMAIN}."
    assert reply[0] & 0x7 == 4, "NTP mode 4 (server)"
    assert reply[1] == 2, "stratum 2"
    assert reply[24:32] == request[40:48], "origin timestamp echoes our transmit timestamp"


def test_extra_targets_answer_over_both_families(make_lab: MakeLab) -> None:
    lab = make_lab("clean", targets=300)
    v4, v6 = lab.plan.topology.extra_targets()
    picks = [str(v4[0]), str(v4[-1]), str(v6[0]), str(v6[-1])]
    with netns.entered(lab.client):
        pings = {a: netprobe.echo_probe(a).kind for a in picks}
        tcp80 = {a: netprobe.tcp_probe(a, 80).kind for a in picks}
        beyond = netprobe.echo_probe(str(v4[-1] + 1), timeout_s=0.3).kind
    assert set(pings.values()) == {"echo-reply"}, pings
    assert set(tcp80.values()) == {"tcp-syn-ack"}, tcp80
    assert beyond != "echo-reply", "only the K addresses asked for are the server's"


@pytest.mark.parametrize("hops", [1, 20])
def test_hop_count_extremes(make_lab: MakeLab, hops: int) -> None:
    lab = make_lab("clean", hops=hops)
    with netns.entered(lab.client):
        last_router = netprobe.echo_probe(lab.server(True), ttl=hops)
        server = netprobe.echo_probe(lab.server(), ttl=hops + 1)
    assert last_router == netprobe.Answer("time-exceeded", lab.hop(hops, True).pop())
    assert server == netprobe.Answer("echo-reply", lab.server())


def test_two_labs_run_side_by_side_and_go_down_alone(make_lab: MakeLab) -> None:
    first = make_lab("clean", hops=2)
    second = make_lab("tcp-drop", hops=3)
    assert first.client != second.client
    from reachtest.lab import manager

    manager.down(first.lab_id)
    assert not any(n.startswith(f"rt-{first.lab_id}-") for n in netns.list_netns())
    with netns.entered(second.client):
        assert netprobe.echo_probe(second.server()).kind == "echo-reply"


def test_client_has_no_default_route_and_only_lab_prefixes(make_lab: MakeLab) -> None:
    import subprocess

    lab = make_lab("clean", targets=2)
    for family in ("-4", "-6"):
        routes = subprocess.run(
            ["ip", "-n", lab.client, family, "route", "show", "table", "all"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "default" not in routes
        prefixes = [
            line.split()[0] for line in routes.splitlines() if line and line.split()[0][0].isdigit()
        ]
        allowed = ("198.18.", "198.19.", "2001:db8:") if family == "-4" else ("2001:db8:",)
        assert prefixes and all(p.startswith(allowed) for p in prefixes), prefixes


def test_icmp_limits_are_lifted_except_where_the_scenario_keeps_them(make_lab: MakeLab) -> None:
    lab = make_lab("ratelimited-hop")
    topo = lab.plan.topology
    limited = topo.router(lab.plan.scenario.truth.ratelimited_hops[0]).name
    values = {
        n.name: netns.read_sysctl(topo.netns(n.name), "net.ipv4.icmp_ratelimit") for n in topo.nodes
    }
    assert values.pop(limited) == "1000"
    assert set(values.values()) == {"0"}


def _rtt_ms(dst: str, tries: int = 3) -> float:
    """The best of a few echo round trips to ``dst``, in ms (answered ones only)."""
    best = float("inf")
    for _ in range(tries):
        start = time.monotonic()
        answer = netprobe.echo_probe(dst, timeout_s=1.0)
        if answer.kind == "echo-reply":
            best = min(best, (time.monotonic() - start) * 1000)
    return best


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_wan_links_delay_like_a_wan_and_deliver_whole_frames(make_lab: MakeLab, v6: bool) -> None:
    lab = make_lab("wan")
    [r1] = lab.hop(1, v6)
    [r3] = lab.hop(3, v6)
    with netns.entered(lab.client):
        near, middle_, far = _rtt_ms(r1), _rtt_ms(r3), _rtt_ms(lab.server(v6))
        # A kernel completes TCP handshakes through both forwarders: the server's
        # offloaded checksums are filled in on the way (or the client would drop them).
        handshakes = [netprobe.tcp_probe(lab.server(v6), 80, timeout_s=1.0) for _ in range(5)]
    assert near < 10, near  # no delayed link before r1
    assert 38 <= middle_ < 60, middle_  # 2 x 20 ms (+- 1 ms jitter)
    assert 96 <= far < 130, far  # 2 x (20 + 30) ms (+- 3 ms jitter)
    answered = sum(a.kind == "tcp-syn-ack" for a in handshakes)
    assert answered >= 4, handshakes  # 3% loss on one link may take one
