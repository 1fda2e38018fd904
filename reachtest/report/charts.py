"""Latency charts for the HTML report (matplotlib, Agg-free SVG canvas, no pyplot state):
per target, each flow's average RTT per hop with its best..worst band above, and its
loss per hop as bars below. The SVG is inline-ready: no XML prolog, no fixed size, text
and axes drawn in ``currentColor`` so that the page's light or dark theme colours them,
and identical bytes for identical input (fixed hash salt, no date)."""

from __future__ import annotations

import io
import math
import re
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure

from reachtest.report.view import TargetView

#: Okabe-Ito colours (told apart with colour-blindness), one per flow in order.
FLOW_COLOURS = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#7f7f7f",
)
#: Drawn for text and axes, then swapped for ``currentColor``.
INK = "#010203"
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_SIZE = re.compile(r'<svg([^>]*?) width="[^"]*" height="[^"]*"')


def flow_colour(index: int) -> str:
    return FLOW_COLOURS[index % len(FLOW_COLOURS)]


def chart_rc(salt: str) -> dict[str, Any]:
    """matplotlib settings of every chart: text as text, ink swapped for currentColor
    later, no background, and element ids salted apart."""
    return {
        "svg.fonttype": "none",
        "svg.hashsalt": f"reachtest-{salt}",
        "font.size": 9,
        "text.color": INK,
        "axes.labelcolor": INK,
        "axes.edgecolor": INK,
        "xtick.color": INK,
        "ytick.color": INK,
        "axes.facecolor": "none",
        "figure.facecolor": "none",
        "savefig.facecolor": "none",
        "legend.frameon": False,
    }


def _value(x: float | None) -> float:
    return math.nan if x is None else x


def latency_svg(view: TargetView, salt: str) -> str:
    """The chart of one target as an inline ``<svg>`` element; ``salt`` keeps its element
    ids apart from other charts on the same page."""
    ttls = [row.ttl for row in view.rows]
    n = max(len(view.flows), 1)
    with rc_context(chart_rc(salt)):  # type: ignore[arg-type]
        figure = Figure(figsize=(max(4.5, 1.0 + 0.55 * len(ttls)), 3.6), layout="constrained")
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
        for j, flow in enumerate(view.flows):
            colour = flow_colour(j)
            shift = (j - (n - 1) / 2) * min(0.12, 0.6 / n)
            xs, avg, best, worst, loss, limited = [], [], [], [], [], []
            for row in view.rows:
                cell = row.cells[j]
                if cell is None:
                    continue
                xs.append(row.ttl + shift)
                avg.append(_value(cell.avg_ms))
                best.append(_value(cell.best_ms))
                worst.append(_value(cell.wrst_ms))
                # Non-answers a router's rate limit explains are not loss: drawn apart.
                share = 100 * cell.limited / cell.snt if cell.snt else 0.0
                limited.append(share)
                loss.append(cell.loss_pct)
            top.fill_between(xs, best, worst, color=colour, alpha=0.18, linewidth=0)
            top.plot(xs, avg, marker="o", markersize=3.5, linewidth=1.4, color=colour, label=flow)
            width = 0.8 / n
            places = [x - shift + (j - (n - 1) / 2) * width for x in xs]
            bottom.bar(places, loss, width=width, color=colour, label=flow)
            if any(limited):
                bottom.bar(
                    places,
                    limited,
                    bottom=loss,
                    width=width,
                    color="none",
                    edgecolor=colour,
                    hatch="///",
                    linewidth=0.6,
                )
        top.set_ylabel("RTT ms (avg, best to worst)")
        top.set_ylim(bottom=0)
        top.grid(True, alpha=0.25)
        top.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=min(n, 4), fontsize=8)
        bottom.set_ylabel("loss %\n(hatched:\nrate limit)", fontsize=7)
        bottom.set_ylim(0, 105)
        bottom.set_yticks([0, 50, 100])
        bottom.grid(True, axis="y", alpha=0.25)
        bottom.set_xlabel("hop (TTL)")
        bottom.set_xticks(ttls)
        if ttls:
            bottom.set_xlim(ttls[0] - 0.6, ttls[-1] + 0.6)
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    return inline(out.getvalue(), f"Latency and loss per hop for {len(view.flows)} flows")


#: A run with fewer buckets than this (rounds, in a short run) gets no chart over time.
MIN_SERIES = 16


def series_svg(view: TargetView, salt: str) -> str | None:
    """Each flow over time at the hop where it ends (average RTT above, loss below), from
    the record's downsampled series; None when the run is too short to show a trend."""
    lines = [s for s in view.series if len(s.rounds) >= MIN_SERIES]
    if not lines:
        return None
    order = {flow: j for j, flow in enumerate(view.flows)}
    with rc_context(chart_rc(f"series-{salt}")):  # type: ignore[arg-type]
        figure = Figure(figsize=(6.2, 3.4), layout="constrained")
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
        for line in lines:
            colour = flow_colour(order.get(line.flow, 0))
            label = f"{line.flow} (hop {line.ttl})"
            avg = [_value(a) for a in line.avg_ms]
            top.plot(line.rounds, avg, linewidth=1.3, color=colour, label=label)
            bottom.step(line.rounds, line.loss_pct, where="post", linewidth=1.2, color=colour)
        top.set_ylabel("RTT ms (avg)")
        top.set_ylim(bottom=0)
        top.grid(True, alpha=0.25)
        top.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, fontsize=8)
        bottom.set_ylabel("loss %", fontsize=8)
        bottom.set_ylim(0, 105)
        bottom.set_yticks([0, 50, 100])
        bottom.grid(True, axis="y", alpha=0.25)
        bottom.set_xlabel("round")
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    return inline(out.getvalue(), f"Latency and loss over time for {len(lines)} flows")


def inline(svg: str, label: str) -> str:
    svg = svg[svg.index("<svg") :]
    svg = _METADATA.sub("", svg, count=1)
    svg = _SIZE.sub(r'<svg\1 class="chart" role="img"', svg, count=1)
    svg = svg.replace(INK, "currentColor")
    # The label is ours (a count), yet escape it like any attribute value.
    label = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return svg.replace("<svg", f'<svg aria-label="{label}"', 1)
