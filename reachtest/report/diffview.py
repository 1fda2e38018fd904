"""The diff of two runs as text, JSON, Markdown or a self-contained HTML page."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from reachtest.analysis.diff import HopChange, RunDiff, ServiceChange

ARROW = "->"
MARK = {
    "regression": "WORSE",
    "improvement": "better",
    "changed": "changed",
    "moved": "moved",
    "new": "new",
    "gone": "gone",
    "same": "same",
}


def to_json(diff: RunDiff) -> str:
    data: dict[str, Any] = asdict(diff)
    data["regressions"] = len(diff.regressions)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _state(s: ServiceChange) -> str:
    before = s.before or "(absent)"
    after = s.after or "(absent)"
    text = before if before == after else f"{before} {ARROW} {after}"
    where = [w for w in (s.stop_before, s.stop_after) if w]
    if s.stop_before != s.stop_after and where:
        text += f"; {s.stop_before or 'gets through'} {ARROW} {s.stop_after or 'gets through'}"
    elif s.stop_after:
        text += f"; {s.stop_after}"
    return text


def _hop(h: HopChange) -> str:
    parts = []
    if h.path_changed:
        parts.append(
            f"responders {', '.join(h.responders_before)} {ARROW} {', '.join(h.responders_after)}"
        )
    if h.loss_changed:
        (la, sa), (lb, sb) = h.loss_before, h.loss_after
        parts.append(f"loss {la}/{sa} {ARROW} {lb}/{sb} (Fisher p={h.loss_p:.2g})")
    if h.rtt_changed:
        parts.append(
            f"median RTT {h.rtt_before_ms:.2f} {ARROW} {h.rtt_after_ms:.2f} ms "
            f"(Mann-Whitney p={h.rtt_p:.2g})"
        )
    return "; ".join(parts)


def headline(diff: RunDiff) -> str:
    worse = len(diff.regressions)
    changed = sum(1 for s in diff.services if s.change != "same")
    if not diff.changed:
        return "no change"
    return (
        f"{changed} service{'s' if changed != 1 else ''} changed ({worse} worse), "
        f"{len(diff.hops)} hop{'s' if len(diff.hops) != 1 else ''} changed"
    )


def render_text(diff: RunDiff) -> str:
    lines = [
        f"before: {diff.before} ({diff.before_started})",
        f"after:  {diff.after} ({diff.after_started})",
        headline(diff),
        "",
        "Services",
    ]
    for s in diff.services:
        lines.append(f"  {MARK[s.change]:<8} {s.target} {s.flow:<9} {_state(s)}")
    if diff.hops:
        lines += ["", "Hops (responders changed, or loss/latency changed at p < 0.01)"]
        for h in diff.hops:
            lines.append(f"  {h.target} {h.flow:<9} hop {h.ttl:>2}: {_hop(h)}")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(diff: RunDiff) -> str:
    lines = [
        "# reachtest diff",
        "",
        f"- before: {_cell(diff.before)} ({diff.before_started})",
        f"- after: {_cell(diff.after)} ({diff.after_started})",
        f"- {headline(diff)}",
        "",
        "| change | target | flow | state and where it stops |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {'**WORSE**' if s.change == 'regression' else MARK[s.change]} | {_cell(s.target)} "
        f"| {s.flow} | {_cell(_state(s))} |"
        for s in diff.services
    ]
    if diff.hops:
        lines += ["", "| target | flow | hop | what changed |", "|---|---|---|---|"]
        lines += [
            f"| {_cell(h.target)} | {h.flow} | {h.ttl} | {_cell(_hop(h))} |" for h in diff.hops
        ]
    return "\n".join(lines) + "\n"


def render_html(diff: RunDiff) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("reachtest.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
    )
    return env.get_template("diff.html.j2").render(
        diff=diff, head=headline(diff), mark=MARK, state=_state, hop=_hop
    )


RENDER = {"text": render_text, "json": to_json, "markdown": render_markdown, "html": render_html}
