"""Scenarios and their rendering into sysctls, ip lines and nft rules (no root needed)."""

from __future__ import annotations

import pytest

from reachtest.errors import UsageError
from reachtest.lab.plan import NAT_PORT_XOR, build_plan
from reachtest.lab.scenarios import (
    CLOSED_PORT,
    SCENARIOS,
    AckRewrite,
    Action,
    Delay,
    Filter,
    LinkLoss,
    Nat,
    NatKind,
    RateLimit,
    Scenario,
    Services,
    Silent,
    clean_truth,
    middle,
    parse_rule,
    scenario,
    with_extra_rules,
)
from reachtest.model import ICMP_FLOW, Reason, ServiceState, tcp, udp


def test_a_delayed_link_runs_through_a_namespace_of_its_own() -> None:
    plan = build_plan("x", scenario("wan", 5))
    assert [(d.node, d.ms, d.jitter_ms) for d in plan.delays] == [("r2", 20, 1), ("r4", 30, 2)]
    d2 = plan.delays[0]
    assert d2.netns == "rt-x-d2" and d2.netns in plan.namespaces
    assert (d2.client_side, d2.server_side) == ("d2-r1", "d2-r2")
    # r1's to-r2 and r2's to-r1 keep their MACs (the static neighbours) and meet the
    # forwarder's two interfaces instead of each other.
    into = [line for line in plan.links if "rt-x-d2" in line]
    assert len(into) == 2
    assert "to-r2 address 02:72:74:00:02:01 netns rt-x-r1" in into[0] and "d2-r1" in into[0]
    assert "d2-r2 netns rt-x-d2" in into[1] and "to-r1 address 02:72:74:00:02:02" in into[1]
    assert not any("peer name to-r1" in line and "rt-x-r1 " in line for line in plan.links)
    assert len(plan.links) == len(plan.topology.links) + 2
    with pytest.raises(UsageError, match="no node r9"):
        build_plan("x", with_extra_rules(scenario("clean", 5), ("r9:delay:10",)))


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("hops", [1, 3, 5, 20])
def test_every_scenario_builds_with_a_consistent_truth(name: str, hops: int) -> None:
    least = {"combo": 3, "wan": 4, "nat-masquerade": 3, "nat-stateless": 3}.get(name, 1)
    if hops < least:
        with pytest.raises(UsageError, match=f"at least {least} hops"):
            scenario(name, hops)
        return
    sc = scenario(name, hops)
    plan = build_plan("x", sc)
    truth = sc.truth
    assert {t.flow for t in truth.flows} >= {
        ICMP_FLOW,
        tcp(443),
        udp(53),
        tcp(CLOSED_PORT),
        udp(CLOSED_PORT),
    }
    for t in truth.flows:
        assert 1 <= t.last_hop <= truth.server_hop
        if t.reached:
            assert t.reason_hop == t.answer_ttl == t.last_hop == truth.server_hop
        if t.answer_ttl is None:
            assert t.reason is Reason.NO_RESPONSE and t.reason_hop is None
        elif not t.reached:
            assert t.reason_hop is not None and t.answer_ttl == t.reason_hop + 1
    assert len(plan.nodes) == len(plan.topology.nodes)


def test_single_fault_scenarios_change_only_their_flow() -> None:
    base = clean_truth(5, Services())
    changed = {
        "tcp-drop": tcp(443),
        "tcp-admin-prohibited": tcp(443),
        "tcp-rst-middlebox": tcp(443),
        "icmp-blocked": ICMP_FLOW,
        "udp-drop": udp(53),
    }
    for name, flow in changed.items():
        truth = scenario(name, 5).truth
        differing = [t.flow for t, b in zip(truth.flows, base.flows, strict=True) if t != b]
        assert differing == [flow], name


