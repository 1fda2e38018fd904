"""The exporter over real HTTP (cheroot on loopback), probing a simulated network: what
Prometheus reads, what it is refused, and how concurrent scrapes are kept apart."""

from __future__ import annotations

import base64
import itertools
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import pytest

from reachtest.engine.simulated import SimHop, SimPath, SimulatedNetwork
from reachtest.errors import UsageError
from reachtest.model import FlowSpec
from reachtest.schedule.metrics import parse
from reachtest.serve.app import Exporter
from reachtest.serve.config import parse_exporter_config
from reachtest.serve.http import make_server
from reachtest.serve.webconfig import BasicAuth

SERVER = "198.18.6.2"
OTHER = "198.18.7.2"
OUTSIDE = "203.0.113.9"
CONFIG = """\
[exporter]
allow = ["198.18.0.0/15"]
targets = ["listed.example"]
labels = { site = "dc1" }
concurrency = {concurrency}
queue = {queue}

[module.web]
services = ["tcp/443", "tcp/80"]
expect = { "tcp/443" = "open", "tcp/80" = "open" }
rounds = 3
interval = 0.1
timeout = 0.5
max_ttl = 8

[module.quick]
services = ["tcp/80"]
mode = "check"
rounds = 2
"""


def path(target: str) -> SimPath:
    """Five routers; the fourth answers tcp/443 at TTL 4 but forwards none of it (a
    silent drop past hop 4); tcp/80 open at the target."""
    hops = tuple(
        SimHop(address=f"198.18.{i}.2", drop=frozenset({"tcp/443"}) if i == 4 else frozenset())
        for i in range(1, 6)
    )
    return SimPath(target=target, hops=hops, open=frozenset({"icmp", "tcp/80", "tcp/443"}))


class Slow:
    """A simulated network that takes real time per receive (so probes overlap)."""

    def __init__(self, net: SimulatedNetwork, pause_s: float) -> None:
        self.net, self.pause_s = net, pause_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.net, name)

    def receive(self, timeout_s: float) -> Any:
        time.sleep(self.pause_s)
        return self.net.receive(timeout_s)


@dataclass
class Factory:
    pause_s: float = 0.0
    made: list[str] = field(default_factory=list)
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, address: str, flows: Sequence[FlowSpec]) -> Any:
        factory = self
        began = time.monotonic()
        self.made.append(address)
        net = SimulatedNetwork(paths=(path(address),))
        inner = Slow(net, self.pause_s) if self.pause_s else net

        class Closing:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def close(self) -> None:
                with factory.lock:
                    factory.spans.append((address, began, time.monotonic()))

        return Closing()


def resolve(name: str, family: int | None) -> str:
    known = {"listed.example": "192.0.2.10", "server": SERVER, "<b>evil</b>": SERVER}
    if name not in known:
        raise UsageError(f"unknown host {name!r}")
    return known[name]


@contextmanager
def serving(app: Any) -> Iterator[str]:
    server, watchdog = make_server(("127.0.0.1", 0), app, threads=12)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.bind_addr[1]}"
    finally:
        server.stop()
        thread.join(5)
        watchdog.close()


