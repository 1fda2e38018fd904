"""The TOML configuration: a good file becomes targets with flows and expectations, and
every kind of mistake is one line naming the file, the line and the key (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reachtest.cli import main
from reachtest.model import ICMP_FLOW, tcp, udp
from reachtest.schedule.config import ConfigError, key_path, load_config, locate, parse_config

GOOD = """\
history = "reachtest.sqlite"
prometheus = "reachtest.prom"

[defaults]
rounds = 3
interval = 0.2
services = ["tcp/443"]
labels = { team = "net" }

[[target]]
host = "server"
services = ["tcp/443", "tcp/3389", "udp/53"]
expect = { icmp = "reachable", "tcp/443" = "open", "tcp/3389" = "filtered", "udp/53" = "open" }
labels = { site = "dc1" }

[[target]]
host = "198.18.6.2"
name = "server-v4"
icmp = false
policy = "always"
expect = { "tcp/22" = "blocked" }
"""


def test_a_good_file_gives_targets_with_defaults_applied() -> None:
    config = parse_config(GOOD, "good.toml")
    first, second = config.targets
    assert first.name == first.host == "server"
    assert first.flows == (ICMP_FLOW, tcp(443), tcp(3389), udp(53))
    assert dict(first.expect) == {
        "icmp": "reachable", "tcp/443": "open", "tcp/3389": "filtered", "udp/53": "open",
    }  # fmt: skip
    assert (first.rounds, first.interval_s, first.policy) == (3, 0.2, "on-change")
    assert dict(first.labels) == {"team": "net", "site": "dc1"}
    # no icmp; the defaults' services, plus the flow an expectation names
    assert second.flows == (tcp(443), tcp(22)) and second.policy == "always"
    assert second.name == "server-v4" and dict(second.expect) == {"tcp/22": "blocked"}
    assert str(config.history) == "reachtest.sqlite" and config.reports is None


def with_line(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("change", "line", "key", "words"),
    [
        (("rounds = 3", "round = 3"), 5, "defaults.round", "unknown key"),
        (('name = "server-v4"', 'nmae = "server-v4"'), 18, "target[2].nmae", "unknown key"),
        (('"tcp/3389",', '"tcp/99999",'), 12, "target[1].services", "99999"),
        (('"udp/53" = "open" }', '"udp/53" = "opne" }'), 13, 'target[1].expect."udp/53"',
         "'opne' is not an expectation"),
        (('icmp = "reachable"', 'icmp = "open"'), 13, "target[1].expect.icmp",
         "reachable, unreachable"),
        (('policy = "always"', 'policy = "sometimes"'), 20, "target[2].policy", "not a policy"),
        (("interval = 0.2", "interval = -1"), 6, "defaults.interval", "out of range"),
        (("rounds = 3", 'rounds = "3"'), 5, "defaults.rounds", "must be an integer"),
        (('name = "server-v4"', 'name = "server"'), 18, "target[2].name", "used twice"),
        (("history = ", "histroy = "), 1, "histroy", "unknown key"),
        (('"tcp/443" = "open",', '"tcp/443" = "open", https = "closed",'), 13,
         "target[1].expect.https", "a second expectation for tcp/443"),
        (('name = "server-v4"', 'name = ""'), 18, "target[2].name", "cannot name a target"),
        (('name = "server-v4"', 'name = "../etc"'), 18, "target[2].name", "cannot name"),
        (('name = "server-v4"', 'name = "a/b"'), 18, "target[2].name", "cannot name"),
        (('name = "server-v4"', 'name = "a\\nb"'), 18, "target[2].name", "'a\\nb' cannot"),
        (('name = "server-v4"', 'name = ".hidden"'), 18, "target[2].name", "cannot name"),
        (('host = "server"', 'host = "server x"'), 11, "target[1].host", "not a host name"),
        (('labels = { site = "dc1" }', 'labels = { target = "x" }'), 14,
         "target[1].labels.target", "reachtest sets the label target itself"),
        (('labels = { site = "dc1" }', 'labels = { __x = "x" }'), 14,
         "target[1].labels.__x", "not __"),
        (('labels = { site = "dc1" }', 'labels = { site = "a\\u001b[2J" }'), 14,
         "target[1].labels.site", "control character"),
        (("interval = 0.2", "interval = nan"), 6, "defaults.interval", "nan is out of range"),
        (("interval = 0.2", "interval = inf"), 6, "defaults.interval", "inf is out of range"),
        (("rounds = 3", "rounds = 99999999999999999999"), 5, "defaults.rounds", "out of range"),
    ],
)  # fmt: skip
def test_each_mistake_names_file_line_and_key(
    change: tuple[str, str], line: int, key: str, words: str
) -> None:
    text = with_line(GOOD, *change)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bad.toml")
    message = str(caught.value)
    assert message.startswith(f"bad.toml:{line}: {key}: "), message
    assert words in message and "\n" not in message


def test_broken_toml_names_its_line() -> None:
    with pytest.raises(ConfigError, match=r"^bad.toml:3: not valid TOML: "):
        parse_config('a = 1\n\n[[target]\nhost = "x"\n', "bad.toml")


def test_no_target_is_an_error_that_says_what_to_add() -> None:
    with pytest.raises(ConfigError, match=r"no target: add one or more \[\[target\]\]"):
        parse_config("[defaults]\nrounds = 2\n", "empty.toml")


def test_locate_finds_keys_in_tables_inline_tables_and_quotes() -> None:
    assert locate(GOOD, ["target", 0, "expect", "tcp/3389"]) == 13
    assert locate(GOOD, ["target", 1, "policy"]) == 20
    assert locate(GOOD, ["defaults", "labels", "team"]) == 8
    assert locate(GOOD, ["prometheus"]) == 2
    assert key_path(["target", 0, "expect", "tcp/443"]) == 'target[1].expect."tcp/443"'


def test_config_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    assert main(["config", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK, 2 targets" in out and "expects icmp reachable, tcp/443 open" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(with_line(GOOD, '"udp/53" = "open" }', '"udp/53" = "opne" }'))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:13: target[1].expect" in err
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: no such file" in capsys.readouterr().err
    assert load_config(good).targets[0].host == "server"


@pytest.mark.parametrize("text", ['[target]\nhost = "x"\n', 'target = "x"\n', "target = 1\n"])
def test_a_target_that_is_no_array_of_tables_is_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^t.toml:1: target: must be an array of tables"):
        parse_config(text, "t.toml")


def test_a_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes("\ufeff".encode() + GOOD.encode())
    assert [t.name for t in load_config(path).targets] == ["server", "server-v4"]


def test_config_check_verifies_the_paths_run_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.toml"
    (tmp_path / "a-file").write_text("x")
    cases = [
        ('reports = "a-file"\n', "site.toml: reports", "not a directory"),
        ('prometheus = "no/such/dir/x.prom"\n', "(", "no directory"),
        ('history = "site.toml"\n', "site.toml: history", "it is the configuration itself"),
        ('history = "."\n', "site.toml: history", "it is a directory"),
        ('prometheus = "site.toml"\n', "prometheus", "it is the configuration"),
    ]
    for top, where, words in cases:
        config.write_text(top + '[[target]]\nhost = "198.18.0.1"\n')
        before = config.read_bytes()
        assert main(["config", "check", str(config)]) == 2, top
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and where in err and words in err, (top, err)
        assert config.read_bytes() == before
    config.write_text('reports = "new/reports"\nprometheus = "x.prom"\n[[target]]\nhost = "h"\n')
    assert main(["config", "check", str(config)]) == 0  # a folder run will make is fine
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("first", "second", "why"),
    [
        ("198.18.0.1", "198.18.0.1", "is the host of target '198.18.0.1' too"),
        ("2001:db8::1", "2001:0db8:0:0::1", "is the host of target '2001:db8::1' too"),
        ("web.example", "WEB.example.", "is the host of target 'web.example' too"),
        ("web.example", "\uff57\uff45\uff42.example", "is the host of target 'web.example' too"),
    ],
)
def test_two_targets_for_one_host_are_refused_with_both_names(
    first: str, second: str, why: str
) -> None:
    """Two spellings of one host (case, root dot, fullwidth letters, address forms) were
    accepted, and every run with a history then ended in exit 4 (issue)."""
    text = f'[[target]]\nhost = "{first}"\n\n[[target]]\nhost = "{second}"\nname = "b"\n'
    with pytest.raises(ConfigError, match=r"t\.toml:5: target\[2\]\.host: ") as caught:
        parse_config(text, "t.toml")
    assert why in str(caught.value) and "one target" in str(caught.value)


def test_a_name_that_mixes_scripts_is_refused_naming_the_odd_letter() -> None:
    text = '[[target]]\nhost = "p\u0430ypal.example"\n'  # a Cyrillic a
    with pytest.raises(ConfigError, match="mixes Latin and Cyrillic") as caught:
        parse_config(text, "t.toml")
    assert "CYRILLIC SMALL LETTER A" in str(caught.value)
    assert parse_config('[[target]]\nhost = "\u043f\u0440\u0438\u043c\u0435\u0440.example"\n')


def test_fullwidth_forms_are_read_as_the_plain_letters() -> None:
    config = parse_config('[[target]]\nhost = "\uff57\uff45\uff42.example"\n')
    assert config.targets[0].host == "web.example" and config.targets[0].name == "web.example"


def test_request_flows_take_their_names_and_bring_the_syn_flow() -> None:
    config = parse_config(
        '[[target]]\nhost = "web.example"\nservices = ["tls/443", "http/8080"]\n'
        'expect = { "tls/443" = "open", "http/8080" = "blocked" }\n'
        'sni = "blocked.example"\ncontrol_name = "fine.example"\n'
    )
    (t,) = config.targets
    assert t.requests == (("tls", 443), ("http", 8080))
    assert t.request_names == {"tls": "blocked.example", "http": "blocked.example"}
    assert t.control_name == "fine.example" and tcp(443) in t.flows and tcp(8080) in t.flows
    assert t.labels_of_flows[-2:] == ("tls/443", "http/8080")
    assert t.expect == {"tls/443": "open", "http/8080": "blocked"}
    plain = parse_config('[[target]]\nhost = "web.example"\nservices = ["tls/443"]\n')
    assert plain.targets[0].request_names == {"tls": "web.example"}  # the host by default


def test_a_dns_flow_takes_its_qname_and_qtype_and_brings_the_udp_flow() -> None:
    config = parse_config(
        '[defaults]\nqtype = "aaaa"\n[[target]]\nhost = "198.18.6.2"\nservices = ["dns/53"]\n'
        'qname = "blocked.example"\n'
    )
    (t,) = config.targets
    assert t.requests == (("dns", 53),) and t.request_names == {"dns": "blocked.example"}
    assert t.query_type == "AAAA" and udp(53) in t.flows and tcp(53) not in t.flows


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('host = "198.18.0.1"\nservices = ["tls/443"]', "give the name to ask for"),
        ('host = "a.example"\nservices = ["tls/443"]\nsni = "a b"', "sni: 'a b'"),
        ('host = "a.example"\nexpect = { "tls/443" = "filtered" }', "'filtered' is not an"),
        ('host = "a.example"\nservices = ["tls/0"]', "1 to 65535"),
        ('host = "a.example"\nservices = ["tls/443"]\ncontrol_name = "a.example"', "control"),
        ('host = "198.18.0.1"\nservices = ["dns/53"]', "(--qname NAME, or qname in a"),
        ('host = "a.example"\nservices = ["dns/53"]\nqtype = "ANY"', "not a query type"),
        ('host = "a.example"\nservices = ["dns/53"]\nqtype = 1', "qtype"),
        ('host = "a.example"\nservices = ["dns/53"]\nqname = "a\\u0000b"', "qname"),
    ],
)
def test_request_flow_mistakes_name_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=r"t\.toml:") as caught:
        parse_config(f"[[target]]\n{text}\n", "t.toml")
    assert words in str(caught.value), caught.value


def test_an_exporter_module_asks_for_the_scraped_name_unless_it_sets_one() -> None:
    from reachtest.errors import UsageError
    from reachtest.serve.config import parse_exporter_config

    config = parse_exporter_config(
        '[exporter]\nallow = ["198.18.0.0/15"]\n[module.web]\nservices = ["tls/443", "dns/53"]\n'
        'qname = "blocked.example"\nqtype = "AAAA"\n'
    )
    web = config.modules["web"]
    assert web.target.query_type == "AAAA" and udp(53) in web.target.flows
    assert web.request_names("shop.example") == {"tls": "shop.example", "dns": "blocked.example"}
    with pytest.raises(UsageError, match="give the name to ask for \\(--sni"):
        web.request_names("198.18.0.1")
    with pytest.raises(UsageError, match=r"the control name 'example\.com' is the name tested"):
        web.request_names("example.com")


@pytest.mark.parametrize(("value", "mtu"), [("true", 0), ("false", None), ("1400", 1400)])
def test_mtu_is_measured_or_expected(value: str, mtu: int | None) -> None:
    config = parse_config(f'[defaults]\nmtu = {value}\n[[target]]\nhost = "a.example"\n')
    assert config.targets[0].mtu == mtu


@pytest.mark.parametrize("value", ["0", "70000", '"1400"', "1400.5"])
def test_a_bad_mtu_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"t\.toml:3: .*mtu") as caught:
        parse_config(f'[[target]]\nhost = "a.example"\nmtu = {value}\n', "t.toml")
    assert "68 to 65535" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "mda"), [("true", 0.95), ("false", None), ("99", 0.99), ("97.5", 0.975)]
)
def test_mda_is_asked_with_a_confidence(value: str, mda: float | None) -> None:
    config = parse_config(f'[defaults]\nmda = {value}\n[[target]]\nhost = "a.example"\n')
    assert config.targets[0].mda == mda


@pytest.mark.parametrize("value", ["0", "100", '"yes"', "49"])
def test_a_bad_mda_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"t\.toml:3: .*mda") as caught:
        parse_config(f'[[target]]\nhost = "a.example"\nmda = {value}\n', "t.toml")
    assert "50 to 99.9" in str(caught.value)
