"""The HTML report (jinja2, autoescaped): one self-contained page with verdict cards, the
hop matrix coloured by outcome, latency charts (inline SVG from matplotlib), a path
diagram (inline SVG) and the findings with their evidence. No script, no stylesheet,
font or image from elsewhere: opening it makes no request to any host."""

from __future__ import annotations

from dataclasses import dataclass, replace

from reachtest.report.view import MARK_HELP, Cell, HopRow, Mark, RunView, TargetView

#: The path diagram's geometry (SVG user units).
NODE_DX = 88
LEFT = 96
HEAD = 112
LANE_DY = 26


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """A column of the path diagram: the source (ttl 0) or one hop."""

    x: int
    ttl: int
    label: str
    name: str | None
    target: bool
    #: ``--mda``: the responders the flow hashes met at this hop, when more than one.
    branches: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Lane:
    """One flow of the path diagram, drawn from the source to the hop where it stops."""

    flow: str
    colour: str
    y: int
    end_x: int
    mark: str
    silent_x: int | None  # a dashed stretch to the first hop that stayed silent
    words: str
    #: Bigger packets of this flow die on the link after this x (``--mtu``), and why.
    mtu_x: int | None = None
    mtu_words: str = ""
    #: ``--mda``: some of this flow's hashes die after this x (partially filtered).
    split_x: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagram:
    width: int
    height: int
    nodes: tuple[Node, ...]
    lanes: tuple[Lane, ...]


def divergence(rows: tuple[HopRow, ...]) -> int | None:
    """The TTL of the first row where the flows' marks differ: where paths part."""
    for row in rows:
        marks = {Mark.PASS if c.mark is Mark.LIMITED else c.mark for c in row.cells if c}
        if len(marks) > 1:
            return row.ttl
    return None


def _stop(rows: tuple[HopRow, ...], j: int) -> tuple[int, Cell] | None:
    """Where flow ``j`` stops: its first final answer (the target, a reject), else the
    last hop that forwarded it; None when nothing answered it."""
    found = None
    for i, row in enumerate(rows):
        cell = row.cells[j]
        if cell is None or cell.rcv == 0:
            continue
        if cell.mark not in (Mark.PASS, Mark.LIMITED):
            return i, cell
        found = (i, cell)
    return found


def diagram(view: TargetView) -> Diagram:
    """Hops as nodes, each flow a lane that ends where its probes stop being answered."""
    from reachtest.report.charts import flow_colour

    nodes = [Node(x=LEFT, ttl=0, label="this host", name=None, target=False)]
    for i, row in enumerate(view.rows, start=1):
        first = row.responders[0] if row.responders else None
        nodes.append(
            Node(
                x=LEFT + i * NODE_DX,
                ttl=row.ttl,
                label=first.address if first else "???",
                name=first.name if first else None,
                target=view.reachable and row.ttl == view.distance,
            )
        )
    lanes = []
    said = {flow: (hop, words) for flow, hop, words in view.request_stops}
    told = {v.flow: v.detail for v in view.verdicts}
    for j, flow in enumerate(view.flows):
        last = _stop(view.rows, j)
        y = HEAD + j * LANE_DY
        if flow in said:  # a request: its lane ends where its verdict says, in its words
            lanes.append(_request_lane(view, flow, j, *said[flow]))
            continue
        if last is None:
            end_x, mark, words = LEFT, Mark.SILENT, "no answer from any hop"
            silent_x = LEFT + NODE_DX if view.rows else None
        else:
            i, cell = last
            end_x, mark = LEFT + (i + 1) * NODE_DX, cell.mark
            silent_x = None
            if mark in (Mark.PASS, Mark.LIMITED):
                words = f"forwarded to hop {view.rows[i].ttl}, then silent"
                silent_x = end_x + NODE_DX if i + 1 < len(view.rows) else None
            else:
                words = f"{mark} at hop {view.rows[i].ttl}"
        # The words of the flow's verdict (analysis.where), as every output says them.
        words = told.get(flow, words)
        lanes.append(
            Lane(
                flow=flow,
                colour=flow_colour(j),
                y=y,
                end_x=end_x,
                mark=str(mark),
                silent_x=silent_x,
                words=words,
            )
        )
    # --mda: the hops where flow hashes met several routers, drawn as stacked nodes; a
    # partially filtered flow's lane forks there, the failing branch crossed out.
    met: dict[int, set[str]] = {}
    for b in view.branches:
        if b.address and b.outcome in ("time-exceeded", "answered", "refused"):
            met.setdefault(b.ttl, set()).add(b.address)
    for i, node in enumerate(nodes):
        if len(met.get(node.ttl, ())) > 1:
            nodes[i] = replace(node, branches=tuple(sorted(met[node.ttl])))
    verdicts = {v.flow: v for v in view.verdicts}
    for n, lane in enumerate(lanes):
        verdict = verdicts.get(lane.flow)
        dying = [b for b in view.branches if b.flow == lane.flow and b.address and not b.reached]
        if verdict is None or verdict.state != "partially-filtered" or not dying:
            continue
        at = next((i for i, row in enumerate(view.rows) if row.ttl == dying[0].ttl), None)
        if at is not None:
            # its words are the verdict's already ("4 of 11 flow hashes dropped after ...")
            lanes[n] = replace(lane, split_x=LEFT + (at + 1) * NODE_DX)
    limits = {flow: (hop, mtu, hole) for flow, hop, mtu, hole in view.mtu_limits}
    for n, lane in enumerate(lanes):
        if lane.flow in limits:
            hop, mtu, hole = limits[lane.flow]
            at = next((i for i, row in enumerate(view.rows) if row.ttl == hop), None)
            if at is not None:
                how = "vanish (no frag-needed: a black hole)" if hole else "get frag-needed"
                dies = f"packets above {mtu} bytes {how} after hop {hop}"
                lanes[n] = replace(
                    lane, mtu_x=LEFT + (at + 1) * NODE_DX + NODE_DX // 2, mtu_words=dies,
                    words=f"{lane.words}; {dies}",
                )  # fmt: skip
    longest = max((len(lane.words) for lane in lanes), default=0)
    width = LEFT + max(len(view.rows), 1) * NODE_DX + max(150, round(6.5 * longest) + 30)
    return Diagram(
        width=width,
        height=HEAD + len(lanes) * LANE_DY,
        nodes=tuple(nodes),
        lanes=tuple(lanes),
    )