def exporter(factory: Factory, concurrency: int = 4, queue: int = 16, **kw: Any) -> Exporter:
    text = CONFIG.replace("{concurrency}", str(concurrency)).replace("{queue}", str(queue))
    config = parse_exporter_config(text)
    return Exporter(config, factory, vantage="site-a", resolve=resolve, **kw)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def value(text: str, name: str, **labels: str) -> float:
    found = [
        v for (n, ls), v in parse(text).items() if n == name and labels.items() <= dict(ls).items()
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_a_probe_says_which_service_is_blocked_and_where() -> None:
    factory = Factory()
    with serving(exporter(factory)) as base:
        status, ctype, text = get(f"{base}/probe?target={SERVER}&module=web")
    assert status == 200 and ctype.startswith("text/plain"), text
    assert value(text, "probe_success", vantage="site-a", site="dc1") == 0
    assert value(text, "reachtest_flow_success", flow="tcp/443") == 0
    assert value(text, "reachtest_flow_success", flow="tcp/80") == 1
    assert value(text, "reachtest_flow_state", flow="tcp/443", state="filtered") == 1
    assert value(text, "reachtest_flow_state", flow="tcp/443", state="open") == 0
    assert value(text, "reachtest_expectation_met", flow="tcp/443", expected="open") == 0
    # router 4 answers, nothing past it: it stops at hop 4, as every report says
    assert value(text, "reachtest_stop_hop", flow="tcp/443") == 4
    assert value(text, "reachtest_stop_hop", flow="tcp/80") == 0
    assert value(text, "reachtest_target_hops") == 6
    assert value(text, "reachtest_hop_loss_ratio", flow="tcp/80", ttl="2") == 0
    assert value(text, "reachtest_hop_loss_ratio", flow="tcp/443", ttl="4") == 0
    assert value(text, "reachtest_hop_loss_ratio", flow="tcp/443", ttl="5") == 1
    assert value(text, "reachtest_hop_rtt_seconds", flow="tcp/80", ttl="6") > 0
    assert value(text, "reachtest_probe_partial") == 0
    paths = {dict(ls)["flow"]: dict(ls)["path"] for (n, ls), _ in parse(text).items()
             if n == "reachtest_path_info"}  # fmt: skip
    assert paths["icmp"] == paths["tcp/80"] != paths["tcp/443"]  # 443 stops at hop 4
    assert factory.made == [SERVER]


def test_a_module_without_a_failing_expectation_succeeds_in_check_mode() -> None:
    with serving(exporter(Factory())) as base:
        _, _, text = get(f"{base}/probe?target={SERVER}&module=quick")
    assert value(text, "probe_success") == 1
    assert value(text, "reachtest_flow_success", flow="tcp/80") == 1
    assert not [n for (n, _), _ in parse(text).items() if n.startswith("reachtest_hop_loss")]


def test_targets_outside_the_allow_list_get_403_and_no_probe() -> None:
    factory = Factory()
    with serving(exporter(factory)) as base:
        outside = get(f"{base}/probe?target={OUTSIDE}&module=web")
        named = get(f"{base}/probe?target=listed.example&module=web")  # 192.0.2.10, listed
        unknown = get(f"{base}/probe?target=nowhere.example&module=web")
    assert outside[0] == 403 and "not allowed" in outside[2]
    assert named[0] == 200  # listed by name: probed though outside the prefixes
    assert unknown[0] == 200 and value(unknown[2], "reachtest_probe_resolved") == 0
    assert value(unknown[2], "probe_success") == 0
    assert factory.made == ["192.0.2.10"]


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("/probe?module=web", 400, "target parameter is missing"),
        (f"/probe?target={SERVER}&module=nope", 400, "unknown module 'nope' (known: web, quick)"),
        ("/nowhere", 404, "not found"),
    ],
)
def test_bad_requests_are_refused_with_a_one_line_reason(
    query: str, status: int, words: str
) -> None:
    factory = Factory()
    with serving(exporter(factory)) as base:
        got = get(base + query)
    assert got[0] == status and words in got[2] and got[2].count("\n") == 1
    assert factory.made == []


def test_openmetrics_when_asked() -> None:
    with serving(exporter(Factory())) as base:
        status, ctype, text = get(
            f"{base}/probe?target={SERVER}&module=quick",
            {"Accept": "application/openmetrics-text; version=1.0.0"},
        )
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")


def test_two_scrapes_of_one_target_never_probe_at_once() -> None:
    factory = Factory(pause_s=0.01)
    results: list[int] = []
    with serving(exporter(factory)) as base:
        threads = [
            threading.Thread(
                target=lambda t=t: results.append(get(f"{base}/probe?target={t}&module=web")[0])
            )
            for t in (SERVER, SERVER, SERVER, OTHER)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [200] * 4
    same = sorted((a, b) for t, a, b in factory.spans if t == SERVER)
    assert len(same) == 3
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(same))
    other = next((a, b) for t, a, b in factory.spans if t == OTHER)
    assert any(a < other[1] and other[0] < b for a, b in same), "other targets run alongside"


