"""The run record: one run's parameters, hop statistics, verdicts and findings as JSON data,
the one canonical form every report is rendered from (schema: ``run-record.schema.json``)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from reachtest import __version__
from reachtest.analysis.stats import MS_COLUMNS
from reachtest.analysis.summary import ECMP_HINT, sentence
from reachtest.errors import UsageError
from reachtest.model import (
    Evidence,
    Finding,
    FlowPath,
    HopBudget,
    HostVerdict,
    Outcome,
    Protocol,
    RunResult,
    ServiceState,
    ServiceVerdict,
)

if TYPE_CHECKING:
    from reachtest.analysis.accumulate import Accumulator, Bucket, HopCell
    from reachtest.analysis.analyse import Analysis, TargetAnalysis

SCHEMA_VERSION = 2
SCHEMA_FILE = "run-record.schema.json"

Record = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunMeta:
    """What the engine does not know: the command line, wall-clock times, the names."""

    command: tuple[str, ...]
    started: datetime
    finished: datetime
    hosts: Mapping[str, str] = field(default_factory=dict)  # address -> what the user typed
    names: Mapping[str, str] = field(default_factory=dict)  # address -> reverse-DNS name
    family: int | None = None
    dns: bool = True
    udp_payload_hex: str = ""
    transport: str = "raw"
    transport_notes: tuple[str, ...] = ()
    #: ``-z``: address -> its owner (``asn.Owner.record()``); None when not asked.
    asns: Mapping[str, Record] | None = None


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _num(value: Any, digits: int = 3) -> float | None:
    """A float for JSON, None for NaN or a missing value."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else round(number, digits)


def flow_fields(label: str) -> dict[str, Any]:
    """``flow, protocol, port`` of a flow label (``tcp/443``)."""
    protocol, _, port = label.partition("/")
    return {"flow": label, "protocol": protocol, "port": int(port) if port else None}


def _verdict(v: ServiceVerdict) -> Record:
    return {
        "state": None if v.state is None else str(v.state),
        "reason": str(v.reason),
        "reason_address": v.reason_address,
        "reason_hop": v.reason_hop,
        "reached": v.reached,
        "rounds": v.rounds,
        "rounds_probed": v.rounds_probed,
    }


def _path(p: FlowPath) -> Record:
    return {
        "distance": p.distance,
        "last_hop": p.last_hop,
        "last_address": p.last_address,
        "stop": str(p.stop),
        "stop_hop": p.stop_hop,
        "stop_address": p.stop_address,
        "icmp_code": p.icmp_code,
    }


def _evidence(e: Evidence) -> Record:
    return {
        "flow": e.flow.label,
        "ttl": e.ttl,
        "kind": str(e.kind),
        "responder": e.responder,
        "count": e.count,
        "of": e.of,
    }


def finding_record(f: Finding) -> Record:
    """A finding as JSON data, with its sentence."""
    return {
        "kind": str(f.kind),
        "severity": str(f.severity),
        "flow": None if f.flow is None else f.flow.label,
        "first_hop": f.first_hop,
        "last_hop": f.last_hop,
        "responder": f.responder,
        "confidence": round(f.confidence, 3),
        "note": f.note,
        "summary": sentence(f),
        "evidence": [_evidence(e) for e in f.evidence],
    }


def _host(h: HostVerdict) -> Record:
    return {
        "reachable": h.reachable,
        "distance": h.distance,
        "reached_by": [f.label for f in h.reached_by],
        "ping_blocked_services_answer": h.ping_blocked_services_answer,
        "ping_answers_services_blocked": h.ping_answers_services_blocked,
    }


def _sample(o: Outcome) -> Record:
    """One probe's outcome as the record keeps it."""
    sample: Record = {
        "round": o.round,
        "kind": str(o.kind),
        "responder": o.responder,
        "rtt_ms": None if o.recv_ns is None else _num((o.recv_ns - o.sent_ns) / 1e6, 4),
    }
    if o.proof:
        sample["proof"] = True
    if o.reply_ttl is not None:
        sample["reply_ttl"] = o.reply_ttl
    translated: Record = {}
    if o.quote_src is not None:
        translated["address"] = o.quote_src
    if o.quote_port is not None:
        translated["port"] = o.quote_port
    if translated:
        sample["translated"] = translated
    if o.mpls:
        sample["mpls"] = [_label((m.label, m.tc, m.bottom, m.ttl)) for m in o.mpls]
    return sample


