"""One neutral view of a run record: hop rows with a cell per flow, verdict lines, findings.

Every renderer (terminal, text, CSV, Markdown, HTML) reads this view, and the
view reads only the run record, so a report rendered from a saved JSON file is the same
as the one printed at the end of the run.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from reachtest.analysis import where
from reachtest.analysis.stats import loss_pct
from reachtest.analysis.summary import evidence_words
from reachtest.report.escape import clean
from reachtest.report.record import Record, flow_fields, run_ok, service_ok


class Mark(StrEnum):
    """What a flow's probes at one TTL got, in a word (the value is what is shown)."""

    PASS = "pass"  # time-exceeded: forwarded up to here
    REPLY = "reply"  # echo reply from the target
    OPEN = "open"  # SYN-ACK or a UDP answer
    CLOSED = "closed"  # RST or port unreachable
    PROHIBITED = "prohib"  # administratively prohibited
    UNREACHABLE = "unreach"  # net, host or protocol unreachable
    FORGED = "forged"  # an answer in the target's name from a middlebox
    LIMITED = "limited"  # passes, but the router's ICMP rate limit left probes unanswered
    SILENT = "silent"  # nothing came back


MARK_HELP: dict[Mark, str] = {
    Mark.PASS: "time-exceeded (forwarded this far)",
    Mark.REPLY: "echo reply from the target",
    Mark.OPEN: "SYN-ACK or UDP answer",
    Mark.CLOSED: "RST or port unreachable",
    Mark.PROHIBITED: "administratively prohibited",
    Mark.UNREACHABLE: "net/host/protocol unreachable",
    Mark.FORGED: "answered by a middlebox in the target's name",
    Mark.LIMITED: "forwarded, but the router rate-limits its ICMP errors: non-answers, not loss",
    Mark.SILENT: "no answer",
}

