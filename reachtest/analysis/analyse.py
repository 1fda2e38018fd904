"""The analysis of one run: outcomes in, per-target verdicts, paths, hop stats, findings out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reachtest.analysis import findings as rules
from reachtest.analysis.accumulate import Accumulator, accumulate
from reachtest.analysis.paths import Observed, flow_path, host_verdict, reach, service_verdict
from reachtest.model import (
    Finding,
    FlowPath,
    HopBudget,
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
    #: (flow, TTL) -> non-answers a router's ICMP rate limit explains (not loss).
    limited: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Analysis:
    """A run's analysis: the accumulated outcomes, hop statistics, and per-target
    conclusions; ``findings`` holds every target's findings, most urgent first."""

    accumulated: Accumulator
    targets: tuple[TargetAnalysis, ...]
    findings: tuple[Finding, ...]

    @property
    def hops(self) -> pd.DataFrame:
        """The hop statistics as a table (pandas; the record reads the cells directly)."""
        return self.accumulated.hop_stats()


def analyse(
    outcomes: Iterable[Outcome] | Accumulator,
    params: TraceParams | None = None,
    budgets: Iterable[HopBudget] = (),
) -> Analysis:
    """Analyse a run's outcomes (duplicates and late replies are left out), given as they
    are or already accumulated (what a long run keeps), with what the engine learned of
    the routers' ICMP budgets. Costs the same after ten rounds and after ten thousand."""
    accumulated = outcomes if isinstance(outcomes, Accumulator) else accumulate(outcomes)
    limited = {b.address: b for b in budgets if b.limited}
    targets = tuple(_target(obs, params, limited) for obs in accumulated.targets())
    every = rules.sort_findings([f for t in targets for f in t.findings])
    return Analysis(accumulated=accumulated, targets=targets, findings=tuple(every))


def _target(
    obs: Observed, params: TraceParams | None, budgets: dict[str, HopBudget]
) -> TargetAnalysis:
    reached = reach(obs)
    # Routers the engine found limiting their ICMP errors, at their TTL on this path.
    budget_ttls: dict[int, HopBudget] = {}
    for address, budget in budgets.items():
        ttl = obs.hop_of(address)
        if ttl is not None and (reached.distance is None or ttl < reached.distance):
            budget_ttls[ttl] = budget
    spiky: Counter[int] = Counter()
    paths = {label: flow_path(obs, label, reached, params) for label in obs.flows}
    services = tuple(service_verdict(obs, p, reached) for p in paths.values())
    found: list[Finding] = []
    own_loss: list[Finding] = []
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
        for rule in (rules.rewritten, rules.sequence_rewritten):
            rewrite = rule(obs, label)
            if rewrite is not None:
                found.append(rewrite)
        lost, spikes = rules.loss(obs, path, reached, budget_ttls)
        own_loss += lost
        spiky.update(spikes)
    found += rules.shared_loss(obs, paths.values(), reached, own_loss, budget_ttls)
    # A router limits all its ICMP errors to us, not one flow's: statistical rate limiting
    # must show on most flows tested at the hop (one flow of many is chance).
    tested = rules.tested_ttls(obs, paths.values(), reached)
    limited_ttls = set(budget_ttls) | {h for h, n in spiky.items() if 2 * n >= tested[h]}
    limited_ttls |= rules.pooled_spikes(obs, list(paths.values()), reached, budget_ttls)
    cells = rules.limited_cells(obs, limited_ttls)
    for ttl in sorted(limited_ttls):
        hop_budget = budget_ttls.get(ttl)
        if any(t == ttl for _, t in cells) or (hop_budget is not None and hop_budget.held):
            found.append(rules.rate_limiting(obs, ttl, hop_budget, cells))
    translation = rules.nat(obs)
    if translation is not None:
        found.append(translation)
    found += rules.ecmp(obs)
    found += rules.silent_hops(obs, reached.distance)
    return TargetAnalysis(
        target=obs.target,
        host=host_verdict(obs, reached),
        paths=tuple(paths.values()),
        services=services,
        findings=tuple(rules.sort_findings(found)),
        limited=cells,
    )
