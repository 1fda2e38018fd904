"""The analysis of one run: outcomes in, per-target verdicts, paths, hop stats, findings out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reachtest.analysis import findings as rules
from reachtest.analysis.paths import (
    Observed,
    flow_path,
    host_verdict,
    observe,
    reach,
    service_verdict,
)
from reachtest.analysis.stats import hop_stats
from reachtest.analysis.table import outcome_table
from reachtest.model import (
    Finding,
    FlowPath,
    HostVerdict,
    Outcome,
    ServiceVerdict,
    StopReason,
    TraceParams,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TargetAnalysis:
    """Everything concluded about one target."""

    target: str
    host: HostVerdict
    paths: tuple[FlowPath, ...]
    services: tuple[ServiceVerdict, ...]
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Analysis:
    """A run's analysis: the outcome table, hop statistics, and per-target conclusions;
    ``findings`` holds every target's findings, most urgent first."""

    table: pd.DataFrame
    hops: pd.DataFrame
    targets: tuple[TargetAnalysis, ...]
    findings: tuple[Finding, ...]


def analyse(outcomes: Iterable[Outcome], params: TraceParams | None = None) -> Analysis:
    """Analyse a run's outcomes (duplicates and late replies are left out)."""
    table = outcome_table(outcomes)
    return analyse_table(table, params)


def analyse_table(table: pd.DataFrame, params: TraceParams | None = None) -> Analysis:
    """Analyse an outcome table (see ``outcome_table``)."""
    targets = tuple(_target(obs, params) for obs in observe(table))
    every = rules.sort_findings([f for t in targets for f in t.findings])
    return Analysis(table=table, hops=hop_stats(table), targets=targets, findings=tuple(every))


def _target(obs: Observed, params: TraceParams | None) -> TargetAnalysis:
    reached = reach(obs)
    paths = {label: flow_path(obs, label, reached, params) for label in obs.flows}
    services = tuple(service_verdict(obs, p, reached) for p in paths.values())
    found: list[Finding] = []
    if reached.distance is None:
        found.append(rules.host_not_reached(obs, paths))
    for label, path in paths.items():
        if path.stop is StopReason.SILENT:
            block = rules.blocked(obs, path, reached)
            if block is not None:
                found.append(block)
        elif path.stop in (StopReason.ADMIN_PROHIBITED, StopReason.UNREACHABLE):
            found.append(rules.rejected(obs, path))
        elif path.stop is StopReason.MIDDLEBOX:
            found.append(rules.forged(obs, path, reached))
        rewrite = rules.rewritten(obs, label)
        if rewrite is not None:
            found.append(rewrite)
        found += rules.loss(obs, path, reached)
    found = rules.shared_rate_limits(obs, paths.values(), reached, found)
    found += rules.ecmp(obs)
    found += rules.silent_hops(obs, reached.distance)
    return TargetAnalysis(
        target=obs.target,
        host=host_verdict(obs, reached),
        paths=tuple(paths.values()),
        services=services,
        findings=tuple(rules.sort_findings(found)),
    )