_KIND_MARK = {
    "time-exceeded": Mark.PASS,
    "echo-reply": Mark.REPLY,
    "tcp-syn-ack": Mark.OPEN,
    "udp-reply": Mark.OPEN,
    "tcp-rst": Mark.CLOSED,
    "port-unreachable": Mark.CLOSED,
    "admin-prohibited": Mark.PROHIBITED,
    "net-unreachable": Mark.UNREACHABLE,
    "host-unreachable": Mark.UNREACHABLE,
    "protocol-unreachable": Mark.UNREACHABLE,
    "unreachable": Mark.UNREACHABLE,
    "frag-needed": Mark.UNREACHABLE,
    "packet-too-big": Mark.UNREACHABLE,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """One flow at one TTL."""

    snt: int
    rcv: int
    loss_pct: float
    last_ms: float | None
    avg_ms: float | None
    best_ms: float | None
    wrst_ms: float | None
    stdev_ms: float | None
    javg_ms: float | None
    mark: Mark
    responder: str | None  # who answered this flow here most often
    limited: int = 0  # non-answers the router's ICMP rate limit explains (not loss)


@dataclass(frozen=True, slots=True, kw_only=True)
class Responder:
    """An address that answered at a TTL, its reverse-DNS name and how often it answered."""

    address: str
    name: str | None
    count: int
    mpls: str | None = None  # the label stack its time-exceeded quoted most often
    asn: str | None = None  # -z: the AS announcing its address ("AS64500")


def mpls_text(stack: list[Record]) -> str:
    """An MPLS label stack in words, as mtr -e shows it: ``[MPLS: L=24001 TC=0 S=1 TTL=1]``
    per entry, top first."""
    return " ".join(
        f"[MPLS: L={int(e['label'])} TC={int(e['tc'])} S={int(bool(e['s']))} TTL={int(e['ttl'])}]"
        for e in stack
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HopRow:
    """One TTL: who answered (any flow), and one cell per flow (None: not probed)."""

    ttl: int
    responders: tuple[Responder, ...]
    cells: tuple[Cell | None, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictLine:
    """One flow's verdict in words: state, reason, who gave it, where it stops."""

    flow: str
    state: str
    reason: str
    detail: str
    ok: bool
    rounds: int
    rounds_probed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingLine:
    """One finding: severity, its sentence and its evidence in words."""

    severity: str
    kind: str
    summary: str
    confidence: float
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesLine:
    """One flow over time at the hop where it ends: per bucket of rounds, from ``rounds``
    on, its loss and average RTT (None when nothing came back)."""

    flow: str
    ttl: int
    rounds: tuple[int, ...]
    loss_pct: tuple[float, ...]
    avg_ms: tuple[float | None, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BranchLine:
    """``trace --mda``: at hop ``ttl`` of ``flow``, ``ids`` flow hashes met ``address``
    (None: silence, ``outcome`` says which) and ``reached`` of them reach the target."""

    flow: str
    ttl: int
    address: str | None
    outcome: str
    ids: int
    reached: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetView:
    """Everything shown for one target."""

    host: str
    address: str
    name: str | None
    reachable: bool
    distance: int | None
    headline: str
    flows: tuple[str, ...]
    rows: tuple[HopRow, ...]
    verdicts: tuple[VerdictLine, ...]
    findings: tuple[FindingLine, ...]
    #: Each flow over time, at its last hop (from the record's series).
    series: tuple[SeriesLine, ...] = ()
    #: The request columns (tls/443, dns/53; after the flows'): where each stops, and its
    #: words (``request_stop``).
    request_stops: tuple[tuple[str, int | None, str], ...] = ()
    #: Flows whose bigger packets die (``--mtu``): (flow, the last hop that gets them,
    #: the path MTU, a black hole).
    mtu_limits: tuple[tuple[str, int, int, bool], ...] = ()
    #: ``--mda``: the hops where a flow's hashes part ways (or some die).
    branches: tuple[BranchLine, ...] = ()

    @property
    def limited_note(self) -> str | None:
        """What Loss% leaves out, said once under the hop table (None when nothing)."""
        n = sum(c.limited for row in self.rows for c in row.cells if c is not None)
        if not n:
            return None
        what = "non-answer" if n == 1 else "non-answers"
        return (
            f"Loss% leaves out {n} {what} of routers that rate-limit their ICMP errors "
            "(cells marked limited): the probes were forwarded; Snt counts them."
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    """A whole run."""

    targets: tuple[TargetView, ...]
    started: datetime
    duration_s: float
    rounds: int
    rounds_done: int
    interrupted: bool
    ok: bool
    totals_line: str
    version: str
    command: str
    params: tuple[tuple[str, str], ...]


def cell_of(hop: Record, path: Record) -> Cell:
    """The cell of one hop record of a flow whose path is ``path``."""
    kinds = [(k["kind"], k["count"]) for k in hop["kinds"] if k["kind"] != "timeout"]
    if hop["rcv"] == 0 or not kinds:
        mark = Mark.SILENT
    else:
        mark = _KIND_MARK.get(max(kinds, key=lambda k: k[1])[0], Mark.UNREACHABLE)
        if path["stop"] == "middlebox" and mark in (Mark.OPEN, Mark.CLOSED):
            mark = Mark.FORGED  # the final answer of this flow came from a middlebox
    if hop.get("limited") and mark in (Mark.PASS, Mark.SILENT):
        mark = Mark.LIMITED
    return Cell(
        snt=hop["snt"],
        rcv=hop["rcv"],
        loss_pct=loss_pct(hop["snt"], hop["rcv"], hop.get("limited", 0)),
        last_ms=hop["last_ms"],
        avg_ms=hop["avg_ms"],
        best_ms=hop["best_ms"],
        wrst_ms=hop["wrst_ms"],
        stdev_ms=hop["stdev_ms"],
        javg_ms=hop["javg_ms"],
        mark=mark,
        responder=max(hop["responders"], key=lambda r: r["count"])["address"]
        if hop["responders"]
        else None,
        limited=hop.get("limited", 0),
    )


def _detail(flow: Record, owners: Record | None = None) -> str:
    """Where the flow stops, in words (``analysis.where``: the same in every output)."""
    stopped = where.of_flow(flow)
    return stopped.words(owners) if stopped is not None else "no answer from any hop"


def _verdict(flow: Record, owners: Record | None = None) -> VerdictLine:
    v = flow["verdict"]
    if v is None:
        return VerdictLine(
            flow=flow["flow"],
            state="no data",
            reason="-",
            detail="stopped before any probe came back or timed out",
            ok=False,
            rounds=0,
            rounds_probed=0,
        )
    if flow["protocol"] == "icmp":
        state = "reachable" if v["reached"] else "no echo"
    else:
        state = v["state"] or "?"
    return VerdictLine(
        flow=flow["flow"],
        state=state,
        reason=v["reason"],
        detail=_detail(flow, owners),
        ok=service_ok(flow) and (flow["protocol"] != "icmp" or v["reached"]),
        rounds=v["rounds"],
        rounds_probed=v["rounds_probed"],
    )


def _request_verdict(request: Record) -> VerdictLine:
    """A request traced after the handshake, as a verdict line beside the flows'."""
    answered = request["state"] == "answered"
    if answered:
        hop = request["distance"]
        detail = f"answered (the server at hop {hop})" if hop else "answered"
    elif request["state"] == "no-handshake" and request["flow"].startswith("dns/"):
        detail = "no DNS service answers (port unreachable; see the port's UDP flow)"
    elif request["state"] == "no-handshake":
        detail = "the TCP handshake does not complete (see the port's SYN flow)"
    else:
        detail = where.of_request(request).words()
    if request["control"] is not None and request["state"] != "no-handshake":
        control = "answered" if answered or request["by_name"] else "not answered"
        detail += f"; control {request['control']} {control}"
    return VerdictLine(
        flow=f"{request['flow']} {request['name']}",
        state=request["state"],
        reason=request["reason"] or ("answered" if answered else "-"),
        detail=detail,
        ok=answered,
        rounds=1,
        rounds_probed=1,
    )


#: A request's outcome at one TTL as a mark (a blocked request's answers and resets come
#: from a box in the server's name: forged).
_REQUEST_MARK = {
    "time-exceeded": Mark.PASS, "closed": Mark.CLOSED, "refused": Mark.CLOSED,
}  # fmt: skip


def request_cells(request: Record) -> dict[int, Cell]:
    """TTL -> the cell of a request traced after the handshake (one request per TTL), for
    its column in the hop matrix beside the flows'."""
    blocked = request["state"] == "blocked-after-handshake"
    cells = {}
    for entry in request.get("ttls", ()):
        outcome, rtt = entry["outcome"], entry["rtt_ms"]
        if outcome in ("answered", "reset"):
            mark = Mark.FORGED if blocked else Mark.OPEN if outcome == "answered" else Mark.CLOSED
        else:
            mark = _REQUEST_MARK.get(outcome, Mark.SILENT)
        got = mark is not Mark.SILENT
        cells[entry["ttl"]] = Cell(
            snt=1, rcv=1 if got else 0, loss_pct=0.0 if got else 100.0, last_ms=rtt,
            avg_ms=rtt, best_ms=rtt, wrst_ms=rtt, stdev_ms=None, javg_ms=None, mark=mark,
            responder=entry["responder"],
        )  # fmt: skip
    return cells


def request_stop(request: Record) -> tuple[int | None, str]:
    """Where a request's lane in the path diagram ends (the box's hop, the server's; None:
    not known) and what it says there (the verdict's words, the same as its line's)."""
    line = _request_verdict(request)
    if request["state"] == "answered":
        return request["distance"], line.detail
    return request["box_hop"], line.detail


def _evidence(e: Record) -> str:
    return evidence_words(e["flow"], e["ttl"], e["kind"], e["responder"], e["count"], e["of"])


def _headline(t: Record) -> str:
    if not t["reachable"]:
        return "NOT reached"
    text = f"reachable at hop {t['distance']}"
    if t["ping_blocked_services_answer"]:
        text += " (ping blocked, services answer)"
    elif t["ping_answers_services_blocked"]:
        text += " (ping answers, services blocked)"
    measured = [m for m in t.get("mtu", ()) if m["mtu"] is not None]
    if measured:
        smallest = min(measured, key=lambda m: m["mtu"])
        text += f"; path MTU {smallest['mtu']}"
        if smallest["limit"] is not None and smallest["hop"] is not None:
            how = "a black hole" if smallest["black_hole"] else "limited"
            text += f" ({how} after hop {smallest['hop']})"
        elif smallest["black_hole"]:
            text += " (a black hole)"
    return text


def _branches(t: Record) -> tuple[BranchLine, ...]:
    """The hops of ``--mda`` worth showing: where a flow's hashes met several responders,
    and for a partially filtered flow the fork and where the failing ones die."""
    out: list[BranchLine] = []
    for m in t.get("multipath", ()):
        reached = {
            f["flow_id"] for f in m["fates"]
            if f["outcomes"] and all(o in ("answered", "refused") for o in f["outcomes"])
        }  # fmt: skip
        partial = m["state"] == "partially-filtered"
        wanted = {m["fork_hop"], m["hop"], (m["hop"] or 0) + 1} if partial else set()
        for hop in m["hops"]:
            at_hop = {
                r["address"] for r in hop["responders"]
                if r["address"] and r["outcome"] in ("time-exceeded", "answered", "refused")
            }  # fmt: skip
            if len(at_hop) < 2 and hop["ttl"] not in wanted:
                continue
            out += [
                BranchLine(
                    flow=m["flow"],
                    ttl=hop["ttl"],
                    address=r["address"],
                    outcome=r["outcome"],
                    ids=len(r["flow_ids"]),
                    reached=len(reached & set(r["flow_ids"])),
                )
                for r in hop["responders"]
            ]
    return tuple(out)


def _no_data(label: str) -> Record:
    """A flow of the run with no outcome for this target yet (a run stopped early)."""
    return {
        **flow_fields(label),
        "verdict": None,
        "path": None,
        "hops": [],
    }


def _series(flow: Record) -> SeriesLine | None:
    """The flow over time at the hop where it stops (else its last hop that answered,
    else its deepest)."""
    hops = flow["hops"]
    if not hops:
        return None
    path = flow["path"] or {}
    ttl = path.get("stop_hop") or path.get("last_hop") or hops[-1]["ttl"]
    hop = next((h for h in hops if h["ttl"] == ttl), hops[-1])
    buckets = hop.get("series", [])
    return SeriesLine(
        flow=flow["flow"],
        ttl=hop["ttl"],
        rounds=tuple(b["round"] for b in buckets),
        loss_pct=tuple(100.0 * (b["snt"] - b["rcv"]) / b["snt"] for b in buckets),
        avg_ms=tuple(b["avg_ms"] for b in buckets),
    )


def _target(
    t: Record,
    names: dict[str, str],
    first_ttl: int,
    labels: list[str],
    owners: Record | None = None,
) -> TargetView:
    present = {f["flow"]: f for f in t["flows"]}
    flows = [present.get(label) or _no_data(label) for label in labels]
    by_ttl: list[dict[int, Record]] = [{h["ttl"]: h for h in f["hops"]} for f in flows]
    requests = list(t.get("requests", ()))
    request_columns = [request_cells(r) for r in requests]
    last = max((ttl for hops in by_ttl for ttl in hops), default=first_ttl - 1)
    if t["reachable"] and t["distance"] is not None:
        last = min(last, t["distance"])  # past the target, every row is the target again
    rows = []
    for ttl in range(first_ttl, last + 1):
        counts: dict[str, int] = {}
        stacks: dict[str, dict[str, int]] = {}
        cells: list[Cell | None] = []
        for flow, hops in zip(flows, by_ttl, strict=True):
            hop = hops.get(ttl)
            cells.append(None if hop is None else cell_of(hop, flow["path"]))
            for r in [] if hop is None else hop["responders"]:
                counts[r["address"]] = counts.get(r["address"], 0) + r["count"]
            for m in [] if hop is None else hop.get("mpls", []):
                seen = stacks.setdefault(m["responder"], {})
                text = mpls_text(m["stack"])
                seen[text] = seen.get(text, 0) + m["count"]
        cells += [column.get(ttl) for column in request_columns]
        responders = tuple(
            Responder(
                address=a,
                name=names.get(a),
                count=n,
                mpls=max(stacks[a], key=lambda s: stacks[a][s]) if a in stacks else None,
                asn=f"AS{owners[a]['asn']}" if owners and a in owners else None,
            )
            for a, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        )
        rows.append(HopRow(ttl=ttl, responders=responders, cells=tuple(cells)))
    return TargetView(
        host=t["host"],
        address=t["address"],
        name=t["name"],
        reachable=t["reachable"],
        distance=t["distance"],
        headline=_headline(t),
        flows=tuple(f["flow"] for f in flows) + tuple(r["flow"] for r in requests),
        rows=tuple(rows),
        request_stops=tuple((r["flow"], *request_stop(r)) for r in requests),
        mtu_limits=tuple(
            (m["flow"], m["hop"], m["mtu"], m["black_hole"])
            for m in t.get("mtu", ())
            if m["hop"] is not None and m["mtu"] is not None and m["limit"] is not None
        ),
        branches=_branches(t),
        series=tuple(s for f in flows if (s := _series(f)) is not None),
        verdicts=tuple(_verdict(f, owners) for f in flows)
        + tuple(_request_verdict(r) for r in t.get("requests", ())),
        findings=tuple(
            FindingLine(
                severity=f["severity"],
                kind=f["kind"],
                summary=f["summary"],
                confidence=f["confidence"],
                evidence=tuple(_evidence(e) for e in f["evidence"]),
            )
            for f in t["findings"]
        ),
    )


def _totals(record: Record) -> str:
    totals = record["totals"]
    counts = dict(totals["strays"])
    # Packets that do not even look like an answer (our own DNS look-ups, other traffic
    # on the host) are no stray replies: counted apart, so real strays stand out.
    unrelated = counts.pop("unrelated-traffic", 0)
    strays = ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "none"
    text = (
        f"{totals['sent']} probes sent, {totals['answered']} answered, "
        f"{totals['duplicate_or_late']} duplicate or late, stray replies: {strays}"
    )
    text += f", {unrelated} unrelated packets ignored" if unrelated else ""
    if totals.get("bad_checksum"):
        text += f", {totals['bad_checksum']} replies with a bad checksum ignored"
    dropped = totals.get("kernel_dropped", 0)
    if dropped:
        text += (
            f" · {dropped} packets dropped by the kernel before reachtest read them (host too "
            "busy): answers among them count as lost"
        )
    params = record["params"]
    if params.get("transport") == "unprivileged":
        notes = "; ".join(params.get("transport_notes", ()))
        text += " · unprivileged transport (ordinary sockets)" + (f": {notes}" if notes else "")
    return text


def _param(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "; ".join(map(str, value))
    return str(value)


def build_view(record: Record) -> RunView:
    """The view of a run record (validated or just built). Every string in it is made
    safe for a terminal first (names and records come from the network or a file); the
    per-probe samples, which no view shows, are left as they are."""
    record = clean(record, skip=frozenset({"samples"}))
    names: dict[str, Any] = record["names"]
    first = record["params"]["first_ttl"]
    return RunView(
        targets=tuple(
            _target(t, names, first, record["flows"], record.get("asns")) for t in record["targets"]
        ),
        started=datetime.fromisoformat(record["started"].replace("Z", "+00:00")),
        duration_s=record["duration_s"],
        rounds=record["params"]["rounds"],
        rounds_done=record["rounds_done"],
        interrupted=record["interrupted"],
        ok=run_ok(record),
        totals_line=_totals(record),
        version=record["tool"]["version"],
        command=shlex.join(record["command"]),
        params=tuple((key, _param(value)) for key, value in record["params"].items()),
    )