def _bucket(first_round: int, b: Bucket) -> Record:
    return {
        "round": first_round,
        "snt": b.snt,
        "rcv": b.rcv,
        "avg_ms": _num(b.sum_ms / b.n_rtt) if b.n_rtt else None,
        "best_ms": _num(b.best_ms) if b.n_rtt else None,
        "wrst_ms": _num(b.wrst_ms) if b.n_rtt else None,
    }


def _series(cell: HopCell, bucket_rounds: int) -> list[Record]:
    """The hop's time series: per bucket of rounds, probes sent and answered, RTTs."""
    return [_bucket(index * bucket_rounds, b) for index, b in sorted(cell.series.items())]


def _hops(
    accumulated: Accumulator,
    limited: Mapping[tuple[str, str, int], int],
    detail: bool = True,
) -> dict[tuple[str, str], list[Record]]:
    """(target, flow) -> hop records in TTL order, with the most recent samples and the
    time series (empty without ``detail``); ``limited`` holds the non-answers a router's
    rate limit explains per (target, flow, TTL)."""
    from reachtest.analysis.accumulate import ranked
    from reachtest.analysis.stats import loss_pct

    out: dict[tuple[str, str], list[Record]] = {}
    for key in accumulated.ordered():
        cell = accumulated.cells[key]
        figures = cell.figures()
        out.setdefault(key[:2], []).append(
            {
                "ttl": key[2],
                "snt": cell.snt,
                "rcv": cell.rcv,
                "loss_pct": _num(loss_pct(cell.snt, cell.rcv, limited.get(key, 0)), 2),
                "limited": limited.get(key, 0),
                **{column: _num(figures[column]) for column in MS_COLUMNS},
                "responders": [{"address": a, "count": n} for a, n in ranked(cell.responders)],
                "kinds": [{"kind": k, "count": n} for k, n in ranked(cell.kinds)],
                "icmp": [
                    {"type": t, "code": c, "count": n} for (t, c), n in sorted(cell.icmp.items())
                ],
                "samples": [
                    _sample(o) for o in sorted(cell.samples, key=lambda o: (o.round, o.sent_ns))
                ]
                if detail
                else [],
                "series": _series(cell, accumulated.bucket_rounds) if detail else [],
                **(
                    {
                        "mpls": [
                            {"responder": a, "stack": [_label(m) for m in stack], "count": n}
                            for (a, stack), n in sorted(cell.mpls.items(), key=lambda i: -i[1])
                        ]
                    }
                    if cell.mpls
                    else {}
                ),
            }
        )
    return out


def _label(entry: tuple[int, int, bool, int]) -> Record:
    """One MPLS label stack entry as the record keeps it (RFC 4950 field names)."""
    label, tc, bottom, ttl = entry
    return {"label": int(label), "tc": int(tc), "s": bool(bottom), "ttl": int(ttl)}


def _target(
    t: TargetAnalysis,
    hops: dict[tuple[str, str], list[Record]],
    meta: RunMeta,
    order: dict[str, int],
) -> Record:
    """One target, its flows in the order the user gave them."""
    verdicts = {v.flow.label: v for v in t.services}
    flows = []
    for path in sorted(t.paths, key=lambda p: order.get(p.flow.label, len(order))):
        label = path.flow.label
        flows.append(
            {
                **flow_fields(label),
                "verdict": _verdict(verdicts[label]),
                "path": _path(path),
                "hops": hops.get((t.target, label), []),
            }
        )
    version = 6 if ":" in t.target else 4
    return {
        "host": meta.hosts.get(t.target, t.target),
        "address": t.target,
        "family": version,
        "name": meta.names.get(t.target),
        **_host(t.host),
        "flows": flows,
        "findings": [finding_record(f) for f in t.findings],
    }


