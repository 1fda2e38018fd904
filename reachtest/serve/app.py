"""The exporter's HTTP application (WSGI): ``/probe``, ``/metrics``, ``/``.

Served by cheroot (see ``cli/exporter.py``); this module parses no HTTP itself, only the
query string (urllib) and one header. What it guarantees:

- only allowed targets are probed: listed names, or addresses inside the allowed
  prefixes; anything else is refused (403) before a packet is sent;
- one probe per target at a time: a second scrape of a target waits for the first
  (two probes at once would share, and spend, the routers' ICMP budget);
- at most ``concurrency`` probes at once and ``queue`` waiting; beyond that 503 with a
  body that says why, so Prometheus records a failed scrape rather than a false 0;
- every probe ends within the scrape's timeout (``X-Prometheus-Scrape-Timeout-Seconds``
  less an offset), marked partial when the deadline cut it short.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from reachtest.errors import ReachtestError
from reachtest.serve.probe import (
    ProbeResult,
    Stopper,
    TransportFactory,
    exposition,
    failed,
    run_probe,
)
from reachtest.spec import resolve_target

if TYPE_CHECKING:
    from reachtest.serve.config import ExporterConfig

log = logging.getLogger("reachtest.exporter")

#: Without the scrape-timeout header (a person with curl), a probe takes at most this.
DEFAULT_BUDGET_S = 30.0
#: Prometheus' header is never trusted beyond this.
MAX_BUDGET_S = 300.0
#: Kept back from the scrape's timeout for the network and Prometheus (blackbox_exporter's
#: default offset).
TIMEOUT_OFFSET_S = 0.5
#: The index page lists this many recent probes, whose records are kept for it.
RECENT = 20
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Resolver = Callable[[str, "int | None"], str]


class Refused(Exception):
    """A request answered with an HTTP error and a one-line body."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class _Recent:
    number: int
    result: ProbeResult


