"""What changed between two runs (before and after a firewall change): each service's
state and where it stops, each hop's responders, and latency and loss per hop, tested
for significance so that noise is not reported as change.

Works on run records (the canonical JSON form); pure functions, no I/O.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reachtest.analysis.where import of_flow, of_request
from reachtest.model import UNRESOLVED

#: p-value below which a latency or loss difference at a hop counts as a change.
SIGNIFICANT = 0.01
#: Fewer RTT samples than this on either side: no latency test.
MIN_SAMPLES = 3
#: A latency change smaller than this (ms, in medians) is not reported, however sure.
MIN_RTT_CHANGE_MS = 0.5

Record = Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceChange:
    """One flow of one target, before and after."""

    target: str
    flow: str
    before: str | None  # open, closed, filtered, open|filtered, reachable, unreachable
    after: str | None  # None: the flow is not in that run
    reason_before: str | None
    reason_after: str | None
    stop_before: str | None  # where it stops, in words ('' when it gets through)
    stop_after: str | None
    change: str  # regression, improvement, changed, moved, same, new, gone


@dataclass(frozen=True, slots=True, kw_only=True)
class HopChange:
    """A hop of a flow whose responders changed, or whose latency or loss changed
    significantly."""

    target: str
    flow: str
    ttl: int
    responders_before: tuple[str, ...]
    responders_after: tuple[str, ...]
    rtt_before_ms: float | None  # medians
    rtt_after_ms: float | None
    rtt_p: float | None  # Mann-Whitney U, two-sided
    loss_before: tuple[int, int]  # (lost, sent)
    loss_after: tuple[int, int]
    loss_p: float | None  # Fisher's exact, two-sided
    path_changed: bool
    rtt_changed: bool
    loss_changed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDiff:
    before: str  # what the user named: a file, "run 12"
    after: str
    before_started: str
    after_started: str
    services: tuple[ServiceChange, ...]
    hops: tuple[HopChange, ...]

    @property
    def regressions(self) -> tuple[ServiceChange, ...]:
        return tuple(s for s in self.services if s.change == "regression")

    @property
    def changed(self) -> bool:
        return any(s.change != "same" for s in self.services) or bool(self.hops)


def word(flow: Mapping[str, Any]) -> str:
    """A flow's state; for ICMP whether the host answered; ``unresolved`` for a flow of
    a target whose name did not resolve."""
    if flow.get("unresolved"):
        return UNRESOLVED
    verdict = flow["verdict"]
    if flow["protocol"] == "icmp":
        return "reachable" if verdict and verdict["reached"] else "unreachable"
    return str(verdict["state"]) if verdict and verdict["state"] else "filtered"


def stop(flow: Mapping[str, Any]) -> str:
    """Where a flow stops, in words (``analysis.where``, as every report says it); '' when
    it gets through or nothing says."""
    if word(flow) in ("open", "reachable") or not flow["path"]:
        return ""
    stopped = of_flow(flow)
    return stopped.words() if stopped is not None else ""


_THROUGH = ("open", "reachable", "answered")


def classify(before: str | None, after: str | None, stop_before: str, stop_after: str) -> str:
    """regression (it got through, now it does not), improvement (the reverse), changed
    (another state), moved (same state, stops elsewhere), same, new, gone."""
    if before is None:
        return "new"
    if after is None:
        return "gone"
    if before in _THROUGH and after not in _THROUGH:
        return "regression"
    if before not in _THROUGH and after in _THROUGH:
        return "improvement"
    if before != after:
        return "changed"
    if stop_before and stop_after and stop_before != stop_after:
        return "moved"
    return "same"


def _requests(target: Mapping[str, Any]) -> dict[str, tuple[str, str | None, str]]:
    """``tls/443 NAME`` -> (state, reason, where it is blocked in words) of each request
    traced after the handshake."""
    found = {}
    for r in target.get("requests", ()):
        where = ""
        if r["state"] != "answered" and r["box_hop"] is not None:
            where = of_request(r).words()
        found[f"{r['flow']} {r['name']}"] = (r["state"], r["reason"], where)
    return found


def _mtus(target: Mapping[str, Any]) -> dict[str, tuple[int, str, str]]:
    """``FLOW path MTU`` -> (bytes, the state in a word: ``path-mtu`` or ``black-hole``,
    where bigger packets die in words) of each flow measured with ``--mtu``."""
    found = {}
    for m in target.get("mtu", ()):
        if m["mtu"] is None:
            continue
        where = ""
        if m["limit"] is not None and m["hop"] is not None:
            how = "vanish" if m["black_hole"] else "get frag-needed"
            where = f"above {m['mtu']} bytes {how} after hop {m['hop']}"
        found[f"{m['flow']} path MTU"] = (
            m["mtu"], "black-hole" if m["black_hole"] else "path-mtu", where,
        )  # fmt: skip
    return found


def _mtu_change(before: tuple[int, str, str] | None, after: tuple[int, str, str] | None) -> str:
    """A black hole that appears, or a smaller MTU, is a regression; the reverse an
    improvement."""
    if before is None:
        return "new"
    if after is None:
        return "gone"
    worse = (after[1] == "black-hole", -after[0]) > (before[1] == "black-hole", -before[0])
    better = (after[1] == "black-hole", -after[0]) < (before[1] == "black-hole", -before[0])
    return "regression" if worse else "improvement" if better else (
        "moved" if before[2] != after[2] else "same"
    )  # fmt: skip


def _by_target(record: Record) -> dict[str, Mapping[str, Any]]:
    """host -> target entry; a target that did not resolve has flows that say so."""
    found: dict[str, Mapping[str, Any]] = {t["host"]: t for t in record["targets"]}
    for gone in record.get("unresolved", ()):
        flows = [unresolved_flow(label) for label in gone["flows"]]
        found.setdefault(gone["host"], {"host": gone["host"], "flows": flows})
    return found


def unresolved_flow(label: str) -> dict[str, Any]:
    """A flow of a target that did not resolve, as the record's flows are read here."""
    return {"flow": label, "protocol": label.partition("/")[0], "verdict": None,
            "path": None, "hops": [], "unresolved": True}  # fmt: skip


