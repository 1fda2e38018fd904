"""The terminal report (rich): per target a hop table with a column group per flow, the
verdicts and the findings; the same renderable serves the live view and ``--report``."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from reachtest.report.view import MARK_HELP, Cell, HopRow, Mark, RunView, TargetView

#: Column groups per flow, richest first; the widest that fits the terminal is used.
LEVELS: dict[str, tuple[str, ...]] = {
    "full": ("loss", "snt", "last", "avg", "best", "wrst", "stdev", "javg", "mark"),
    "wide": ("loss", "snt", "last", "avg", "stdev", "javg", "mark"),
    "normal": ("loss", "snt", "last", "avg", "mark"),
    "compact": ("loss", "avg", "mark"),
    "minimal": ("mark",),
}
HEADERS = {
    "loss": "Loss%",
    "snt": "Snt",
    "last": "Last",
    "avg": "Avg",
    "best": "Best",
    "wrst": "Wrst",
    "stdev": "StDev",
    "javg": "Javg",
    "mark": "",
}
WIDTHS = {"loss": 6, "snt": 4, "mark": 7}
NUMBER_WIDTH = 6
HOST_MIN, HOST_MAX = 16, 44
MARK_STYLE = {
    Mark.PASS: "green",
    Mark.REPLY: "bold green",
    Mark.OPEN: "bold green",
    Mark.CLOSED: "bold yellow",
    Mark.PROHIBITED: "bold red",
    Mark.UNREACHABLE: "bold red",
    Mark.FORGED: "bold magenta",
    Mark.LIMITED: "cyan",
    Mark.SILENT: "red",
}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """The live view's status line."""

    round: int
    rounds: int
    elapsed_s: float
    hint: str = "press q to stop"


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    if value < 1:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def _width(column: str) -> int:
    return WIDTHS.get(column, NUMBER_WIDTH)


def _host_text(row: HopRow) -> Text:
    if not row.responders:
        return Text("???", style="dim")
    text = Text()
    for i, r in enumerate(row.responders):
        if i:
            text.append("\n")
        if r.asn:  # -z, as mtr -z shows it: the AS before the address
            text.append(f"[{r.asn}] ", style="dim")
        text.append(r.address)
        if r.name:
            text.append(f" {r.name}", style="dim")
        for entry in _mpls_lines(r.mpls):  # one label per line, as mtr -e prints them
            text.append(f"\n  {entry}", style="dim")
    return text


def _mpls_lines(stack: str | None) -> list[str]:
    return [] if not stack else stack.replace("] [", "]\n[").split("\n")


def _host_width(views: Sequence[TargetView]) -> int:
    longest = max(
        (
            max(
                [
                    len(r.address)
                    + (len(r.name) + 1 if r.name else 0)
                    + (len(r.asn) + 3 if r.asn else 0),
                    *(len(entry) + 2 for entry in _mpls_lines(r.mpls)),
                ]
            )
            for t in views
            for row in t.rows
            for r in row.responders
        ),
        default=HOST_MIN,
    )
    return max(HOST_MIN, min(HOST_MAX, longest))


def choose_level(views: Sequence[TargetView], width: int) -> str:
    """The richest column level whose table fits ``width`` characters."""
    flows = max((len(t.flows) for t in views), default=1)
    fixed = 3 + 1 + _host_width(views) + 1
    for name, columns in LEVELS.items():
        if fixed + flows * sum(_width(c) + 1 for c in columns) <= width:
            return name
    return "minimal"


def _value(cell: Cell, column: str) -> Text:
    match column:
        case "loss":
            style = "red" if cell.loss_pct >= 100 else "yellow" if cell.loss_pct > 0 else ""
            return Text(f"{cell.loss_pct:.1f}%", style=style)
        case "snt":
            return Text(str(cell.snt))
        case "mark":
            return Text(str(cell.mark), style=MARK_STYLE[cell.mark])
        case _:
            return Text(_ms(getattr(cell, f"{column}_ms")))


def hop_table(view: TargetView, level: str, host_width: int) -> Table:
    """The hop table of one target: TTL, who answered, then a column group per flow."""
    columns = LEVELS[level]
    table = Table(
        box=None, pad_edge=False, header_style="bold", show_edge=False, collapse_padding=True
    )
    table.add_column("TTL", justify="right", width=3, no_wrap=True)
    table.add_column("Host", width=host_width, overflow="ellipsis", no_wrap=True)
    for flow in view.flows:
        for i, column in enumerate(columns):
            head = HEADERS[column]
            header = Text(f"{flow if i == 0 else ''}\n{head}")
            if i == 0:
                header.stylize("bold cyan", 0, len(flow))
            table.add_column(
                header,
                justify="left" if column == "mark" else "right",
                width=max(_width(column), len(flow) if i == 0 else 0),
                no_wrap=True,
            )
    for row in view.rows:
        cells: list[RenderableType] = [str(row.ttl), _host_text(row)]
        for cell in row.cells:
            for column in columns:
                cells.append(Text("") if cell is None else _value(cell, column))
        table.add_row(*cells)
    return table


