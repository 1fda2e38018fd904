"""The CSV report: one row per (target, flow, hop), numeric columns numeric (empty when
there is no value), for spreadsheets and pandas. A text cell that would start like a
formula (a PTR name ``=cmd|...``) starts with an apostrophe instead."""

from __future__ import annotations

import csv
import io

from reachtest.analysis.stats import MS_COLUMNS
from reachtest.report.escape import clean, for_spreadsheet
from reachtest.report.record import Record
from reachtest.report.view import cell_of, mpls_text

COLUMNS = (
    "target",
    "address",
    "flow",
    "protocol",
    "port",
    "ttl",
    "responder",
    "responder_name",
    "mpls",
    "snt",
    "rcv",
    "loss_pct",
    *MS_COLUMNS,
    "mark",
    "responders",
    "kinds",
    "state",
    "reason",
    "stop",
    "stop_hop",
)
NUMBERS = ("snt", "rcv", "loss_pct", *MS_COLUMNS)


def render_csv(record: Record) -> str:
    """The record's hop statistics as CSV text with a header row (its strings made safe
    for a terminal: a CSV file is read with ``cat`` too)."""
    record = clean(record, skip=frozenset({"samples"}))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    names: dict[str, str] = record["names"]
    for target in record["targets"]:
        for flow in target["flows"]:
            verdict, path = flow["verdict"], flow["path"]
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
                    "mpls": next(
                        (
                            mpls_text(m["stack"])
                            for m in hop.get("mpls", [])
                            if m["responder"] == top
                        ),
                        None,
                    ),
                    **{name: hop[name] for name in NUMBERS},
                    "mark": str(cell_of(hop, path).mark),
                    "responders": " ".join(
                        f"{r['address']}={r['count']}" for r in hop["responders"]
                    ),
                    "kinds": " ".join(f"{k['kind']}={k['count']}" for k in hop["kinds"]),
                    "state": verdict["state"] if verdict["state"] is not None else "",
                    "reason": verdict["reason"],
                    "stop": path["stop"],
                    "stop_hop": path["stop_hop"],
                }
                writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value: object) -> object:
    if value is None:
        return ""
    return for_spreadsheet(value) if isinstance(value, str) else value