def test_truth_of_the_named_faults() -> None:
    m = middle(5)
    drop = scenario("tcp-drop", 5).truth.flow(tcp(443))
    assert (drop.state, drop.reason, drop.last_hop, drop.answer_ttl) == (
        ServiceState.FILTERED,
        Reason.NO_RESPONSE,
        m,
        None,
    )
    admin = scenario("tcp-admin-prohibited", 5).truth.flow(tcp(443))
    assert (admin.reason, admin.reason_hop, admin.answer_ttl) == (Reason.ADMIN_PROHIBITED, m, m + 1)
    rst = scenario("tcp-rst-middlebox", 5).truth.flow(tcp(443))
    assert (rst.state, rst.reached, rst.answer_ttl) == (ServiceState.CLOSED, False, m + 1)
    udp_drop = scenario("udp-drop", 5).truth.flow(udp(53))
    assert udp_drop.state is ServiceState.OPEN_FILTERED, "UDP silence is open|filtered"


def test_nft_rules_per_action_and_node_role() -> None:
    plan = build_plan("x", scenario("combo", 5))
    assert (
        plan.node("r2").nft is not None
        and "meta l4proto udp th dport 53 reject with icmpx type admin-prohibited"
        in plan.node("r2").nft
    )
    assert "meta l4proto tcp th dport 443 drop" in (plan.node("r3").nft or "")
    assert "reject with tcp reset" in (plan.node("r4").nft or "")
    assert "hook forward" in (plan.node("r3").nft or "")
    assert plan.node("r1").nft is None and plan.node("client").nft is None

    server = build_plan("x", scenario("icmp-blocked", 5)).node("server").nft or ""
    assert "hook input" in server and "icmpv6 type echo-request drop" in server

    silent = build_plan("x", scenario("silent-hop", 5)).node("r3").nft or ""
    assert "hook output" in silent and "icmp type time-exceeded drop" in silent

    lossy = build_plan("x", scenario("lossy-link", 5)).node("r3").nft or ""
    assert 'oifname "to-r4" numgen random mod 100 < 20 drop' in lossy

    policer = build_plan("x", scenario("policer", 5)).node("r3").nft or ""
    assert (
        'oifname "to-r4" meta l4proto tcp th dport 443 numgen random mod 100 < 30 drop' in policer
    )
    from reachtest.lab.scenarios import parse_rule

    rule = parse_rule("r2:loss:15:udp/53", 5)
    assert isinstance(rule, LinkLoss) and rule.flow == udp(53) and rule.towards == "r3"
    with pytest.raises(UsageError, match="a policer takes tcp/PORT or udp/PORT"):
        parse_rule("r2:loss:15:icmp", 5)


def test_ack_rewrite_changes_syn_acks_to_the_client_and_turns_its_resets_back() -> None:
    nft = build_plan("x", scenario("tcp-seq-rewrite", 5)).node("r3").nft or ""
    assert (
        'oifname "to-r2" tcp flags & (syn | ack) == syn | ack tcp ackseq set tcp ackseq ^ 65536'
        in nft
    )
    assert 'iifname "to-r2" tcp flags & rst == rst tcp sequence set tcp sequence ^ 65536' in nft
    assert scenario("tcp-seq-rewrite", 5).truth.ack_rewritten


