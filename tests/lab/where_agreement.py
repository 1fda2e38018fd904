"""One answer to "where" (issue 31): every output of one run says the same hop, address and
words for where each flow stops, and they are the scenario's ground truth.

``disagreements`` renders a run record to every format (the terminal report, Markdown,
HTML: its cards and its path diagram, CSV), judges it as ``run`` does (its summary line,
its textfile metric), collects the exporter's series from it, and reads ``diff``'s words;
for each flow it compares what each says with ``analysis.where`` and with the truth.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable, Mapping
from typing import Any

from reachtest.analysis.diff import stop as diff_stop
from reachtest.analysis.where import of_flow
from reachtest.lab.scenarios import FlowTruth, GroundTruth
from reachtest.report.csvfile import render_csv
from reachtest.report.html import diagram, render_html
from reachtest.report.markdown import render_markdown
from reachtest.report.terminal import render_text
from reachtest.report.view import build_view
from reachtest.schedule import metrics
from reachtest.schedule.config import parse_config
from reachtest.schedule.metrics import parse
from reachtest.schedule.run import judge, where
from reachtest.serve.probe import ProbeCollector, ProbeResult

Record = Mapping[str, Any]


def truth_hop(flow: FlowTruth) -> int:
    """The hop the truth says the flow stops at: the deciding node's (a rejecting router,
    a box answering in the target's name, the target), else the last that answers."""
    return flow.reason_hop if flow.reason_hop is not None else flow.last_hop


def _exported(record: Record, target: Record, judged: list[Any]) -> dict[str, float]:
    """flow -> reachtest_stop_hop of the exporter's series for this target."""
    from prometheus_client import CollectorRegistry, generate_latest

    one = {**record, "targets": [target]}
    result = ProbeResult(
        module="web", host=target["host"], address=target["address"], record=one,
        judged=tuple(judged), success=False, partial=False, duration_s=1.0,
    )  # fmt: skip
    registry = CollectorRegistry()
    registry.register(ProbeCollector(result))
    series = parse(generate_latest(registry).decode())
    return {
        dict(labels)["flow"]: value
        for (name, labels), value in series.items()
        if name == "reachtest_stop_hop"
    }


def disagreements(
    record: Record, truth: GroundTruth, hop_addresses: Callable[[int, bool], set[str]]
) -> list[str]:
    """Every place where an output, or the truth, says another "where" than
    ``analysis.where`` for a flow of ``record``; ``hop_addresses(hop, v6)`` gives the lab's
    addresses of a hop."""
    problems: list[str] = []
    for target in record["targets"]:
        one = {**record, "targets": [target]}  # each output of this target alone
        run = build_view(one)
        (view,) = run.targets
        text = render_text(run, width=400)
        markdown = render_markdown(run)
        page = html.unescape(render_html(run))
        csv_rows = list(csv.DictReader(io.StringIO(render_csv(one))))
        v6 = target["family"] == 6
        services = [f["flow"] for f in target["flows"] if f["flow"] != "icmp"]
        config = parse_config(
            f'[[target]]\nhost = "{target["address"]}"\nname = "t"\n'
            f"services = {services!r}\n".replace("'", '"')
        ).targets[0]
        judged = {j.flow: j for j in judge(config, target, target["address"], traced=True)}
        exported = _exported(record, target, list(judged.values()))
        lanes = {lane.flow: lane.words for lane in diagram(view).lanes}
        verdict_lines: dict[str, str] = {}
        lines = text.splitlines()
        start = lines.index("Verdicts") + 1
        for line in lines[start:]:  # the verdict table, up to Branches (--mda) or Findings
            if not line.startswith(" "):
                break
            verdict_lines.setdefault(line.split()[0], line)
        for flow in target["flows"]:
            label = flow["flow"]
            stopped = of_flow(flow)
            if stopped is None:
                problems.append(f"{target['address']} {label}: no where")
                continue
            said = stopped.words()
            at = f"{target['address']} {label}"
            # The truth: the hop, and one of its addresses.
            want = next((t for t in truth.flows if t.flow.label == label), None)
            if want is not None and not stopped.through:
                hop = truth_hop(want)
                if stopped.hop != hop:
                    problems.append(f"{at}: stops at hop {stopped.hop}, the truth says {hop}")
                elif stopped.address not in hop_addresses(hop, v6) | {target["address"]}:
                    problems.append(f"{at}: hop {hop} is not {stopped.address}")
            outputs = {
                "terminal": said in verdict_lines.get(label, ""),
                "markdown": any(
                    row.startswith(f"| {label} |") and said in row.replace("\\", "")
                    for row in markdown.splitlines()
                ),
                "html card": re.search(
                    rf'<div class="flow">{re.escape(label)}</div>.*?<div class="detail">'
                    rf"{re.escape(said)}[ <]",
                    page,
                    re.S,
                )
                is not None,
                "html diagram": lanes.get(label, "").startswith(said),  # (+ --mtu's words)
                "csv": all(
                    row["where"] == said
                    for row in csv_rows
                    if row["flow"] == label and row["address"] == target["address"]
                ),
            }
            j = judged.get(label)
            if label != "icmp" and j is not None:
                outputs["run"] = where(j) == ("" if stopped.through or j.got == "open" else said)
                outputs["textfile"] = metrics.stop_hop(j) == stopped.metric_hop
                outputs["exporter"] = exported.get(label) == (
                    0 if j.got in ("open", "reachable") else stopped.metric_hop
                )
                outputs["diff"] = diff_stop(flow) == ("" if j.got == "open" else said)
            for name, agrees in outputs.items():
                if not agrees:
                    problems.append(f"{at}: the {name} does not say {said!r}")
    return problems