def verdict_table(view: TargetView) -> Table:
    """One line per flow: state, reason, where it stops, rounds that agree."""
    table = Table(box=None, pad_edge=True, show_header=False, show_edge=False)
    table.add_column("flow", style="bold cyan", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("reason", no_wrap=True)
    table.add_column("where")
    table.add_column("rounds", justify="right", style="dim", no_wrap=True)
    for v in view.verdicts:
        style = "bold green" if v.ok else "bold red"
        table.add_row(
            v.flow,
            Text(v.state, style=style),
            v.reason,
            v.detail,
            f"{v.rounds}/{v.rounds_probed}",
        )
    return table


def _wrapped(text: Text, words: str, indent: int, width: int | None) -> None:
    """Append ``words`` to ``text``, wrapped at word boundaries to ``width`` columns (none:
    one line), each line after the first indented by ``indent`` spaces; a word longer than
    a line is kept whole (the terminal folds it) rather than cut."""
    if width is None:
        text.append(words)
        return
    lines = textwrap.wrap(
        words,
        width=max(width, indent + 20),
        subsequent_indent=" " * indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    text.append("\n".join(lines).replace(NBSP, " "))


#: Keeps "(confidence 100%)" on one line when a finding is wrapped.
NBSP = "\u00a0"


def findings_text(view: TargetView, evidence: int = 4, width: int | None = None) -> Text:
    """Findings, most urgent first, each with up to ``evidence`` observations; with a
    ``width``, each wrapped at word boundaries under its first words (never cut)."""
    text = Text()
    if not view.findings:
        text.append("  no findings", style="dim")
        return text
    for i, f in enumerate(view.findings):
        if i:
            text.append("\n")
        head = f"  [{f.severity}] "
        start = len(text)
        _wrapped(text, f"{head}{f.summary} (confidence{NBSP}{f.confidence:.0%})", len(head), width)
        text.stylize(SEVERITY_STYLE.get(f.severity, ""), start, start + len(head))
        said = text.plain.rfind("(confidence")
        text.stylize("dim", said, len(text))
        for line in f.evidence[:evidence]:
            start = len(text)
            text.append("\n")
            _wrapped(text, f"      - {line}", 8, width)
            text.stylize("dim", start, len(text))
        if len(f.evidence) > evidence:
            text.append(f"\n      - ... {len(f.evidence) - evidence} more", style="dim")
    return text


def branches_text(view: TargetView) -> Text:
    """``--mda``: per flow, the hops where its flow hashes part ways, each responder with
    how many hashes met it and how many of those reach the target."""
    text = Text()
    for i, b in enumerate(view.branches):
        if i:
            text.append("\n")
        who = b.address or "(no answer)"
        text.append(f"  {b.flow:<9} hop {b.ttl:<3} ", style="cyan")
        text.append(f"{who:<40} ")
        style = "green" if b.reached == b.ids else "bold red" if b.reached == 0 else "yellow"
        text.append(f"{b.ids} flow hashes, {b.reached} reach the target", style=style)
        if b.outcome not in ("time-exceeded", "answered", "refused"):
            text.append(f" ({b.outcome})", style="dim")
    return text


def _title(view: TargetView) -> Text:
    text = Text()
    text.append(view.host, style="bold")
    aside = [view.address] if view.address != view.host else []
    if view.name and view.name.rstrip(".") != view.host:
        aside.append(view.name)
    if aside:
        text.append(f" ({', '.join(aside)})")
    text.append(": ")
    text.append(view.headline, style="bold green" if view.reachable else "bold red")
    return text


def target_block(view: TargetView, level: str, host_width: int, width: int | None = None) -> Group:
    return Group(
        _title(view),
        hop_table(view, level, host_width),
        *((Text(view.limited_note, style="dim"),) if view.limited_note else ()),
        Text(""),
        Text("Verdicts", style="bold"),
        verdict_table(view),
        *((Text("Branches (--mda)", style="bold"), branches_text(view)) if view.branches else ()),
        Text("Findings", style="bold"),
        findings_text(view, width=width),
    )


def _legend(level: str) -> Text:
    text = Text("Marks: ", style="dim")
    for i, (mark, help_text) in enumerate(MARK_HELP.items()):
        if i:
            text.append(", ", style="dim")
        text.append(str(mark), style=MARK_STYLE[mark])
        text.append(f" = {help_text}", style="dim")
    if level in ("full", "wide", "normal"):
        text.append(". Times in ms.", style="dim")
    return text


def _run_line(run: RunView, progress: Progress | None) -> Text:
    started = run.started.strftime("%Y-%m-%d %H:%M:%S UTC")
    if progress is not None:
        return Text(
            f"round {progress.round}/{progress.rounds} · {progress.elapsed_s:.1f} s elapsed "
            f"· started {started} · {progress.hint}",
            style="bold",
        )
    stopped = " (stopped early)" if run.interrupted else ""
    return Text(
        f"reachtest {run.version} · started {started} · {run.rounds_done}/{run.rounds} rounds"
        f"{stopped} · {run.duration_s:.1f} s · {run.totals_line}",
        style="dim",
    )


def render(run: RunView, width: int, progress: Progress | None = None) -> Group:
    """The whole report for a terminal ``width`` columns wide."""
    level = choose_level(run.targets, width)
    host_width = _host_width(run.targets)
    parts: list[RenderableType] = []
    if progress is not None:  # on top: a tall live view is cropped at the bottom
        parts.append(_run_line(run, progress))
    for i, target in enumerate(run.targets):
        if i:
            parts.append(Text(""))
        parts.append(target_block(target, level, host_width, width))
    parts += [Text(""), _legend(level)]
    if progress is None:
        parts.append(_run_line(run, progress))
    return Group(*parts)


def report_width(run: RunView, minimum: int = 100) -> int:
    """The width of a report printed to a file or pipe: wide enough for the ``normal``
    column level, so nothing wraps (like ``mtr --report``)."""
    flows = max((len(t.flows) for t in run.targets), default=1)
    fixed = 3 + 1 + _host_width(run.targets) + 1
    return max(minimum, fixed + flows * sum(_width(c) + 1 for c in LEVELS["normal"]))


def render_text(run: RunView, width: int | None = None, color: bool = False) -> str:
    """The report as text: plain when ``color`` is False (pipes, files, cron mail)."""
    width = width or report_width(run)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        highlight=False,
        emoji=False,
    )
    console.print(render(run, width))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"