def test_nat_rules_translate_out_and_back_on_the_outside_link_only() -> None:
    masq = build_plan("x", scenario("nat-masquerade", 5)).node("r2").nft or ""
    assert "type nat hook postrouting" in masq and 'oifname "to-r3" masquerade random' in masq
    plan = build_plan("x", scenario("nat-stateless", 5))
    nft = plan.node("r2").nft or ""
    lines = [line.strip() for line in nft.splitlines()]
    k = NAT_PORT_XOR
    out4 = [line for line in lines if line.startswith('oifname "to-r3" ip saddr 198.18.1.1 ')]
    assert out4 == [
        f'oifname "to-r3" ip saddr 198.18.1.1 tcp sport set tcp sport ^ {k}',
        f'oifname "to-r3" ip saddr 198.18.1.1 udp sport set udp sport ^ {k}',
        f'oifname "to-r3" ip saddr 198.18.1.1 icmp type echo-request icmp id set icmp id ^ {k}',
        'oifname "to-r3" ip saddr 198.18.1.1 ip saddr set 198.18.3.1',  # the address last
    ]
    back6 = [line for line in lines if line.startswith('iifname "to-r3" ip6 daddr 2001:db8:0:3::1')]
    assert back6[-1] == 'iifname "to-r3" ip6 daddr 2001:db8:0:3::1 ip6 daddr set 2001:db8:0:1::1'
    nd = 'iifname "to-r3" ip6 daddr 2001:db8:0:3::1 icmpv6 type { nd-neighbor-solicit'
    assert any(line.startswith(nd) for line in lines)  # the router's own neighbours stay
    assert "hook prerouting priority raw" in nft and "icmp type time-exceeded" not in nft
    truth = plan.scenario.truth
    assert (truth.nat_hop, truth.nat_seen) == (2, True)
    assert scenario("nat-masquerade", 5).truth.nat_seen is False


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (Filter(node="r1", action=Action.TCP_RESET, flow=udp(53)), "tcp-reset can only reject TCP"),
        (Filter(node="r9", action=Action.DROP, flow=tcp(80)), "no node r9"),
    ],
)
def test_impossible_rules_are_refused(rule: Filter, message: str) -> None:
    sc = Scenario(
        name="bad", description="", hops=2, rules=(rule,), truth=clean_truth(2, Services())
    )
    with pytest.raises(UsageError, match=message):
        build_plan("x", sc)


def test_sysctls_lift_icmp_limits_except_on_the_ratelimited_hop() -> None:
    plan = build_plan("x", scenario("ratelimited-hop", 5))
    for node in plan.nodes:
        lifted = ("net.ipv4.icmp_ratelimit", "0") in node.sysctls
        assert lifted == (node.node != "r3"), node.node
    routers = [n for n in plan.nodes if n.node.startswith("r")]
    assert all(("net.ipv4.ip_forward", "1") in n.sysctls for n in routers)
    assert ("net.ipv4.ping_group_range", "0 2147483647") in plan.node("client").sysctls
    assert ("net.ipv4.ip_forward", "1") not in plan.node("client").sysctls


def test_plan_lines_address_links_and_pin_neighbours() -> None:
    plan = build_plan("x", scenario("ecmp", 5), targets=2)
    assert any(
        "address 02:72:74:00:01:01" in line and "netns rt-x-client" in line for line in plan.links
    )
    r2 = plan.node("r2")
    assert any(line.startswith("route add 198.18.6.0/24 nexthop via") for line in r2.routes)
    assert any("nud permanent" in line for line in r2.routes)
    server = plan.node("server")
    assert "addr add 198.19.0.2/32 dev lo" in server.addresses
    assert "addr add 2001:db8:ff::2/128 dev lo nodad" in server.addresses


