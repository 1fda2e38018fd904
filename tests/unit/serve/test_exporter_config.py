"""The exporter's configuration: modules, the allow-list, one-line errors with lines."""

from __future__ import annotations

import ipaddress

import pytest

from reachtest.model import ICMP_FLOW, tcp, udp
from reachtest.schedule.config import ConfigError
from reachtest.serve.config import parse_exporter_config

GOOD = """\
[exporter]
allow = ["198.18.0.0/15", "2001:db8::/32"]
targets = ["Server.Example.NET."]
labels = { site = "dc1" }
concurrency = 2

[module.web]
services = ["tcp/443", "tcp/80"]
expect = { "tcp/443" = "open", "tcp/80" = "open" }
mode = "trace"
rounds = 3

[module.dns]
services = "udp/53"
icmp = false
mode = "check"
"""


def test_a_configuration_gives_modules_with_their_flows_and_the_allow_list() -> None:
    config = parse_exporter_config(GOOD)
    assert config.allow == (
        ipaddress.ip_network("198.18.0.0/15"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert config.targets == ("server.example.net",)
    assert config.labels == {"site": "dc1"}
    assert (config.concurrency, config.queue) == (2, 16)
    web, dns = config.modules["web"], config.modules["dns"]
    assert web.mode == "trace" and web.target.rounds == 3
    assert web.target.flows == (ICMP_FLOW, tcp(443), tcp(80))
    assert web.target.expect == {"tcp/443": "open", "tcp/80": "open"}
    assert dns.mode == "check" and dns.target.flows == (udp(53),)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('mode = "trace"', 'mode = "traec"'), ":10: module.web.mode: 'traec' is not a mode"),
        (("rounds = 3", "rounds = 5000"), ":11: module.web.rounds: 5000 is too many"),
        (("rounds = 3", "round = 3"), ":11: module.web.round: unknown key"),
        (('"tcp/443" = "open",', '"tcp/443" = "opne",'), ':9: module.web.expect."tcp/443"'),
        (('allow = ["198.18.0.0/15"', 'allow = ["198.18.0.0/33"'), ":2: exporter.allow: "),
        (('labels = { site = "dc1" }', 'labels = { vantage = "x" }'), ":4: exporter.labels."),
        (("concurrency = 2", "concurrency = 0"), ":5: exporter.concurrency: must be"),
        (("[module.dns]", '[module."d n s"]'), ":13: module.\"d n s\": 'd n s' cannot name"),
    ],
)
def test_a_mistake_is_one_line_naming_the_line_and_key(edit: tuple[str, str], message: str) -> None:
    text = GOOD.replace(*edit, 1)
    assert text != GOOD
    with pytest.raises(ConfigError) as caught:
        parse_exporter_config(text, "exporter.toml")
    assert str(caught.value).startswith("exporter.toml"), caught.value
    assert message in str(caught.value), caught.value
    assert "\n" not in str(caught.value)


def test_an_exporter_that_may_probe_nothing_is_refused() -> None:
    text = GOOD.replace('allow = ["198.18.0.0/15", "2001:db8::/32"]\n', "").replace(
        'targets = ["Server.Example.NET."]\n', ""
    )
    with pytest.raises(ConfigError, match="nothing may be probed"):
        parse_exporter_config(text, "x.toml")


def test_no_module_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"no module: add one or more \[module.NAME\]"):
        parse_exporter_config('[exporter]\nallow = ["198.18.0.0/15"]\n', "x.toml")
