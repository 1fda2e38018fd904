"""The Prometheus textfile of a scheduled run, for node_exporter's textfile collector.

Rendered with prometheus_client; the CLI writes it with reachtest's one writer (a
temporary file renamed into place, so node_exporter never reads half a file, and removed
on every exit path, signals included). The names and labels are documented in docs/runs.md,
with an example alert rule. Each target's ``labels`` from the configuration are added to
every series of that target (a target without one of them gets it empty, which
Prometheus reads as absent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from reachtest.schedule.run import Batch, Judged

FLOW_LABELS = ("target", "protocol", "port")
#: Label names reachtest sets itself: a configuration's labels may not take them.
OWN_LABELS = (*FLOW_LABELS, "expected")


def _flow(j: Judged, extra: Sequence[str]) -> tuple[str, ...]:
    protocol, _, port = j.flow.partition("/")
    return j.target, protocol, port, *(j.labels.get(k, "") for k in extra)


def stop_hop(j: Judged) -> int:
    """``reachtest_stop_hop`` of a traced flow: the hop of ``analysis.where``, the one
    every report names (0 when it gets through or no hop answers it)."""
    return j.stopped.metric_hop if j.stopped is not None else 0


def registry(batch: Batch) -> CollectorRegistry:
    """Every metric of ``batch`` in a registry of its own."""
    from prometheus_client import CollectorRegistry, Gauge

    from reachtest.schedule.run import MTU_FLOW

    reg = CollectorRegistry()
    extra = sorted({k for j in batch.judged for k in j.labels})

    def gauge(name: str, doc: str, labels: Sequence[str] = FLOW_LABELS) -> Gauge:
        return Gauge(name, doc, [*labels, *extra], registry=reg)

    success = gauge("probe_success", "1 when the flow reached the target (TCP/UDP: open)")
    met = gauge(
        "reachtest_expectation_met",
        "1 when the flow is as the configuration expects, 0 when not",
        (*FLOW_LABELS, "expected"),
    )
    hops = gauge("reachtest_target_hops", "Hops to the target (from the last full trace)")
    blocked = gauge(
        "reachtest_stop_hop",
        "The hop where the flow stops, as every report names it: the last router that"
        " answers it (routers answer TTL expiry before their filters: the router that"
        " drops or rejects it), the box answering in the target's name, or the target"
        " (closed); 0 when it gets through or no hop answers it",
    )
    loss = gauge("reachtest_loss_ratio", "Share of probes lost at the flow's final TTL (0..1)")
    duration = gauge(
        "probe_duration_seconds", "Seconds spent checking (and tracing) the target", ["target"]
    )
    traced = gauge("reachtest_traced", "1 when the target got a full trace in this run", ["target"])
    resolved = gauge(
        "reachtest_resolved",
        "1 when the target's name resolved; 0: nothing was sent (its flows are unresolved)",
        ["target"],
    )
    last = Gauge(
        "reachtest_last_run_timestamp_seconds", "When the run finished (Unix time)", registry=reg
    )
    path_mtu = gauge(
        "reachtest_path_mtu_bytes",
        "The largest packet (IP header included) that reached the target on this flow (mtu)",
    )
    black_hole = gauge(
        "reachtest_pmtu_black_hole",
        "1 when bigger packets of this flow die without a frag-needed / packet-too-big (mtu)",
    )
    for j in batch.judged:
        labels = _flow(j, extra)
        if j.flow == MTU_FLOW:  # an expectation on every flow's path MTU, not a flow
            if j.expected is not None:
                met.labels(*labels[:3], j.expected, *labels[3:]).set(1 if j.met else 0)
            continue
        if j.path_mtu is not None:
            path_mtu.labels(*labels).set(j.path_mtu)
            black_hole.labels(*labels).set(1 if j.black_hole else 0)
        through = j.got in ("open", "reachable")
        success.labels(*labels).set(1 if through else 0)
        if j.expected is not None:
            met.labels(*labels[:3], j.expected, *labels[3:]).set(1 if j.met else 0)
        if j.distance is not None:
            hops.labels(*labels).set(j.distance)
        if j.traced:
            blocked.labels(*labels).set(0 if through else stop_hop(j))
        if j.loss_ratio is not None:
            loss.labels(*labels).set(j.loss_ratio)
    names = {j.target: [j.labels.get(k, "") for k in extra] for j in batch.judged}
    for name, more in names.items():
        duration.labels(name, *more).set(round(batch.durations_s.get(name, 0.0), 6))
        traced.labels(name, *more).set(1 if name in batch.traced else 0)
        resolved.labels(name, *more).set(0 if name in batch.unresolved else 1)
    last.set(batch.finished.timestamp())
    return reg


def render(batch: Batch) -> str:
    """The textfile's content (the exposition format)."""
    from prometheus_client import generate_latest

    return generate_latest(registry(batch)).decode()


def parse(text: str) -> Mapping[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(metric name, sorted labels) -> value of an exposition text (prometheus_client's
    own parser), for tests and for `reachtest` users checking a file."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