def test_names_for_hosts_and_dns() -> None:
    plan = build_plan("lab", scenario("clean", 2), targets=1)
    names = plan.names()
    assert names["server"][:2] == ("198.18.3.2", "2001:db8:0:3::2")
    assert names["t1"] == ("198.19.0.1", "2001:db8:ff::1")
    assert plan.fqdn("r1") == "r1.lab.reachtest.test"


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="known scenarios: clean, tcp-drop"):
        scenario("nope", 5)


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("r2:drop:tcp/22", Filter(node="r2", action=Action.DROP, flow=tcp(22))),
        (
            "r3:port-unreachable:udp/123",
            Filter(node="r3", action=Action.PORT_UNREACHABLE, flow=udp(123)),
        ),
        (
            "server:admin-prohibited:icmp",
            Filter(node="server", action=Action.ADMIN_PROHIBITED, flow=ICMP_FLOW),
        ),
        ("r1:silent", Silent(node="r1")),
        ("r2:ratelimit", RateLimit(node="r2")),
        ("r2:ratelimit:500", RateLimit(node="r2", ratelimit_ms=500)),
        ("r5:loss:10", LinkLoss(node="r5", towards="server", loss_pct=10)),
        ("r3:loss:10", LinkLoss(node="r3", towards="r4", loss_pct=10)),
        ("r2:delay:20", Delay(node="r2", ms=20)),
        ("server:delay:12.5:2", Delay(node="server", ms=12.5, jitter_ms=2)),
        ("r2:nat:masquerade", Nat(node="r2", towards="r3", kind=NatKind.MASQUERADE)),
        ("r4:nat:stateless", Nat(node="r4", towards="r5", kind=NatKind.STATELESS)),
        ("r3:ack-rewrite", AckRewrite(node="r3")),
    ],
)
def test_rule_specs_parse(spec: str, rule: object) -> None:
    assert parse_rule(spec, 5) == rule


@pytest.mark.parametrize(
    "spec",
    [
        "r2",
        "r2:drop",
        "r2:drop:tcp/0",
        "r2:drop:sctp/1",
        "r2:explode",
        "r2:loss:0",
        "server:loss:5",
        "r9:loss:5",
        "r2:ratelimit:fast",
        "r1:silent:x",
        "r2:delay",
        "r2:delay:0",
        "r2:delay:fast",
        "r2:delay:20:20",
        "r2:delay:5000",
        "r5:nat:stateless",
        "server:nat:masquerade",
        "r2:nat",
        "r2:nat:full-cone",
        "r3:ack-rewrite:1",
    ],
)
def test_bad_rule_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError, match="--rule"):
        parse_rule(spec, 5)


def test_extra_rules_are_added_and_marked() -> None:
    sc = with_extra_rules(scenario("clean", 5), ("r2:port-unreachable:udp/123",))
    assert sc.extra_rules == ("r2:port-unreachable:udp/123",)
    nft = build_plan("x", sc).node("r2").nft or ""
    assert "meta l4proto udp th dport 123 reject with icmpx type port-unreachable" in nft
    with pytest.raises(UsageError, match="no node r7"):
        build_plan("x", with_extra_rules(scenario("clean", 5), ("r7:silent",)))


@pytest.mark.parametrize(
    ("spec", "kind", "verb", "pattern"),
    [
        ("r3:sni-reset:blocked.example", "sni", "REJECT", "blocked.example"),
        ("r2:host-drop:a-b.example", "host", "DROP", "Host: a-b.example"),
        ("r2:qname-drop:a-b.example", "qname", "DROP", "|03|a-b|07|example|00|"),
    ],
)
def test_application_filter_rules_become_string_matches_on_both_families(
    spec: str, kind: str, verb: str, pattern: str
) -> None:
    from reachtest.lab.plan import build_plan, iptables_rules
    from reachtest.lab.scenarios import AppFilter, with_extra_rules

    rule = parse_rule(spec, 5)
    assert isinstance(rule, AppFilter) and rule.kind == kind
    plan = build_plan("tx", with_extra_rules(scenario("clean", 5), (spec,)))
    node = plan.node(rule.node)
    (args,) = node.iptables
    assert args[:2] == ("-A", "FORWARD") and verb in args
    option = "--hex-string" if kind == "qname" else "--string"
    assert args[args.index(option) + 1] == pattern and "--icase" in args
    assert args[args.index("-p") + 1] == ("udp" if kind == "qname" else "tcp")
    assert iptables_rules(plan.topology, "r1", plan.scenario.rules) == ()


@pytest.mark.parametrize("spec", ["r3:sni-reset:", "r3:sni-reset:a b", "r3:sni-kill:x.example",
                                  "r3:host-drop:-x", "r3:sni-reset:x\x00y",
                                  "r3:qname-reset:x.example"])  # fmt: skip
