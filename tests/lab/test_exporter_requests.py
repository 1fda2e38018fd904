"""The exporter probes request flows (issue 26): a module with tls/443 and dns/53 asks
for its names after the handshake (DNS: a query) as `trace` does, and the series say
what the SYN-level flow cannot: tcp/443 is open while tls/443 is blocked after the
handshake at the box's hop. Scraped over HTTP inside the lab's client namespace, the
exporter run as root (raw sockets) and with ordinary sockets (--unprivileged)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from reachtest.lab import netns
from reachtest.schedule import metrics
from tests.lab.conftest import Lab, MakeLab, reachtest_cmd
from tests.lab.test_exporter_prometheus import started

PORT = 19470
FlowValue = Callable[..., float]
CONFIG = """\
[exporter]
allow = ["198.18.0.0/15", "2001:db8::/32"]

[module.web]
services = ["tls/443", "dns/53"]
sni = "blocked.example"
qname = "allowed.example"
control_name = "example.com"
expect = {{ "tls/443" = "open", "tcp/443" = "open" }}
rounds = 2
interval = 0.1
timeout = 1.0
max_ttl = {max_ttl}

[module.bare]
services = ["tls/443"]
"""


def scrape(client: str, path: str) -> tuple[int, str]:
    """GET ``path`` from the exporter inside ``client`` (status, body), waiting for it."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with netns.entered(client):
                answer = urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=30)
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def exporter_argv(lab: Lab, config: Path, *, unprivileged: bool = True) -> list[str]:
    """The exporter with ``config``, run in the lab's client namespace on PORT."""
    return [
        "ip", "netns", "exec", lab.client, *reachtest_cmd(), "exporter", "--config",
        str(config), "--listen", f"127.0.0.1:{PORT}",
        *(["--unprivileged"] if unprivileged else []),
    ]  # fmt: skip


def flow_series(got: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]) -> FlowValue:
    """A lookup of a flow's series in parsed metrics: ``value(name, "tcp/443", **labels)``."""

    def value(name: str, flow: str, **labels: str) -> float:
        protocol, _, port = flow.partition("/")
        keys = {"flow": flow, "protocol": protocol, "port": port, **labels}
        return got[(name, tuple(sorted(keys.items())))]

    return value


@pytest.mark.parametrize("unprivileged", [False, True], ids=["raw", "unprivileged"])
def test_the_exporter_says_where_the_request_is_blocked(
    make_lab: MakeLab, tmp_path: Path, unprivileged: bool
) -> None:
    lab = make_lab("tls-sni-reset")
    truth = lab.plan.scenario.truth
    (request,) = truth.requests
    config = tmp_path / "exporter.toml"
    config.write_text(CONFIG.format(max_ttl=truth.server_hop + 2))
    argv = exporter_argv(lab, config, unprivileged=unprivileged)
    with started(argv, tmp_path / "exporter.log"):
        status, body = scrape(lab.client, f"/probe?target={lab.server()}&module=web")
        assert status == 200, body + (tmp_path / "exporter.log").read_text()[-1500:]
        got = metrics.parse(body)
        value = flow_series(got)

        assert got[("probe_success", ())] == 0  # tls/443 is expected open
        assert value("reachtest_flow_state", "tcp/443", state="open") == 1  # the SYN passes
        assert value("reachtest_flow_state", "tls/443", state="blocked-after-handshake") == 1
        assert value("reachtest_flow_state", "tls/443", state="open") == 0
        assert value("reachtest_expectation_met", "tcp/443", expected="open") == 1
        assert value("reachtest_expectation_met", "tls/443", expected="open") == 0
        assert value("reachtest_stop_hop", "tls/443") == request.hop
        assert value("reachtest_flow_state", "dns/53", state="open") == 1  # answered
        assert value("reachtest_flow_success", "dns/53") == 1
        # A module without names, scraped by address: nothing to ask for, one line, 400.
        status, body = scrape(lab.client, f"/probe?target={lab.server()}&module=bare")
        assert status == 400 and "give the name to ask for" in body, body