def _request_lane(view: TargetView, flow: str, j: int, hop: int | None, words: str) -> Lane:
    """The lane of a request traced after the handshake: to the box's hop (forged: a
    reset or an answer in the server's name; silent: dropped, dashed to the next hop), or
    to the server when it is answered."""
    from reachtest.report.charts import flow_colour

    at = next((i for i, row in enumerate(view.rows) if row.ttl == hop), None)
    end_x = LEFT + (at + 1) * NODE_DX if at is not None else LEFT
    cells = [row.cells[j] for row in view.rows if row.cells[j] is not None]
    if words.startswith("answered"):
        mark = Mark.OPEN
    elif any(c.mark is Mark.FORGED for c in cells if c is not None):
        mark = Mark.FORGED
    else:
        mark = Mark.SILENT
    dashed = end_x + NODE_DX if mark is Mark.SILENT and at is not None else None
    return Lane(
        flow=flow, colour=flow_colour(j), y=HEAD + j * LANE_DY, end_x=end_x, mark=str(mark),
        silent_x=dashed if at is not None and at + 1 < len(view.rows) else None, words=words,
    )  # fmt: skip


def _title(run: RunView) -> str:
    hosts = ", ".join(t.host for t in run.targets[:3])
    if len(run.targets) > 3:
        hosts += f" and {len(run.targets) - 3} more"
    return f"reachtest: {hosts}"


def render_html(run: RunView) -> str:
    """The whole report as one HTML document."""
    from jinja2 import Environment, PackageLoader, StrictUndefined
    from markupsafe import Markup

    from reachtest.report.charts import latency_svg, series_svg

    env = Environment(
        loader=PackageLoader("reachtest.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    targets = [
        {
            "view": t,
            "diverge": divergence(t.rows),
            "diagram": diagram(t),
            # Our own SVG: matplotlib escapes every text it draws (flow labels included).
            "chart": Markup(latency_svg(t, str(i))) if t.rows else None,
            "timeline": Markup(svg) if (svg := series_svg(t, str(i))) is not None else None,
        }
        for i, t in enumerate(run.targets)
    ]
    return env.get_template("report.html.j2").render(
        run=run,
        title=_title(run),
        targets=targets,
        marks=list(MARK_HELP.items()),
        lane_top=HEAD,
    )