def _lost(hop: Mapping[str, Any]) -> tuple[int, int]:
    """(lost, sent) at a hop, leaving out the non-answers a router's ICMP rate limit
    explains: they are its budget, not loss, and no change of loss is read from them."""
    limited = int(hop.get("limited", 0))
    return int(hop["snt"]) - int(hop["rcv"]) - limited, int(hop["snt"]) - limited


def _rtts(hop: Mapping[str, Any]) -> list[float]:
    return [s["rtt_ms"] for s in hop["samples"] if s["rtt_ms"] is not None]


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return round(ordered[middle], 3)
    return round((ordered[middle - 1] + ordered[middle]) / 2, 3)


def _p(value: Any) -> float | None:
    p = float(value)
    return p if math.isfinite(p) else None


#: Above this many probes at a hop, loss is compared with the chi-square test: Fisher's
#: exact test costs time in the counts (a crafted record's 10^12 ran for minutes) and
#: gives the same answer on samples this large.
EXACT_MAX = 100_000


def _loss_p(table: Any) -> float | None:
    """p-value of a change of loss between two (lost, got) rows."""
    from scipy.stats import chi2_contingency, fisher_exact

    if table.sum(axis=1).max() <= EXACT_MAX:
        return _p(fisher_exact(table, alternative="two-sided").pvalue)
    try:
        return _p(chi2_contingency(table.astype(float)).pvalue)
    except ValueError:  # a column of zeros: no test
        return None