def build_record(
    result: RunResult, analysis: Analysis, meta: RunMeta, *, detail: bool = True
) -> Record:
    """The run record of ``result`` (analysed as ``analysis``), JSON-ready. Without
    ``detail`` the hops' samples and series are left empty (what no view shows: the live
    view's frames stay as cheap late in a run as early)."""
    p = result.params
    limited = {
        (t.target, label, ttl): n for t in analysis.targets for (label, ttl), n in t.limited.items()
    }
    accumulated = analysis.accumulated
    hops = _hops(accumulated, limited, detail)
    by_address = {t.target: t for t in analysis.targets}
    order = {f.label: i for i, f in enumerate(result.flows)}
    responders = {
        r["address"] for flows in hops.values() for hop in flows for r in hop["responders"]
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "reachtest", "version": __version__},
        "command": list(meta.command),
        "params": {
            "first_ttl": p.first_ttl,
            "max_ttl": p.max_ttl,
            "rounds": p.rounds,
            "interval_s": p.interval_s,
            "timeout_s": p.timeout_s,
            "rate_pps": p.rate_pps,
            "max_in_flight": p.max_in_flight,
            "gap_limit": p.gap_limit,
            "fast": p.fast,
            "family": meta.family,
            "dns": meta.dns,
            "udp_payload_hex": meta.udp_payload_hex,
            "transport": meta.transport,
            **({"transport_notes": list(meta.transport_notes)} if meta.transport_notes else {}),
        },
        "started": _utc(meta.started),
        "finished": _utc(meta.finished),
        "duration_s": round((result.finished_ns - result.started_ns) / 1e9, 6),
        "interrupted": result.interrupted,
        "rounds_done": accumulated.rounds,
        "samples_per_hop": accumulated.samples_per_hop,
        "series_rounds": accumulated.bucket_rounds,
        "totals": {
            "sent": result.sent,
            "answered": accumulated.answered,
            "duplicate_or_late": len(result.extras) + result.extras_dropped,
            "strays": {reason: n for reason, n in result.stray_counts},
            **({} if result.kernel_dropped is None else {"kernel_dropped": result.kernel_dropped}),
            **({"bad_checksum": result.bad_checksums} if result.bad_checksums else {}),
        },
        "flows": [f.label for f in result.flows],
        "targets": [
            _target(by_address[a], hops, meta, order) if a in by_address else _unprobed(a, meta)
            for a in result.targets
        ],
        "budgets": [_budget(b) for b in result.budgets],
        "names": {
            a: meta.names[a] for a in sorted(responders | set(result.targets)) if a in meta.names
        },
        **(
            {}
            if meta.asns is None
            else {
                "asns": {
                    a: dict(meta.asns[a])
                    for a in sorted(responders | set(result.targets))
                    if a in meta.asns
                }
            }
        ),
    }


def record_addresses(record: Record) -> set[str]:
    """Every address the record names: targets, hops' responders, branch responders."""
    out: set[str] = set()
    for target in record["targets"]:
        out.add(target["address"])
        for flow in target["flows"]:
            out.update(r["address"] for hop in flow["hops"] for r in hop["responders"])
        for entry in target.get("multipath", ()):
            out.update(r["address"] for hop in entry["hops"] for r in hop["responders"])
        out.update(e["responder"] for e in target.get("requests", ()) if e.get("responder"))
    out.discard(None)  # a branch's silent hop has no address
    return out


def add_owners(record: Record, owners: Mapping[str, Any]) -> None:
    """``-z``: the owner of every address the record names (``asn.Owner`` values), and
    each finding about a hop names its AS after the address ("after hop 3 (198.51.100.7,
    AS64499 EXAMPLENET)"; at the end when the sentence does not show the address)."""
    found = {a: owners[a] for a in sorted(record_addresses(record)) if a in owners}
    record["asns"] = {a: o.record() for a, o in found.items()}
    for target in record["targets"]:
        for finding in target["findings"]:
            address = finding.get("responder") or ""
            owner = found.get(address)
            if owner is None or "owner" in finding:
                continue
            finding["owner"] = f"AS{owner.asn}"
            shown = f"({address})"
            if shown in finding["summary"]:
                named = f"({address}, {owner.words()})"
                finding["summary"] = finding["summary"].replace(shown, named, 1)
            else:
                finding["summary"] += f" [{address}: {owner.words()}]"


