"""The history as a page: an availability timeline per service (matplotlib, inline SVG),
the share of runs each got through, and every change of state."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: Colour per word: through is green; a closed port orange; silence or unreachable red.
WORD_COLOURS = {
    "open": "#009E73",
    "reachable": "#009E73",
    "closed": "#E69F00",
    "open|filtered": "#CC79A7",
    "partially-filtered": "#F0E442",
    "filtered": "#D55E00",
    "unreachable": "#D55E00",
}


def timeline_svg(runs: pd.DataFrame) -> str:
    """One bar per target and flow; each run colours the time until the next run."""
    import pandas as pd
    from matplotlib import rc_context
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from reachtest.report.charts import chart_rc, inline

    times = pd.to_datetime(runs["started"], utc=True).dt.tz_localize(None)
    frame = runs.assign(t=date2num(times.to_numpy()))  # type: ignore[no-untyped-call]
    services = sorted(set(zip(frame["target"], frame["flow"], strict=True)))
    span = (frame["t"].max() - frame["t"].min()) or 1 / 1440
    with rc_context(chart_rc("timeline")):  # type: ignore[arg-type]
        figure = Figure(figsize=(9, 1.2 + 0.32 * len(services)), layout="constrained")
        axes = figure.subplots()
        for row, (target, flow) in enumerate(services):
            mine = frame[(frame["target"] == target) & (frame["flow"] == flow)].sort_values("t")
            starts = list(mine["t"])
            ends = [*starts[1:], starts[-1] + span / 50]
            for start, end, word in zip(starts, ends, mine["word"], strict=True):
                axes.broken_barh(
                    [(start, end - start)], (row - 0.4, 0.8), color=WORD_COLOURS.get(word, "#888")
                )
        axes.set_yticks(range(len(services)), [f"{t} {f}" for t, f in services])
        axes.invert_yaxis()
        locator = AutoDateLocator()  # type: ignore[no-untyped-call]
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        axes.set_xlabel("time (UTC)")
        seen = [w for w in WORD_COLOURS if w in set(frame["word"])]
        axes.legend(
            handles=[Patch(color=WORD_COLOURS[w], label=w) for w in seen],
            loc="lower left",
            bbox_to_anchor=(0, 1.0),
            ncols=max(1, len(seen)),
            fontsize=8,
        )
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    return inline(out.getvalue(), f"Availability over time of {len(services)} services")


def render_history_html(runs: pd.DataFrame, changes: pd.DataFrame, table: pd.DataFrame) -> str:
    """The page: the timeline, the availability table and the changes."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("reachtest.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
    )
    return env.get_template("history.html.j2").render(
        runs=runs["batch"].nunique(),
        first=runs["when"].min(),
        last=runs["when"].max(),
        chart=timeline_svg(runs),
        table=table.to_dict("records"),
        changes=changes.fillna("").to_dict("records"),
    )