def test_bad_application_filter_rules_are_one_line(spec: str) -> None:
    with pytest.raises(UsageError, match="bad --rule"):
        parse_rule(spec, 5)


def test_an_injector_rule_goes_on_a_router_and_starts_no_iptables() -> None:
    from reachtest.lab.plan import build_plan
    from reachtest.lab.scenarios import AppInjector, with_extra_rules

    rule = parse_rule("r2:sni-inject:x.example", 5)
    assert isinstance(rule, AppInjector) and rule.pattern == "x.example"
    plan = build_plan("tx", with_extra_rules(scenario("clean", 5), ("r2:sni-inject:x.example",)))
    assert all(not node.iptables for node in plan.nodes)
    with pytest.raises(UsageError, match="an injector goes on a router"):
        parse_rule("server:sni-inject:x.example", 5)
    dns = parse_rule("r2:qname-inject:x.example", 5)
    assert isinstance(dns, AppInjector) and (dns.protocol, dns.port) == ("udp", 53)
    page = parse_rule("r2:host-inject:x.example", 5)
    assert isinstance(page, AppInjector) and (page.forges, page.pattern) == (
        "page",
        "Host: x.example",
    )


def test_the_page_injector_answers_in_the_servers_name_with_the_next_sequence_numbers() -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from reachtest.lab.inject import BLOCK_PAGE, forged_page

    request = b"GET / HTTP/1.1\r\nHost: x.example\r\n\r\n"
    ip = IP(src="198.18.1.1", dst="198.18.6.2")
    frame = bytes(
        Ether() / ip / TCP(sport=40000, dport=80, seq=1000, ack=5000, flags="PA") / request
    )
    found = forged_page(frame, 80, b"Host: x.example")
    assert found is not None
    packet = IP(found[1])
    segment = packet[TCP]
    assert (packet.src, packet.dst, segment.sport, segment.dport) == (ip.dst, ip.src, 80, 40000)
    assert (segment.seq, segment.ack, str(segment.flags)) == (5000, 1000 + len(request), "FPA")
    assert bytes(segment.payload) == BLOCK_PAGE
    claimed = segment.chksum
    del packet[TCP].chksum
    assert IP(bytes(packet))[TCP].chksum == claimed
    assert forged_page(frame, 80, b"Host: y.example") is None


def test_the_dns_injector_forges_an_answer_to_the_query_only() -> None:
    """A query for the watched name (any case) gets an answer from the server's address
    and port with a right UDP checksum and the forged address; other names, answers and
    other ports get nothing."""
    from scapy.layers.dns import DNS
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from reachtest.lab.inject import FORGED_V4, FORGED_V6, forged_dns
    from reachtest.packet.requests import dns_query

    for ip, qtype, forged in (
        (IP(src="198.18.1.1", dst="198.18.6.2"), "A", FORGED_V4),
        (IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:6::2"), "AAAA", FORGED_V6),
    ):
        frame = bytes(Ether() / ip / UDP(sport=40000, dport=53) / dns_query("X.Example", qtype, 7))
        found = forged_dns(frame, 53, b"x.example")
        assert found is not None
        packet = (IP if qtype == "A" else IPv6)(found[1])
        assert (packet.src, packet.dst) == (ip.dst, ip.src)
        udp = packet[UDP]
        claimed = udp.chksum
        del udp.chksum
        assert (IP if qtype == "A" else IPv6)(bytes(packet))[UDP].chksum == claimed
        assert (udp.sport, udp.dport) == (53, 40000)
        answer = DNS(bytes(udp.payload))
        assert answer.id == 7 and answer.qr == 1 and answer.an[0].rdata == forged
        assert forged_dns(frame, 5353, b"x.example") is None
        assert forged_dns(frame, 53, b"y.example") is None
        reply = bytes(Ether() / ip / UDP(sport=40000, dport=53) / bytes(answer))
        assert forged_dns(reply, 53, b"x.example") is None  # an answer is not a query