def _budget(b: HopBudget) -> Record:
    return {
        "address": b.address,
        "limited": b.limited,
        "rate_per_s": b.rate_per_s,
        "burst": b.burst,
        "answered": b.answered,
        "missed": b.missed,
        "held": b.held,
    }


def _unprobed(address: str, meta: RunMeta) -> Record:
    """A target with no outcome yet (a run stopped before its first probe came back)."""
    return {
        "host": meta.hosts.get(address, address),
        "address": address,
        "family": 6 if ":" in address else 4,
        "name": meta.names.get(address),
        "reachable": False,
        "distance": None,
        "reached_by": [],
        "ping_blocked_services_answer": False,
        "ping_answers_services_blocked": False,
        "flows": [],
        "findings": [],
    }


# -- the schema, loading and the verdict a run gives -------------------------------------


def schema() -> dict[str, Any]:
    """The JSON Schema of the run record, shipped in the package."""
    text = resources.files("reachtest.report").joinpath(SCHEMA_FILE).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validate_record(record: Any) -> None:
    """Raise UsageError naming the first place where ``record`` breaks the schema."""
    import jsonschema

    if isinstance(record, dict) and record.get("schema_version") not in (None, SCHEMA_VERSION, 1):
        raise UsageError(
            f"run record schema_version {record.get('schema_version')!r} is not supported "
            f"(this reachtest reads version {SCHEMA_VERSION})"
        )
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(record))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        raise UsageError(f"not a reachtest run record: at {where}: {error.message}")
    from datetime import datetime

    for key in ("started", "finished"):  # the schema's pattern lets 2026-13-45 through
        try:
            datetime.fromisoformat(str(record[key]).replace("Z", "+00:00"))
        except (ValueError, OverflowError):
            raise UsageError(
                f"not a reachtest run record: at {key}: {str(record[key])[:40]!r} is no date"
            ) from None


def load_record(path: str) -> Record:
    """Read and validate a run record (``-`` is standard input)."""
    from reachtest.inputs import MIB, read_text

    return parse_record(read_text(path, "run record", MAX_RECORD_MIB * MIB), repr(path))


#: A run record larger than this is refused (a day-long trace of 30 hops is ~50 MiB).
MAX_RECORD_MIB = 1024


#: No number in a run record is larger: a count or a port or a TTL beyond it is a forgery.
MAX_INT = 2**53


def _no_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which is no number a run record has")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 16 or abs(int(text)) > MAX_INT:
        raise ValueError(f"holds the integer {text[:20]}{'...' if len(text) > 20 else ''}, "
                         "larger than any a run record has")  # fmt: skip
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"holds the number {text[:20]}, beyond what a run record has")
    return value


def parse_record(text: str, source: str) -> Record:
    """A run record from JSON text, validated; errors name ``source``."""
    try:
        record = json.loads(
            text, parse_constant=_no_constant, parse_int=_bounded_int, parse_float=_finite_float
        )
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{source} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # what the three checks raise
        raise UsageError(f"{source}: {exc}") from None
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply to be a run record") from None
    try:
        validate_record(upgrade_record(record))
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None
    loaded: Record = record
    return loaded


def _hops_of(record: dict[str, Any]) -> list[Any]:
    """Every hop entry of a record that may not be one (what can be found of them)."""

    def listed(value: Any, key: str) -> list[Any]:
        inner = value.get(key) if isinstance(value, dict) else None
        return [x for x in inner if isinstance(x, dict)] if isinstance(inner, list) else []

    return [
        hop
        for t in listed(record, "targets")
        for f in listed(t, "flows")
        for hop in listed(f, "hops")
    ]