class Exporter:
    """The WSGI application of ``reachtest exporter``."""

    def __init__(
        self,
        config: ExporterConfig,
        make_transport: TransportFactory,
        *,
        vantage: str | None = None,
        transport_name: str = "raw",
        resolve: Resolver = resolve_target,
        timeout_offset_s: float = TIMEOUT_OFFSET_S,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.process_collector import ProcessCollector

        self.config = config
        self.make_transport = make_transport
        self.transport_name = transport_name
        self.resolve = resolve
        self.timeout_offset_s = timeout_offset_s
        self.labels = dict(config.labels)
        if vantage:
            self.labels["vantage"] = vantage
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._waiting = 0
        self._targets: dict[str, tuple[threading.Lock, int]] = {}  # address -> lock, users
        self._recent: deque[_Recent] = deque(maxlen=RECENT)
        self._numbers = 0
        self._stopper = Stopper()
        reg = self.registry = CollectorRegistry()
        ProcessCollector(registry=reg)
        self.m_probes = Counter(
            "reachtest_exporter_probes", "Probes run, by module and result",
            ["module", "result"], registry=reg,
        )  # fmt: skip
        self.m_refused = Counter(
            "reachtest_exporter_refused", "Probe requests refused, by reason",
            ["reason"], registry=reg,
        )  # fmt: skip
        self.m_duration = Histogram(
            "reachtest_exporter_probe_duration_seconds", "Seconds per probe, by module",
            ["module"], registry=reg, buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.m_in_flight = Gauge(
            "reachtest_exporter_probes_in_flight", "Probes running now", registry=reg
        )
        self.m_queued = Gauge(
            "reachtest_exporter_probes_queued", "Probes waiting for a free slot", registry=reg
        )

    def stop(self) -> None:
        """Stop taking work: waiting probes are refused (503) and running ones asked to
        stop at their next wake-up (within 0.2 s; their scrape gets what they found)."""
        self._stopper.stop()

    def _acquire(self, lock: Any, deadline: float) -> bool:
        """``lock`` within the scrape's deadline, in short steps so a stop is seen."""
        while not self._stopper.stopped:
            left = deadline - time.monotonic() - 0.2
            if lock.acquire(timeout=max(0.0, min(0.2, left))):
                return True
            if left <= 0.2:
                return False
        raise Refused("503 Service Unavailable", "the exporter is stopping")

    # -- WSGI -------------------------------------------------------------------------

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        try:
            if method not in ("GET", "HEAD"):
                raise Refused("405 Method Not Allowed", f"{method} is not served: use GET")
            if path == "/probe":
                body, ctype = self.probe(environ)
            elif path == "/metrics":
                body, ctype = self.own_metrics(environ)
            elif path == "/":
                body, ctype = self.index().encode(), "text/html; charset=utf-8"
            elif path.startswith("/report/"):
                body, ctype = self.report(path.removeprefix("/report/"))
            else:
                raise Refused("404 Not Found", "not found: try /probe?target=HOST&module=NAME")
        except Refused as exc:
            return self._refuse(exc, method, start_response)
        except Exception as exc:  # a bug: one line in the log, never a traceback to a client
            log.error("%s %s failed: %s: %s", method, path[:200], type(exc).__name__, exc)
            return self._refuse(
                Refused("500 Internal Server Error", "internal error (see the exporter's log)"),
                method,
                start_response,
            )
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [b"" if method == "HEAD" else body]

    @staticmethod
    def _refuse(exc: Refused, method: str, start_response: StartResponse) -> list[bytes]:
        if True:
            message = f"{exc}\n".encode()
            start_response(
                exc.status,
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(message))),
                ],
            )
            return [b"" if method == "HEAD" else message]

    # -- /probe -------------------------------------------------------------------------

    def _budget(self, environ: Mapping[str, Any]) -> float:
        raw = environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS")
        if raw is None:
            return DEFAULT_BUDGET_S
        try:
            seconds = float(raw)
        except ValueError:
            raise Refused(
                "400 Bad Request",
                f"X-Prometheus-Scrape-Timeout-Seconds: {raw[:40]!r} is not a number",
            ) from None
        if not seconds > 0:
            raise Refused("400 Bad Request", "X-Prometheus-Scrape-Timeout-Seconds must be > 0")
        return min(MAX_BUDGET_S, max(0.1, seconds - self.timeout_offset_s))

    def allowed(self, host: str, address: str | None) -> bool:
        """May ``host`` (resolved to ``address``) be probed? Listed by name or address,
        or an address inside an allowed prefix."""
        if host.lower().rstrip(".") in self.config.targets:
            return True
        if address is None:
            return False
        if address in self.config.targets:
            return True
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.config.allow)

    def probe(self, environ: Mapping[str, Any]) -> tuple[bytes, str]:
        began = time.monotonic()
        try:
            query = parse_qs(
                environ.get("QUERY_STRING", ""), max_num_fields=10, strict_parsing=False
            )
        except ValueError as exc:
            self.m_refused.labels("bad-request").inc()
            raise Refused("400 Bad Request", f"malformed query: {str(exc)[:80]}") from None
        target = (query.get("target") or [""])[0].strip()
        if not target.isprintable() or len(target) > 255:
            self.m_refused.labels("bad-request").inc()
            raise Refused(
                "400 Bad Request", "target: a host name or address (printable, 255 at most)"
            )
        if not target:
            self.m_refused.labels("bad-request").inc()
            raise Refused(
                "400 Bad Request", "target parameter is missing: /probe?target=HOST&module=NAME"
            )
        modules = self.config.modules
        name = (query.get("module") or [""])[0]
        if not name and len(modules) == 1:
            name = next(iter(modules))
        module = modules.get(name)
        if module is None:
            self.m_refused.labels("bad-request").inc()
            what = f"unknown module {name[:64]!r}" if name else "module parameter is missing"
            raise Refused("400 Bad Request", f"{what} (known: {', '.join(modules)})")
        if module.target.requests:  # the names its request flows ask for: 400 if none
            try:
                names = module.request_names(target)
            except ReachtestError as exc:
                self.m_refused.labels("bad-request").inc()
                raise Refused("400 Bad Request", f"module {module.name}: {exc}") from None
            module = replace(module, target=replace(module.target, request_names=names))
        budget = self._budget(environ)
        deadline = began + budget
        shown = target[:253]
        literal = _literal(target)
        if literal is None and not self.allowed(target, None) and not self.config.allow:
            self.m_refused.labels("forbidden").inc()
            raise Refused(
                "403 Forbidden", f"target {shown!r} is not allowed by the exporter's config"
            )
        try:
            address = literal or self.resolve(target, module.target.family)
        except ReachtestError as exc:
            result = failed(name, target, str(exc), self.labels, began)
            self.m_probes.labels(name, "unresolved").inc()
            return exposition(result, _openmetrics(environ))
        if not self.allowed(target, address):
            self.m_refused.labels("forbidden").inc()
            raise Refused(
                "403 Forbidden",
                f"target {shown!r} ({address}) is not allowed by the exporter's config "
                "([exporter] allow and targets)",
            )
        result = self._run(module, target, address, deadline)
        self.m_duration.labels(name).observe(result.duration_s)
        self.m_probes.labels(name, "success" if result.success else "failure").inc()
        with self._lock:
            self._numbers += 1
            self._recent.append(_Recent(self._numbers, result))
        return exposition(result, _openmetrics(environ))

    def _run(self, module: Any, target: str, address: str, deadline: float) -> ProbeResult:
        with self._lock:
            if self._waiting >= self.config.queue:
                self.m_refused.labels("busy").inc()
                raise Refused(
                    "503 Service Unavailable",
                    f"too busy: {self.config.concurrency} probes running and "
                    f"{self._waiting} waiting (raise [exporter] concurrency or queue, or "
                    "scrape less often)",
                )
            self._waiting += 1
            self.m_queued.set(self._waiting)
            lock, users = self._targets.get(address, (threading.Lock(), 0))
            self._targets[address] = (lock, users + 1)
        got_target = got_slot = False
        try:
            try:
                got_target = self._acquire(lock, deadline)
                if got_target:
                    got_slot = self._acquire(self._slots, deadline)
            finally:
                with self._lock:
                    self._waiting -= 1
                    self.m_queued.set(self._waiting)
            if not got_target:
                self.m_refused.labels("target-busy").inc()
                raise Refused(
                    "503 Service Unavailable",
                    f"another probe of {address} ran past this scrape's timeout (one probe "
                    "per target at a time: they would share the routers' ICMP budget)",
                )
            if not got_slot:
                self.m_refused.labels("busy").inc()
                raise Refused(
                    "503 Service Unavailable",
                    f"no free probe slot within the scrape's timeout ({self.config.concurrency}"
                    " probes at once: raise [exporter] concurrency, or scrape less often)",
                )
            self.m_in_flight.inc()
            try:
                return run_probe(
                    module, target, address, self.make_transport,
                    budget_s=max(0.05, deadline - time.monotonic()), labels=self.labels,
                    transport_name=self.transport_name, stopper=self._stopper,
                )  # fmt: skip
            except ReachtestError as exc:
                self.m_probes.labels(module.name, "error").inc()
                log.error("probe of %s with %s failed: %s", address, module.name, exc)
                raise Refused("500 Internal Server Error", f"the probe failed: {exc}") from None
            finally:
                self.m_in_flight.dec()
        finally:
            if got_slot:
                self._slots.release()
            if got_target:
                lock.release()
            with self._lock:
                lock, users = self._targets[address]
                if users <= 1:
                    del self._targets[address]
                else:
                    self._targets[address] = (lock, users - 1)

    # -- /metrics, /, /report ----------------------------------------------------------

    def own_metrics(self, environ: Mapping[str, Any]) -> tuple[bytes, str]:
        if _openmetrics(environ):
            from prometheus_client.openmetrics import exposition as om

            return om.generate_latest(self.registry), om.CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
        from prometheus_client import exposition as text

        return text.generate_latest(self.registry), text.CONTENT_TYPE_LATEST

    def index(self) -> str:
        """A small page: the modules, the last probes, links to their reports."""
        e = html.escape
        rows = []
        with self._lock:
            recent = list(self._recent)
        for item in reversed(recent):
            r = item.result
            verdicts = ", ".join(f"{j.flow} {j.got}" for j in r.judged) or (r.error or "")
            link = (
                f'<a href="report/{item.number}">report</a> '
                f'<a href="report/{item.number}.json">json</a>'
                if r.record is not None
                else ""
            )
            rows.append(
                f"<tr><td>{e(r.started.strftime('%Y-%m-%d %H:%M:%S'))}</td><td>{e(r.module)}</td>"
                f"<td>{e(r.host)}</td><td>{e(r.address or '')}</td>"
                f"<td>{'ok' if r.success else 'FAILED'}{' (partial)' if r.partial else ''}</td>"
                f"<td>{e(verdicts)}</td><td>{r.duration_s:.2f} s</td><td>{link}</td></tr>"
            )
        modules = "".join(
            f"<tr><td>{e(m.name)}</td><td>{e(m.mode)}</td>"
            f"<td>{e(', '.join(f.label for f in m.target.flows))}</td>"
            f"<td>{e(', '.join(f'{k} {v}' for k, v in m.target.expect.items()))}</td>"
            f"<td>{m.target.rounds}</td></tr>"
            for m in self.config.modules.values()
        )
        vantage = self.labels.get("vantage")
        title = "reachtest exporter" + (f" at {vantage}" if vantage else "")
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{e(title)}</title><style>body{{font-family:sans-serif}}"
            "td,th{padding:2px 8px;text-align:left}</style></head><body>"
            f"<h1>{e(title)}</h1><p><a href='metrics'>metrics</a> · probe with "
            "<code>/probe?target=HOST&amp;module=NAME</code></p>"
            "<h2>Modules</h2><table><tr><th>module</th><th>mode</th><th>flows</th>"
            f"<th>expects</th><th>rounds</th></tr>{modules}</table>"
            "<h2>Recent probes</h2><table><tr><th>started (UTC)</th><th>module</th>"
            "<th>target</th><th>address</th><th>result</th><th>flows</th><th>took</th>"
            f"<th></th></tr>{''.join(rows)}</table></body></html>"
        )

    def report(self, name: str) -> tuple[bytes, str]:
        number, _, suffix = name.partition(".")
        with self._lock:
            found = next((r for r in self._recent if str(r.number) == number), None)
        if found is None or found.result.record is None or suffix not in ("", "json"):
            raise Refused("404 Not Found", "no such probe (only the last probes are kept)")
        record = found.result.record
        if suffix == "json":
            import json

            return json.dumps(record, indent=1).encode(), "application/json"
        from reachtest.report.html import render_html
        from reachtest.report.view import build_view

        return render_html(build_view(record)).encode(), "text/html; charset=utf-8"


def _literal(target: str) -> str | None:
    try:
        return str(ipaddress.ip_address(target.strip("[]")))
    except ValueError:
        return None


def _openmetrics(environ: Mapping[str, Any]) -> bool:
    return "application/openmetrics-text" in environ.get("HTTP_ACCEPT", "")