def hop_change(target: str, flow: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> HopChange:
    """The same TTL of the same flow in two runs, compared."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    before = tuple(sorted(r["address"] for r in a["responders"]))
    after = tuple(sorted(r["address"] for r in b["responders"]))
    rtt_a, rtt_b = _rtts(a), _rtts(b)
    rtt_p = None
    loss_a, loss_b = _lost(a), _lost(b)
    loss_p = None
    # Odd samples (all equal, a few huge values from a crafted record) make scipy warn on
    # stderr; the p-value then says "no evidence" by itself, NaN is read as no test.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(rtt_a) >= MIN_SAMPLES and len(rtt_b) >= MIN_SAMPLES:
            rtt_p = _p(mannwhitneyu(rtt_a, rtt_b, alternative="two-sided").pvalue)
        if all(0 <= lost <= sent and sent > 0 for lost, sent in (loss_a, loss_b)):
            table = np.array(
                [[loss_a[0], loss_a[1] - loss_a[0]], [loss_b[0], loss_b[1] - loss_b[0]]]
            )
            loss_p = _loss_p(table)
    med_a, med_b = _median(rtt_a), _median(rtt_b)
    rtt_changed = (
        rtt_p is not None
        and rtt_p < SIGNIFICANT
        and med_a is not None
        and med_b is not None
        and abs(med_b - med_a) >= MIN_RTT_CHANGE_MS
    )
    return HopChange(
        target=target,
        flow=flow,
        ttl=int(a["ttl"]),
        responders_before=before,
        responders_after=after,
        rtt_before_ms=med_a,
        rtt_after_ms=med_b,
        rtt_p=rtt_p,
        loss_before=loss_a,
        loss_after=loss_b,
        loss_p=loss_p,
        path_changed=bool(before and after and before != after),
        rtt_changed=rtt_changed,
        loss_changed=loss_p is not None and loss_p < SIGNIFICANT,
    )


def diff_runs(
    before: Record,
    after: Record,
    *,
    before_name: str = "before",
    after_name: str = "after",
    target: str | None = None,
) -> RunDiff:
    """Every service of the targets in either run, and the hops that changed."""
    old, new = _by_target(before), _by_target(after)
    names = [n for n in dict.fromkeys([*old, *new]) if target is None or n == target]
    services: list[ServiceChange] = []
    hops: list[HopChange] = []
    for name in names:
        flows_a = {f["flow"]: f for f in old[name]["flows"]} if name in old else {}
        flows_b = {f["flow"]: f for f in new[name]["flows"]} if name in new else {}
        for label in dict.fromkeys([*flows_a, *flows_b]):
            fa, fb = flows_a.get(label), flows_b.get(label)
            sa, sb = (stop(fa) if fa else ""), (stop(fb) if fb else "")
            wa, wb = (word(fa) if fa else None), (word(fb) if fb else None)
            services.append(
                ServiceChange(
                    target=name,
                    flow=label,
                    before=wa,
                    after=wb,
                    reason_before=fa["verdict"]["reason"] if fa and fa["verdict"] else None,
                    reason_after=fb["verdict"]["reason"] if fb and fb["verdict"] else None,
                    stop_before=sa if fa else None,
                    stop_after=sb if fb else None,
                    change=classify(wa, wb, sa, sb),
                )
            )
            if fa and fb:
                by_ttl = {h["ttl"]: h for h in fb["hops"]}
                for hop in fa["hops"]:
                    if hop["ttl"] in by_ttl:
                        change = hop_change(name, label, hop, by_ttl[hop["ttl"]])
                        if change.path_changed or change.rtt_changed or change.loss_changed:
                            hops.append(change)
        requests_a = _requests(old.get(name, {}))
        requests_b = _requests(new.get(name, {}))
        for label in dict.fromkeys([*requests_a, *requests_b]):
            ra, rb = requests_a.get(label), requests_b.get(label)
            services.append(
                ServiceChange(
                    target=name,
                    flow=label,
                    before=ra[0] if ra else None,
                    after=rb[0] if rb else None,
                    reason_before=ra[1] if ra else None,
                    reason_after=rb[1] if rb else None,
                    stop_before=ra[2] if ra else None,
                    stop_after=rb[2] if rb else None,
                    change=classify(
                        ra[0] if ra else None, rb[0] if rb else None,
                        ra[2] if ra else "", rb[2] if rb else "",
                    ),
                )
            )  # fmt: skip
        mtus_a, mtus_b = _mtus(old.get(name, {})), _mtus(new.get(name, {}))
        for label in dict.fromkeys([*mtus_a, *mtus_b]):
            ma, mb = mtus_a.get(label), mtus_b.get(label)
            services.append(
                ServiceChange(
                    target=name, flow=label, before=str(ma[0]) if ma else None,
                    after=str(mb[0]) if mb else None, reason_before=ma[1] if ma else None,
                    reason_after=mb[1] if mb else None, stop_before=ma[2] if ma else None,
                    stop_after=mb[2] if mb else None, change=_mtu_change(ma, mb),
                )
            )  # fmt: skip
    return RunDiff(
        before=before_name,
        after=after_name,
        before_started=str(before["started"]),
        after_started=str(after["started"]),
        services=tuple(services),
        hops=tuple(hops),
    )