def upgrade_record(record: Any) -> Any:
    """A record of an older schema version brought to this one, in place (anything else
    is returned as it is, for the schema to judge). Version 1 kept every sample of every
    hop and no time series: its samples stay (``samples_per_hop`` says how many), and
    each hop's series is made from them."""
    if not isinstance(record, dict) or record.get("schema_version") != 1:
        return record
    from reachtest.analysis.accumulate import SERIES_BUCKETS, Bucket

    rounds = record.get("rounds_done")
    width = 1
    while isinstance(rounds, int) and rounds > SERIES_BUCKETS * width:
        width *= 2
    kept = 0
    for hop in _hops_of(record):
        # A hop this cannot read gets no series: the schema then says where and what.
        hop.setdefault("series", [])
        try:
            buckets: dict[int, Bucket] = {}
            for sample in hop["samples"]:
                bucket = buckets.setdefault(int(sample["round"]) // width, Bucket())
                rtt = sample["rtt_ms"]
                bucket.add(None if rtt is None else float(rtt), sample["responder"] is not None)
            hop["series"] = [_bucket(i * width, b) for i, b in sorted(buckets.items())]
            kept = max(kept, len(hop["samples"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    record["schema_version"] = SCHEMA_VERSION
    record["samples_per_hop"] = kept
    record["series_rounds"] = width
    return record


#: Characters JSON leaves raw under ensure_ascii=False that a terminal or editor acts on
#: or shows misleadingly: DEL and C1 controls (CSI among them), line and paragraph
#: separators, bidirectional overrides and isolates, the byte-order mark.
_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def dumps(record: Record) -> str:
    """The record as JSON text (UTF-8, two-space indent, a final newline); every control
    or bidirectional character written as a \\u escape (they occur only in strings)."""
    text = json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def service_ok(flow: Record) -> bool:
    """Is this flow's service reachable? TCP and UDP: open (closed, filtered and
    open|filtered are not). ICMP is no service: the host verdict speaks for it."""
    if flow["protocol"] == str(Protocol.ICMP):
        return True
    return bool(flow["verdict"]["state"] == str(ServiceState.OPEN))


def run_ok(record: Record) -> bool:
    """Did every target answer (by any flow) and every traced service answer open, every
    request traced after the handshake get its answer, and no flow meet a PMTU black
    hole? A flow with no outcome at
    all (a run stopped at once) counts as not answered."""
    wanted = set(record["flows"])
    return all(
        t["reachable"]
        and {f["flow"] for f in t["flows"]} >= wanted
        and all(service_ok(f) for f in t["flows"])
        and all(r["state"] == "answered" for r in t.get("requests", ()))
        and not any(m["black_hole"] for m in t.get("mtu", ()))
        for t in record["targets"]
    )


#: Engine outcomes of a request as the evidence of a finding spells them.
_REQUEST_EVIDENCE = {
    "answered": "request-answered",
    "reset": "tcp-rst",
    "closed": "request-closed",
    "silent": "timeout",
    "time-exceeded": "time-exceeded",
    "no-handshake": "no-handshake",
    "refused": "port-unreachable",
}


def add_requests(
    target: Record,
    flow: str,
    verdict: Any,
    outcomes: Sequence[Any],
    transport: str,
    *,
    query_type: str | None = None,
) -> None:
    """Add to the record's ``target`` what a request traced after the handshake (a DNS
    query) found: an entry in its ``requests`` (the names, the verdict) and a finding
    (critical when blocked) whose evidence is the test name's outcome at every TTL."""
    from reachtest.report.escape import clean

    # Per TTL, the outcome judged (a proof stands over the first try at its TTL).
    test = sorted(
        {o.ttl: o for o in outcomes if o.name == verdict.name}.values(), key=lambda o: o.ttl
    )
    answered = next((o for o in test if o.outcome == "answered"), None)
    excerpt = answered.excerpt[:120].decode("latin-1") if answered is not None else None
    target.setdefault("requests", []).append(
        {
            "flow": flow, "name": verdict.name, "control": verdict.control,
            "state": verdict.state, "reason": verdict.reason, "box_hop": verdict.box_hop,
            "box_address": verdict.box_address, "on_path": verdict.on_path,
            "by_name": verdict.by_name, "distance": verdict.distance, "transport": transport,
            "answer": None if excerpt is None else clean(excerpt),
            **({"query_type": query_type} if query_type is not None else {}),
            "ttls": [
                {"ttl": o.ttl, "outcome": o.outcome, "responder": o.responder,
                 "rtt_ms": o.rtt_ms, "late_answer": o.late_answer, "proof": o.proof}
                for o in test
            ],
        }
    )  # fmt: skip
    blocked = verdict.state != "answered"
    target["findings"].append(
        {
            "kind": "blocked-after-handshake" if blocked else "request-answered",
            "severity": "critical" if blocked else "info",
            "flow": flow,
            "first_hop": verdict.box_hop,
            "last_hop": verdict.box_hop + 1 if verdict.box_hop is not None else None,
            "responder": verdict.box_address,
            # Blocked somewhere not proven: half sure of where (sure of what).
            "confidence": 0.5 if verdict.state == "blocked-after-handshake" and (
                verdict.box_hop is None
            ) else 1.0,
            "note": f"names: {verdict.name} (test), {verdict.control or 'no control'}",
            "summary": verdict.summary(flow),
            "evidence": [
                {"flow": flow, "ttl": o.ttl, "kind": _REQUEST_EVIDENCE[o.outcome],
                 "responder": o.responder, "count": 1, "of": 1}
                for o in test
            ],
        }
    )  # fmt: skip


def add_mtu(target: Record, found: Any, note: str | None = None) -> None:
    """Add to the record's ``target`` one flow's path MTU (``engine.mtu.PathMtu``, or
    None with ``note`` when it was not measured) and, when bigger packets die, a finding:
    a PMTU black hole (critical: nothing tells the sender), or a path MTU below the
    interface's that a router names (a warning: what breaks when that error is
    filtered)."""
    if found is None:
        return
    target.setdefault("mtu", []).append(
        {
            "flow": found.flow, "mtu": found.mtu, "local_mtu": found.local_mtu,
            "limit": found.limit, "named": found.named, "black_hole": found.black_hole,
            "hop": found.hop, "address": found.address, "probes": found.probes, "note": note,
        }
    )  # fmt: skip
    if found.limit is None or found.mtu is None:
        return
    where = (
        f"after hop {found.hop}" + (f" ({found.address})" if found.address else "")
        if found.hop is not None
        else "somewhere on the path"
    )
    mss = found.mtu - (60 if ":" in target["address"] else 40)
    if found.black_hole:
        summary = (
            f"{found.flow}: packets above {found.mtu} bytes die silently {where}, and no"
            f" router says so (no frag-needed / packet-too-big): a PMTU black hole. Small"
            f" packets and handshakes pass, full-size transfers stall. Lower the MTU to"
            f" {found.mtu} or clamp the TCP MSS to {mss} on the link {where}, or let its"
            " ICMP errors through"
        )
    else:
        summary = (
            f"{found.flow}: path MTU {found.mtu} bytes, limited {where} (it says so:"
            f" frag-needed / packet-too-big names {found.mtu}); below this host's"
            f" {found.local_mtu}: where that error is filtered, bigger packets die"
        )
    sweep = [o for o in found.outcomes if o.size == found.limit and o.ttl < 64]
    target["findings"].append(
        {
            "kind": "pmtu-black-hole" if found.black_hole else "path-mtu",
            "severity": "critical" if found.black_hole else "warning",
            "flow": found.flow,
            "first_hop": found.hop,
            "last_hop": found.hop + 1 if found.hop is not None else None,
            "responder": found.address,
            "confidence": 1.0 if found.hop is not None else 0.5,
            "note": f"sizes: {found.mtu} passes, {found.limit} does not ({found.probes} probes)",
            "summary": summary,
            "evidence": [
                {"flow": found.flow, "ttl": o.ttl, "kind": _MTU_EVIDENCE[o.outcome],
                 "responder": o.responder, "count": 1, "of": 1}
                for o in sorted(sweep, key=lambda o: o.ttl)
            ],
        }
    )  # fmt: skip


#: Path MTU probe outcomes as the evidence of a finding spells them.
_MTU_EVIDENCE = {
    "answered": "echo-reply",
    "time-exceeded": "time-exceeded",
    "too-big": "frag-needed",
    "silent": "timeout",
    "refused": "port-unreachable",
    "local": "timeout",
    "no-connection": "no-handshake",
    "unreachable": "unreachable",
}


def add_branches(target: Record, found: Any, verdict: Any) -> None:
    """Add to the record's ``target`` what spreading one flow over many flow hashes found
    (``engine.multipath.Exploration`` and its ``analysis.branches.BranchVerdict``): an
    entry in its ``multipath`` (each hop's responders with the identifiers that met
    them, each identifier's fate); a finding when the path branches; and, when some
    identifiers die where the others pass, the flow's verdict becomes
    ``partially-filtered``, naming the branch (its hop and address) and the share."""
    hops = []
    for ttl in found.ttls:
        row = found.paths.get(ttl, {})
        by: dict[tuple[str, str | None], list[int]] = {}
        for flow_id, probe in sorted(row.items()):
            by.setdefault((probe.outcome, probe.responder), []).append(flow_id)
        hops.append(
            {
                "ttl": ttl,
                "responders": [
                    {"address": address, "outcome": outcome, "flow_ids": ids}
                    for (outcome, address), ids in sorted(
                        by.items(), key=lambda item: (-len(item[1]), str(item[0]))
                    )
                ],
            }
        )
    fates = []
    for flow_id in found.flow_ids:
        rounds = found.fates.get(flow_id, ())
        fates.append(
            {
                "flow_id": flow_id,
                "outcomes": [o.outcome for o in rounds],
                "responder": next((o.responder for o in rounds if o.responder), None),
            }
        )
    for finding in target["findings"]:  # every branch is judged now: no need to say so
        if finding["kind"] == "ecmp":
            finding["summary"] = finding["summary"].replace(ECMP_HINT, "", 1)
    target.setdefault("multipath", []).append(
        {
            "flow": found.flow, "confidence": found.confidence, "probes": found.probes,
            "elapsed_s": found.elapsed_s, "settled": found.settled, "state": verdict.state,
            "failing": len(verdict.failing), "of": verdict.total,
            "unstable": len(verdict.unstable), "how": verdict.how, "hop": verdict.hop,
            "address": verdict.address, "fork_hop": verdict.fork_hop,
            "passing_via": list(verdict.passing_via), "widest": verdict.widest,
            "widest_hop": verdict.widest_hop, "hops": hops, "fates": fates,
            "note": found.note,
        }
    )  # fmt: skip
    partial = verdict.state == "partially-filtered"
    if not partial and verdict.widest < 2:
        return
    flow = next((f for f in target["flows"] if f["flow"] == found.flow), None)
    if partial and flow is not None and flow["verdict"] is not None:
        flow["verdict"].update(
            state="partially-filtered",
            reason="admin-prohibited" if verdict.how == "rejected" else "no-response",
            reason_address=verdict.address,
            reason_hop=verdict.hop,
            branch={
                "failing": len(verdict.failing), "of": verdict.total, "how": verdict.how,
                "hop": verdict.hop, "address": verdict.address,
            },
        )  # fmt: skip
    failing = set(verdict.failing)
    evidence = [
        {"flow": found.flow, "ttl": hop["ttl"], "kind": _branch_evidence(found.flow, r["outcome"]),
         "responder": r["address"], "count": len(r["flow_ids"]),
         "of": sum(len(x["flow_ids"]) for x in hop["responders"])}
        for hop in hops
        for r in hop["responders"]
        if not partial or hop["ttl"] in (verdict.fork_hop, verdict.hop)
        or (hop["ttl"] == (verdict.hop or 0) + 1 and failing & set(r["flow_ids"]))
    ]  # fmt: skip
    target["findings"].append(
        {
            "kind": "partially-filtered" if partial else "multipath",
            "severity": "critical" if partial else "info",
            "flow": found.flow,
            "first_hop": verdict.hop if partial else verdict.widest_hop,
            "last_hop": (verdict.hop + 1 if verdict.hop is not None else None)
            if partial else verdict.widest_hop,
            "responder": verdict.address if partial else None,
            "confidence": found.confidence,
            "note": f"{verdict.total} flow hashes, each sent "
            f"{'twice' if max(map(len, found.fates.values()), default=0) > 1 else 'once'}"
            f" to the target; {found.probes} probes",
            "summary": verdict.summary(),
            "evidence": evidence,
        }
    )  # fmt: skip


def _branch_evidence(flow: str, outcome: str) -> str:
    """A multipath probe's outcome as the evidence of a finding spells it."""
    protocol = flow.partition("/")[0]
    if outcome == "answered":
        return {"tcp": "tcp-syn-ack", "udp": "udp-reply"}.get(protocol, "echo-reply")
    if outcome == "refused":
        return "tcp-rst" if protocol == "tcp" else "port-unreachable"
    return {"time-exceeded": "time-exceeded", "rejected": "admin-prohibited"}.get(
        outcome, "timeout"
    )
