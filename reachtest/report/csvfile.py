"""The CSV report: one row per (target, flow, hop), requests traced after the handshake
(tls/443, dns/53) as flows of their own, numeric columns numeric (empty when there is no
value), for spreadsheets and pandas. A text cell that would start like a
formula (a PTR name ``=cmd|...``) starts with an apostrophe instead."""

from __future__ import annotations

import csv
import io

from reachtest.analysis.stats import MS_COLUMNS, loss_pct
from reachtest.analysis.where import of_flow, of_request
from reachtest.report.escape import clean, for_spreadsheet
from reachtest.report.record import Record
from reachtest.report.view import cell_of, mpls_text, request_cells

COLUMNS = (
    "target",
    "address",
    "flow",
    "protocol",
    "port",
    "ttl",
    "responder",
    "responder_name",
    "responder_as",
    "mpls",
    "snt",
    "rcv",
    "limited",
    "loss_pct",
    *MS_COLUMNS,
    "mark",
    "responders",
    "kinds",
    "state",
    "reason",
    "stop",
    "stop_hop",
    "stop_address",
    "where",
    "path_mtu",
    "pmtu_black_hole",
)
NUMBERS = ("snt", "rcv", "loss_pct", *MS_COLUMNS)
#: ``--mtu``: the flow's path MTU in bytes, and 1 when bigger packets die silently (on
#: every row of the flow; empty when not measured).


def render_csv(record: Record) -> str:
    """The record's hop statistics as CSV text with a header row (its strings made safe
    for a terminal: a CSV file is read with ``cat`` too)."""
    record = clean(record, skip=frozenset({"samples"}))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    names: dict[str, str] = record["names"]
    owners: dict[str, Record] = record.get("asns", {})
    for target in record["targets"]:
        mtu = {m["flow"]: m for m in target.get("mtu", ())}
        for flow in target["flows"]:
            verdict, path = flow["verdict"], flow["path"]
            measured = mtu.get(flow["flow"], {})
            stopped = of_flow(flow)
            for hop in flow["hops"]:
                top = hop["responders"][0]["address"] if hop["responders"] else None
                row: dict[str, object] = {
                    "target": target["host"],
                    "address": target["address"],
                    "flow": flow["flow"],
                    "protocol": flow["protocol"],
                    "port": flow["port"],
                    "ttl": hop["ttl"],
                    "responder": top,
                    "responder_name": names.get(top) if top else None,
                    "responder_as": _asn(owners, top),
                    "mpls": next(
                        (
                            mpls_text(m["stack"])
                            for m in hop.get("mpls", [])
                            if m["responder"] == top
                        ),
                        None,
                    ),
                    **{name: hop[name] for name in NUMBERS},
                    "limited": hop.get("limited", 0),
                    "loss_pct": round(loss_pct(hop["snt"], hop["rcv"], hop.get("limited", 0)), 2),
                    "mark": str(cell_of(hop, path).mark),
                    "responders": " ".join(
                        f"{r['address']}={r['count']}" for r in hop["responders"]
                    ),
                    "kinds": " ".join(f"{k['kind']}={k['count']}" for k in hop["kinds"]),
                    "state": verdict["state"] if verdict["state"] is not None else "",
                    "reason": verdict["reason"],
                    "stop": path["stop"],
                    # Where it stops (analysis.where): the hop, address and words of every
                    # report (for --mda, the failing branch's).
                    "stop_hop": stopped.hop if stopped else None,
                    "stop_address": stopped.address if stopped else None,
                    "where": stopped.words(owners) if stopped else None,
                    "path_mtu": measured.get("mtu"),
                    "pmtu_black_hole": (int(measured["black_hole"]) if measured.get("mtu")
                                        else None),
                }  # fmt: skip
                writer.writerow({k: _cell(v) for k, v in row.items()})
        for request in target.get("requests", ()):
            _request_rows(writer, target, request, names, owners)
    return buffer.getvalue()


def _request_rows(
    writer: csv.DictWriter[str],
    target: Record,
    request: Record,
    names: dict[str, str],
    record_owners: dict[str, Record],
) -> None:
    """A request traced after the handshake (tls/443, dns/53): one row per TTL, as the
    flows' (one request per TTL; ``stop`` is the box's reason, ``stop_hop`` its hop)."""
    protocol, _, port = request["flow"].partition("/")
    cells = request_cells(request)
    by_ttl = {e["ttl"]: e for e in request.get("ttls", ())}
    stopped = of_request(request)
    for ttl, cell in sorted(cells.items()):
        entry = by_ttl[ttl]
        row: dict[str, object] = {
            "target": target["host"], "address": target["address"], "flow": request["flow"],
            "protocol": protocol, "port": int(port), "ttl": ttl, "responder": cell.responder,
            "responder_name": names.get(cell.responder) if cell.responder else None,
            "responder_as": _asn(record_owners, cell.responder),
            "snt": cell.snt, "rcv": cell.rcv, "limited": 0, "loss_pct": cell.loss_pct,
            **{name: getattr(cell, name, None) for name in MS_COLUMNS},
            "mark": str(cell.mark),
            "responders": f"{cell.responder}=1" if cell.responder else "",
            "kinds": f"{entry['outcome']}=1", "state": request["state"],
            "reason": request["reason"] or "answered",
            "stop": request["reason"] or "answered",
            "stop_hop": stopped.hop, "stop_address": stopped.address,
            "where": stopped.words(record_owners),
        }  # fmt: skip
        writer.writerow({k: _cell(v) for k, v in row.items()})


def _cell(value: object) -> object:
    if value is None:
        return ""
    return for_spreadsheet(value) if isinstance(value, str) else value


def _asn(owners: dict[str, Record], address: str | None) -> int | None:
    """-z: the AS number announcing ``address`` (empty when not looked up or unknown)."""
    owner = owners.get(address or "")
    return None if owner is None else int(owner["asn"])
