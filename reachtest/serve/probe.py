"""One probe of the exporter: a module run against one target within a deadline, and
the metrics of what it found.

The engine is the one ``trace`` and ``run`` use; a scrape's deadline stops it early (what
was answered so far is analysed and the probe is marked partial). The metrics are built
from the run record, as ``run``'s textfile is, through a collector of their own per probe
(no global state: a probe's series are exactly what it found).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reachtest.analysis.stats import loss_pct
from reachtest.model import TraceParams
from reachtest.schedule.metrics import stop_hop
from reachtest.schedule.run import CHECK_TTL, MTU_FLOW, Judged, judge, trace_target_requests

if TYPE_CHECKING:
    from reachtest.engine.transport import Transport
    from reachtest.model import FlowSpec
    from reachtest.report.record import Record
    from reachtest.serve.config import Module

#: Makes the transport of one probe, given its target and flows.
TransportFactory = Callable[[str, "Sequence[FlowSpec]"], "Transport"]
#: Time kept back from a scrape's deadline for analysis and the answer.
ANSWER_MARGIN_S = 0.2
SERVICE_STATES = ("open", "closed", "filtered", "open|filtered", "partially-filtered")
HOST_STATES = ("reachable", "unreachable")
#: A request flow's states (tls/443, dns/53): ``open`` when the request is answered.
REQUEST_STATES = ("open", "blocked-after-handshake", "no-handshake")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """What one probe found, as metrics and as a run record."""

    module: str
    host: str  # as Prometheus gave it
    address: str | None  # None: not resolved
    record: Record | None
    judged: tuple[Judged, ...]
    success: bool
    partial: bool
    duration_s: float
    error: str | None = None  # why nothing was probed
    labels: Mapping[str, str] = field(default_factory=dict)  # vantage and configured labels
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


def params_for(module: Module, budget_s: float | None) -> tuple[TraceParams, float | None]:
    """The engine's settings for ``module`` and, with a time budget, when (seconds from
    now) to stop it so that every probe in flight is answered or timed out within it."""
    t = module.target
    timeout = t.timeout_s
    stop_after = None
    if budget_s is not None:  # a run that ends sooner never sees its stop
        timeout = max(0.05, min(timeout, budget_s * 0.4))
        stop_after = max(0.0, budget_s - timeout - ANSWER_MARGIN_S)
    if module.mode == "check":
        params = TraceParams(
            first_ttl=CHECK_TTL,
            max_ttl=CHECK_TTL,
            rounds=t.rounds,
            interval_s=t.interval_s,
            timeout_s=timeout,
            gap_limit=1,
        )
    else:
        params = TraceParams(
            max_ttl=t.max_ttl, rounds=t.rounds, interval_s=t.interval_s, timeout_s=timeout
        )
    return params, stop_after


class Stopper:
    """The probes running now, to stop them all at once (the exporter's SIGTERM): each
    stops at its tracer's next wake-up; one that starts after ``stop`` stops at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracers: set[Any] = set()
        self.stopped = False

    def add(self, tracer: Any) -> None:
        with self._lock:
            self._tracers.add(tracer)
            if self.stopped:
                tracer.stop()

    def discard(self, tracer: Any) -> None:
        with self._lock:
            self._tracers.discard(tracer)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for tracer in self._tracers:
                tracer.stop()


def run_probe(
    module: Module,
    host: str,
    address: str,
    make_transport: TransportFactory,
    *,
    budget_s: float | None,
    labels: Mapping[str, str],
    transport_name: str = "raw",
    stopper: Stopper | None = None,
) -> ProbeResult:
    """Probe ``address`` (``host`` as asked) with ``module`` within ``budget_s`` seconds;
    ``stopper`` can stop it early (the exporter stopping)."""
    from reachtest.analysis.analyse import analyse
    from reachtest.engine.tracer import Tracer
    from reachtest.report.record import RunMeta, build_record

    began = time.monotonic()
    started = datetime.now(UTC)
    flows = list(module.target.flows)
    params, stop_after = params_for(module, budget_s)
    transport = make_transport(address, flows)
    try:
        tracer = Tracer(transport, [address], flows, params)
        if stopper is not None:
            stopper.add(tracer)
        try:
            result = tracer.run(stop_at=None if stop_after is None else began + stop_after)
        finally:
            if stopper is not None:
                stopper.discard(tracer)
    finally:
        transport.close()
    meta = RunMeta(
        command=("reachtest", "exporter", f"module={module.name}"),
        started=started,
        finished=datetime.now(UTC),
        hosts={address: host},
        dns=False,
        transport=transport_name,
    )
    analysis = analyse(result.outcomes, result.params, result.budgets)
    record = build_record(result, analysis, meta)
    target = record["targets"][0] if record["targets"] else None
    traced = module.mode == "trace"
    config = module.target
    if config.requests and target is not None and not (stopper and stopper.stopped):
        # The requests after the handshake: TTL by TTL up to the target (trace), or end
        # to end (check), within what is left of the scrape.
        last = min(target["distance"] or config.max_ttl, config.max_ttl)
        left = None if budget_s is None else budget_s - (time.monotonic() - began)
        trace_target_requests(
            config, target, range(1, last + 1) if traced else [CHECK_TTL],
            raw=transport_name == "raw",
            timeout_s=None if left is None else max(0.05, (left - ANSWER_MARGIN_S) / 2),
        )  # fmt: skip
    if config.mtu is not None and target is not None and not (stopper and stopper.stopped):
        from reachtest.session import measure_mtu

        left = None if budget_s is None else budget_s - (time.monotonic() - began)
        measure_mtu(target, config.timeout_s if left is None else max(0.05, min(
            config.timeout_s, (left - ANSWER_MARGIN_S) / 4)))  # fmt: skip
    if config.mda is not None and target is not None and not (stopper and stopper.stopped):
        from reachtest.session import measure_branches

        # Within what is left of the scrape: no wave starts after it (not settled, said).
        stop_at = None if budget_s is None else began + budget_s - ANSWER_MARGIN_S
        measure_branches(
            target, confidence=config.mda, timeout_s=min(config.timeout_s, 1.0), stop_at=stop_at
        )
    judged = tuple(judge(config, target, address, traced))
    return ProbeResult(
        module=module.name,
        host=host,
        address=address,
        record=record,
        judged=judged,
        success=success(config.expect, judged),
        partial=bool(result.interrupted),
        duration_s=time.monotonic() - began,
        labels=labels,
        started=started,
    )


def success(expect: Mapping[str, str], judged: Sequence[Judged]) -> bool:
    """Every expectation met; without expectations, every flow answered (a service
    open, closed or open|filtered says the host answered; the host reachable)."""
    if not judged:
        return False
    if expect:
        return all(j.met is not False for j in judged)
    return all(j.got not in ("filtered", "unreachable", "unresolved") for j in judged)


def failed(
    module: str, host: str, error: str, labels: Mapping[str, str], began: float
) -> ProbeResult:
    """A probe that sent nothing (its target did not resolve): probe_success 0."""
    return ProbeResult(
        module=module,
        host=host,
        address=None,
        record=None,
        judged=(),
        success=False,
        partial=False,
        duration_s=time.monotonic() - began,
        error=error,
        labels=labels,
    )


def path_hash(flow: Mapping[str, Any]) -> str:
    """12 hex digits naming the flow's path: its most frequent responder at each hop up
    to where it stops ('*' for a silent hop). The same routers give the same hash."""
    hops = []
    stop = (flow.get("path") or {}).get("stop_hop")
    for hop in flow.get("hops", []):
        if stop is not None and hop["ttl"] > stop:
            break
        responders = hop.get("responders") or []
        hops.append(responders[0]["address"] if responders else "*")
    while hops and hops[-1] == "*":
        hops.pop()
    return hashlib.sha256(" ".join(hops).encode()).hexdigest()[:12]


class ProbeCollector:
    """The series of one probe, for prometheus_client's exposition."""

    def __init__(self, result: ProbeResult) -> None:
        self.result = result

    def describe(self) -> list[Any]:
        return []  # no metadata up front: the registry need not collect to register it

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        r = self.result
        extra = sorted(r.labels)
        more = [r.labels[k] for k in extra]

        def family(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*labels, *extra])

        flow_labels = ("flow", "protocol", "port")
        success_ = family(
            "probe_success",
            "1 when every expectation of the module holds "
            "(without expectations: every flow answered)",
        )
        success_.add_metric(more, 1 if r.success else 0)
        duration = family("probe_duration_seconds", "Seconds the probe took")
        duration.add_metric(more, round(r.duration_s, 6))
        partial = family(
            "reachtest_probe_partial",
            "1 when the scrape's timeout stopped the probe before every round was sent",
        )
        partial.add_metric(more, 1 if r.partial else 0)
        resolved = family("reachtest_probe_resolved", "1 when the target resolved to an address")
        resolved.add_metric(more, 0 if r.address is None else 1)
        out: list[Any] = [success_, duration, partial, resolved]
        if r.record is None:
            yield from out
            return
        flow_ok = family(
            "reachtest_flow_success",
            "1 when the flow got through (open; host reachable)",
            flow_labels,
        )
        state = family(
            "reachtest_flow_state",
            "1 for the flow's state, 0 for the others (one-hot)",
            (*flow_labels, "state"),
        )
        met = family(
            "reachtest_expectation_met",
            "1 when the flow is as the module expects, 0 when not",
            (*flow_labels, "expected"),
        )
        blocked = family(
            "reachtest_stop_hop",
            "The hop where the flow stops, as every report names it: the last router that"
            " answers it (routers answer TTL expiry before their filters: the router that"
            " drops or rejects it), the box answering in the target's name, or the target"
            " (closed); 0 when it gets through or no hop answers it (trace mode)",
            flow_labels,
        )
        out += [flow_ok, state, met, blocked]
        path_mtu = family(
            "reachtest_path_mtu_bytes",
            "The largest packet (IP header included) that reached the target on this flow",
            flow_labels,
        )
        black_hole = family(
            "reachtest_pmtu_black_hole",
            "1 when bigger packets of this flow die without a frag-needed / packet-too-big",
            flow_labels,
        )
        measured = False
        for j in r.judged:
            protocol, _, port = j.flow.partition("/")
            labels = [j.flow, protocol, port]
            if j.flow == MTU_FLOW:  # the module's mtu expectation, not a flow
                if j.expected is not None:
                    met.add_metric([*labels, j.expected, *more], 1 if j.met else 0)
                continue
            if j.path_mtu is not None:
                path_mtu.add_metric([*labels, *more], j.path_mtu)
                black_hole.add_metric([*labels, *more], 1 if j.black_hole else 0)
                measured = True
            through = j.got in ("open", "reachable")
            flow_ok.add_metric([*labels, *more], 1 if through else 0)
            words = {"icmp": HOST_STATES, "tcp": SERVICE_STATES, "udp": SERVICE_STATES}
            for word in words.get(protocol, REQUEST_STATES):
                state.add_metric([*labels, word, *more], 1 if j.got == word else 0)
            if j.expected is not None:
                met.add_metric([*labels, j.expected, *more], 1 if j.met else 0)
            if j.traced:
                blocked.add_metric([*labels, *more], 0 if through else stop_hop(j))
        if measured:
            out += [path_mtu, black_hole]
        target = r.record["targets"][0] if r.record["targets"] else None
        sent = family("reachtest_probe_packets_sent", "Probes sent")
        sent.add_metric(more, r.record["totals"]["sent"])
        out.append(sent)
        if target is not None and target.get("distance") is not None:
            hops = family("reachtest_target_hops", "Hops to the target")
            hops.add_metric(more, target["distance"])
            out.append(hops)
        if target is not None and any(j.traced for j in r.judged):
            limited = family(
                "reachtest_rate_limited_hops",
                "Routers on the path seen rate-limiting their ICMP errors",
            )
            limited.add_metric(more, sum(1 for b in r.record["budgets"] if b["limited"]))
            loss = family(
                "reachtest_hop_loss_ratio",
                "Share of the flow's probes at this TTL lost (non-answers a router's ICMP "
                "rate limit explains left out)",
                (*flow_labels, "ttl"),
            )
            rtt = family(
                "reachtest_hop_rtt_seconds",
                "Mean round trip of the flow's answers at this TTL",
                (*flow_labels, "ttl"),
            )
            info = InfoMetricFamily(
                "reachtest_path",
                "The flow's path: a hash of the routers it crosses",
                labels=[*flow_labels, *extra],
            )
            for flow in target["flows"]:
                labels = [flow["flow"], flow["protocol"], str(flow["port"] or "")]
                for hop in flow["hops"]:
                    at = [*labels, str(hop["ttl"]), *more]
                    if hop["snt"]:
                        loss.add_metric(
                            at, round(loss_pct(hop["snt"], hop["rcv"], hop["limited"]) / 100, 4)
                        )
                    if hop["avg_ms"] is not None:
                        rtt.add_metric(at, hop["avg_ms"] / 1000)
                info.add_metric([*labels, *more], {"path": path_hash(flow)})
            out += [limited, loss, rtt, info]
        yield from out


def exposition(result: ProbeResult, openmetrics: bool) -> tuple[bytes, str]:
    """The probe's series as Prometheus text (or OpenMetrics), with its content type."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeCollector(result))
    if openmetrics:
        from prometheus_client.openmetrics import exposition as om

        return om.generate_latest(registry), om.CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
    from prometheus_client import exposition as text

    return text.generate_latest(registry), text.CONTENT_TYPE_LATEST
