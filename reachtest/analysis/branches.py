"""Per-branch verdicts: a flow's identifiers (source ports, echo identifiers) spread over a
load-balanced path, judged together (see ``engine/multipath.py`` for how they are sent).

An identifier *reaches* the target when every round of its fate got the target's answer
or refusal, and *fails* when none did: a fate that changed between rounds is chance
(loss), not the path. When some identifiers reach the target and others fail, stably,
the flow is **partially filtered**: the failing ones stop at a branch the others do not
take. Where: the last hop that answered the failing identifiers (a drop), or the router
that rejected them, and the hop where their path left the others' (the fork).

Duck-typed on the exploration (``fates``, ``paths``, ``flow_ids``, ``ttls``): analysis
imports no engine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

ALL_REACHED = "all-reached"
PARTIAL = "partially-filtered"
NONE_REACHED = "none-reached"
UNSTABLE = "unstable"

_REACHED = ("answered", "refused")
_AT_HOP = ("time-exceeded", "answered", "refused")


@dataclass(frozen=True, slots=True, kw_only=True)
class BranchVerdict:
    """What the identifiers of one flow say about its branches."""

    flow: str
    state: str  # all-reached | partially-filtered | none-reached | unstable
    total: int  # identifiers whose fate was measured
    failing: tuple[int, ...]  # stable failures
    unstable: tuple[int, ...]  # fates that changed between rounds
    how: str | None = None  # dropped | rejected (partially filtered)
    hop: int | None = None  # the last hop the failing identifiers passed, or the rejecting one
    address: str | None = None  # that hop's (or the rejecting router's) address
    fork_hop: int | None = None  # the first hop where failing and reaching paths differ
    passing_via: tuple[str, ...] = ()  # the reaching identifiers' responders at the fork
    widest: int = 1  # the most responders one hop showed
    widest_hop: int | None = None

    @property
    def share_pct(self) -> float:
        return round(100.0 * len(self.failing) / self.total, 1) if self.total else 0.0

    def summary(self) -> str:
        """The verdict in one sentence, for the finding and the report."""
        if self.state != PARTIAL:
            if self.widest > 1:
                return (
                    f"{self.flow}: {self.widest} branches at hop {self.widest_hop};"
                    f" {self.total - len(self.failing)} of {self.total} flow hashes reach"
                    " the target"
                    + ("" if not self.unstable else f", {len(self.unstable)} by chance")
                )
            return f"{self.flow}: one path; {self.total} flow hashes, the same fate"
        where = f"hop {self.hop}" + (f" ({self.address})" if self.address else "")
        stop = (
            f"silently dropped after {where}" if self.how == "dropped" else f"rejected by {where}"
        )
        fork = ""
        if self.fork_hop is not None and self.passing_via:
            fork = (
                f"; the path forks at hop {self.fork_hop}, where the flows that pass go via"
                f" {', '.join(self.passing_via)}"
            )
        return (
            f"{self.flow} is partially filtered: {len(self.failing)} of {self.total} flow"
            f" hashes (source ports) die on one branch, {stop}, each one every time; the"
            f" other {self.total - len(self.failing)} reach the target{fork}. Connections"
            " fail or pass by their source port: some users see it, others do not"
        )


def _fate(outcomes: Any) -> str | None:
    """'reached', 'failed' or None (the rounds disagree, or none was measured)."""
    kinds = {o.outcome in _REACHED for o in outcomes}
    if kinds == {True}:
        return "reached"
    if kinds == {False}:
        return "failed"
    return None


def judge_branches(exploration: Any) -> BranchVerdict:
    """The per-branch verdict of one explored flow."""
    fates = exploration.fates
    paths: dict[int, dict[int, Any]] = exploration.paths
    measured = [i for i in exploration.flow_ids if fates.get(i)]
    fate = {i: _fate(fates[i]) for i in measured}
    reached = [i for i in measured if fate[i] == "reached"]
    failing = tuple(i for i in measured if fate[i] == "failed")
    unstable = tuple(i for i in measured if fate[i] is None)
    widest, widest_hop = 1, None
    for ttl in sorted(paths):
        seen = {p.responder for p in paths[ttl].values() if p.outcome in _AT_HOP and p.responder}
        if len(seen) > widest:
            widest, widest_hop = len(seen), ttl
    base = {
        "flow": exploration.flow, "total": len(measured), "failing": failing,
        "unstable": unstable, "widest": widest, "widest_hop": widest_hop,
    }  # fmt: skip
    if not measured:
        return BranchVerdict(state=UNSTABLE, **base)
    if not failing:
        return BranchVerdict(state=ALL_REACHED if not unstable else UNSTABLE, **base)
    if not reached:
        return BranchVerdict(state=NONE_REACHED, **base)
    # Where the failing identifiers stop: a router's rejection names itself; otherwise the
    # last hop that answered them.
    rejections = Counter(
        o.responder for i in failing for o in fates[i] if o.outcome == "rejected" and o.responder
    )
    rejected_at = Counter(
        p.responder
        for ttl in paths
        for i in failing
        if (p := paths[ttl].get(i)) is not None and p.outcome == "rejected" and p.responder
    )
    rejections.update(rejected_at)
    last: Counter[tuple[int, str]] = Counter()
    for i in failing:
        answered = [
            (ttl, p.responder)
            for ttl in sorted(paths)
            if (p := paths[ttl].get(i)) is not None and p.outcome == "time-exceeded" and p.responder
        ]
        if answered:
            last[answered[-1]] += 1
    how, hop, address = "dropped", None, None
    if rejections:
        how = "rejected"
        address = rejections.most_common(1)[0][0]
        hops = [
            ttl for ttl in sorted(paths) for p in paths[ttl].values()
            if p.responder == address and p.outcome == "time-exceeded"
        ]  # fmt: skip
        hop = hops[0] if hops else None
    elif last:
        (hop, address), _ = last.most_common(1)[0]
    # The fork: the first hop where a failing identifier's responder is one no reaching
    # identifier met there.
    fork_hop, passing_via = None, ()
    for ttl in sorted(paths):
        row = paths[ttl]
        good = {p.responder for i in reached if (p := row.get(i)) is not None and p.responder}
        bad = {
            p.responder for i in failing
            if (p := row.get(i)) is not None and p.outcome == "time-exceeded" and p.responder
        }  # fmt: skip
        if bad - good:
            fork_hop, passing_via = ttl, tuple(sorted(good))
            break
    return BranchVerdict(
        state=PARTIAL, how=how, hop=hop, address=address, fork_hop=fork_hop,
        passing_via=passing_via, **base,
    )  # fmt: skip