def test_a_full_queue_answers_503_with_a_reason() -> None:
    factory = Factory(pause_s=0.02)
    results: list[tuple[int, str, str]] = []
    targets = [f"198.18.{i}.9" for i in range(10, 14)]
    with serving(exporter(factory, concurrency=1, queue=1)) as base:
        threads = [
            threading.Thread(
                target=lambda t=t: results.append(get(f"{base}/probe?target={t}&module=web"))
            )
            for t in targets
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        _, _, own = get(f"{base}/metrics")
    busy = [r for r in results if r[0] == 503]
    assert busy and all("too busy" in r[2] for r in busy)
    assert len([r for r in results if r[0] == 200]) == len(factory.spans) >= 1
    assert value(own, "reachtest_exporter_refused_total", reason="busy") == len(busy)


def test_a_scrape_timeout_bounds_the_probe_and_marks_it_partial() -> None:
    factory = Factory(pause_s=0.05)  # about 0.05 s of real time per engine wake-up
    with serving(exporter(factory)) as base:
        began = time.monotonic()
        status, _, text = get(
            f"{base}/probe?target={SERVER}&module=web",
            {"X-Prometheus-Scrape-Timeout-Seconds": "1.2"},
        )
        took = time.monotonic() - began
    assert status == 200
    assert value(text, "reachtest_probe_partial") == 1
    assert took < 1.2, took


def test_the_index_page_lists_recent_probes_escaped() -> None:
    with serving(exporter(Factory())) as base:
        get(f"{base}/probe?target=%3Cb%3Eevil%3C/b%3E&module=quick")
        status, ctype, page = get(base + "/")
        report = get(base + "/report/1")
        record = get(base + "/report/1.json")
    assert status == 200 and ctype.startswith("text/html")
    assert "&lt;b&gt;evil&lt;/b&gt;" in page and "<b>evil" not in page
    assert "web" in page and "quick" in page
    assert report[0] == 200 and report[1].startswith("text/html")
    assert record[0] == 200 and '"schema_version"' in record[2]


def test_basic_auth_takes_a_bcrypt_user_and_refuses_the_rest() -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    app = BasicAuth(exporter(Factory()), {"prom": hashed})

    def auth(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    with serving(app) as base:
        none = get(base + "/metrics")
        wrong = get(base + "/metrics", auth("prom", "guess"))
        right = get(base + "/metrics", auth("prom", "s3cret"))
        again = get(base + "/metrics", auth("prom", "s3cret"))
    assert none[0] == wrong[0] == 401
    assert right[0] == again[0] == 200 and "reachtest_exporter_probes_in_flight" in right[2]


def promtool_lint(text: str) -> str:
    """What ``promtool check metrics`` (Prometheus' own lint) says of an exposition."""
    import shutil
    import subprocess

    tool = shutil.which("promtool")
    assert tool, "promtool is missing (Debian package prometheus; scripts/setup installs it)"
    done = subprocess.run(
        [tool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    return (done.stdout + done.stderr).strip() if done.returncode else ""


def test_promtool_finds_nothing_to_lint_in_probe_and_metrics() -> None:
    """issue 31: ``reachtest_hop_count`` ended in ``_count``, reserved for histograms."""
    factory = Factory()
    with serving(exporter(factory)) as base:
        _, _, probe = get(f"{base}/probe?target={SERVER}&module=web")
        _, _, own = get(f"{base}/metrics")
    assert "reachtest_stop_hop" in probe and "reachtest_target_hops" in probe
    assert promtool_lint(probe) == ""
    assert promtool_lint(own) == ""
    assert "_count" in promtool_lint("# TYPE x_count gauge\nx_count 1\n")  # it can fail
