"""Who owns each hop (-z): Team Cymru's TXT zones asked with dnspython against a real DNS
server on loopback answering the lab's owners (both families, the AS name asked once per
AS, a silent server bounded by its timeout), the answers' formats, and the local
prefix-to-AS file (longest prefix, CAIDA's columns, one-line errors)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reachtest.asn import AsLookup, PrefixFile, origin_name, parse_name, parse_origin
from reachtest.errors import UsageError
from reachtest.lab.plan import build_plan
from reachtest.lab.scenarios import scenario
from reachtest.lab.services import Zone
from tests.unit.test_names import LoopbackDns

PLAN = build_plan("x", scenario("ecmp", 5))


def test_origin_names_are_built_as_mtr_and_cymru_build_them() -> None:
    assert origin_name("198.51.100.7") == "7.100.51.198.origin.asn.cymru.com"
    v6 = origin_name("2001:db8::1")
    assert v6.endswith(".8.b.d.0.1.0.0.2.origin6.asn.cymru.com")
    assert v6.startswith("1.0.0.0.") and len(v6.split(".")) == 32 + 4


def test_answers_are_read_as_cymru_writes_them() -> None:
    assert parse_origin("64500 | 198.51.100.0/24 | ZZ | arin | 2001-01-01") == (
        64500,
        "198.51.100.0/24",
    )
    assert parse_origin("64500 64501 | 198.51.100.0/24 | ZZ | arin |") == (64500, "198.51.100.0/24")
    assert parse_origin("not an answer") is None
    assert parse_name("64500 | ZZ | arin | 2001-01-01 | EXAMPLE - Example Net, ZZ") == (
        "EXAMPLE - Example Net, ZZ"
    )
    assert parse_name("64500 | ZZ") is None


def test_every_lab_node_owns_its_addresses_as_its_own_as() -> None:
    owners = PLAN.owners()
    by_node = {n.name: n for n in PLAN.topology.nodes}
    assert {"r3a", "r3b"} <= set(by_node)
    asns = {owners[a][0] for a in PLAN.names()["r3a"]}
    assert len(asns) == 1 and asns != {owners[a][0] for a in PLAN.names()["r3b"]}
    assert all(64496 <= asn <= 64511 or 65536 <= asn <= 65551 for asn, _, _ in owners.values())


@pytest.fixture
def lab_dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns(Zone({}, PLAN.as_zone()))
    try:
        yield server
    finally:
        server.close()


def test_owners_of_both_families_from_the_labs_dns(lab_dns: LoopbackDns) -> None:
    truth = PLAN.owners()
    addresses = [*PLAN.names()["r3a"][:2], *PLAN.names()["server"][:2]]
    lookup = AsLookup(nameservers=["127.0.0.1"], port=lab_dns.port, timeout_s=1.0)
    try:
        for address in [*addresses, *addresses, "192.0.2.1"]:
            lookup.submit(address)
        found = lookup.settle()
    finally:
        lookup.close()
    assert set(found) == set(addresses)  # 192.0.2.1 is in no zone: no owner
    for address in addresses:
        asn, prefix, name = truth[address]
        owner = found[address]
        assert (owner.asn, owner.prefix, owner.name, owner.source) == (asn, prefix, name, "dns")
        assert owner.words() == f"AS{asn} {name.split(' - ')[0]}" and " - " in name
    # Each address asked once (five origin queries), each AS's name once (two ASes).
    assert lab_dns.queries == 5 + 2


def test_a_silent_server_costs_at_most_two_timeouts() -> None:
    server = LoopbackDns(Zone({}, PLAN.as_zone()), answer=False)
    lookup = AsLookup(nameservers=["127.0.0.1"], port=server.port, timeout_s=0.3)
    try:
        started = time.monotonic()
        lookup.submit("198.18.1.2")
        assert lookup.owners() == {}
        found = lookup.settle()
        waited = time.monotonic() - started
    finally:
        lookup.close()
        server.close()
    assert found == {} and waited < 1.5


def test_a_prefix_file_answers_without_dns(tmp_path: Path) -> None:
    table = tmp_path / "pfx2as.txt"
    table.write_text(
        "# prefix AS name\n"
        "198.18.0.0/15 64500 Lab-wide\n"
        "198.18.3.0/24 AS64503 Router three  # more specific\n"
        "2001:db8::\t32\t64510\n"  # CAIDA's columns
        "\n"
    )
    lookup = AsLookup(prefix_file=PrefixFile.load(table), nameservers=["127.0.0.1"], port=9)
    try:
        for address in ("198.18.3.2", "198.18.4.2", "2001:db8:0:3::2", "192.0.2.1"):
            lookup.submit(address)
        found = lookup.settle(0.1)
    finally:
        lookup.close()
    assert {a: (o.asn, o.prefix, o.name, o.source) for a, o in found.items()} == {
        "198.18.3.2": (64503, "198.18.3.0/24", "Router three", "file"),
        "198.18.4.2": (64500, "198.18.0.0/15", "Lab-wide", "file"),
        "2001:db8:0:3::2": (64510, "2001:db8::/32", None, "file"),
    }


@pytest.mark.parametrize(
    ("line", "words"),
    [("198.18.0.0/15", "line 1: want 'PREFIX ASN [NAME]'"), ("198.18.0.0/15 ASX", "line 1"),
     ("300.1.1.0/24 64500", "line 1"), ("198.18.0.0/15 99999999999", "out of range")],
)  # fmt: skip
def test_a_bad_prefix_file_is_a_one_line_error(tmp_path: Path, line: str, words: str) -> None:
    table = tmp_path / "bad.txt"
    table.write_text(line + "\n")
    with pytest.raises(UsageError) as caught:
        PrefixFile.load(table)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="cannot read it"):
        PrefixFile.load(tmp_path / "missing.txt")
