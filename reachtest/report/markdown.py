"""The Markdown report (GitHub-flavoured): verdicts, the hop matrix, findings with their
evidence and the run's facts, for tickets and mail; every value from the record escaped."""

from __future__ import annotations

import re

from reachtest.report.view import MARK_HELP, Cell, HopRow, RunView, TargetView

#: What can start emphasis, code, a link, a table cell or strike-through mid-line; with
#: brackets escaped, parentheses cannot form a link and stay readable.
_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def escape(text: str) -> str:
    """``text`` as inert Markdown: HTML characters as entities, Markdown punctuation
    backslash-escaped (so a name like ``<script>`` or ``a|b`` cannot break a table)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace('"', "&quot;")
    return _SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _cell(cell: Cell | None) -> str:
    if cell is None:
        return ""
    text = f"**{cell.mark}** {cell.loss_pct:.0f}%"
    if cell.limited:
        text += f" ({cell.limited} limited)"
    if cell.avg_ms is not None:
        text += f" {_ms(cell.avg_ms)} ms"
    return text


def _hosts(row: HopRow) -> str:
    if not row.responders:
        return "???"
    parts = []
    for r in row.responders:
        name = f" ({escape(r.name)})" if r.name else ""
        mpls = f" {escape(r.mpls)}" if r.mpls else ""
        asn = f"{escape(r.asn)} " if r.asn else ""
        parts.append(f"{asn}{escape(r.address)}{name}{mpls}")
    return "<br>".join(parts)


def _target(view: TargetView) -> list[str]:
    head = escape(view.host)
    if view.address != view.host:
        head += f" ({escape(view.address)})"
    lines = [f"## {head}: {escape(view.headline)}", ""]
    lines += ["| flow | state | reason | where | rounds |", "|---|---|---|---|---|"]
    for v in view.verdicts:
        state = escape(v.state) if v.ok else f"**{escape(v.state)}**"
        lines.append(
            f"| {escape(v.flow)} | {state} | {escape(v.reason)} | {escape(v.detail)} "
            f"| {v.rounds}/{v.rounds_probed} |"
        )
    lines += ["", "| TTL | host | " + " | ".join(escape(f) for f in view.flows) + " |"]
    lines.append("|---:|---|" + "---|" * len(view.flows))
    for row in view.rows:
        cells = " | ".join(_cell(c) for c in row.cells)
        lines.append(f"| {row.ttl} | {_hosts(row)} | {cells} |")
    if view.limited_note:
        lines += ["", f"_{escape(view.limited_note)}_"]
    if view.branches:
        lines += ["", "### Branches (--mda)", "",
                  "| flow | hop | responder | flow hashes | reach the target |",
                  "|---|---:|---|---:|---:|"]  # fmt: skip
        for b in view.branches:
            who = escape(b.address) if b.address else f"(no answer: {escape(b.outcome)})"
            reach = f"**{b.reached}**" if b.reached < b.ids else str(b.reached)
            lines.append(f"| {escape(b.flow)} | {b.ttl} | {who} | {b.ids} | {reach} |")
    lines += ["", "### Findings", ""]
    if not view.findings:
        lines.append("No findings.")
    for f in view.findings:
        lines.append(
            f"- **{escape(f.severity)}**: {escape(f.summary)} (confidence {f.confidence:.0%})"
        )
        lines += [f"  - {escape(e)}" for e in f.evidence]
    return [*lines, ""]


def render_markdown(run: RunView) -> str:
    """The whole report as Markdown text."""
    lines = ["# reachtest report", ""]
    for target in run.targets:
        lines += _target(target)
    marks = "; ".join(f"**{m}** = {escape(h)}" for m, h in MARK_HELP.items())
    started = run.started.strftime("%Y-%m-%d %H:%M:%S UTC")
    stopped = " (stopped early)" if run.interrupted else ""
    lines += [
        "---",
        "",
        f"Marks: {marks}. Cells: mark, loss, average round-trip time.",
        "",
        f"reachtest {escape(run.version)} · started {started} · "
        f"{run.rounds_done}/{run.rounds} rounds{stopped} · {run.duration_s:.1f} s · "
        f"{escape(run.totals_line)}",
        "",
    ]
    return "\n".join(lines)
