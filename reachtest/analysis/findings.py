"""Findings: where and how each flow dies, middleboxes, loss that is and is not loss, ECMP.

Each rule compares a flow with the reference flows of the same target (ICMP and the
other services) TTL by TTL, and keeps the observations that prove it as evidence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from reachtest.analysis.paths import TE, TIMEOUT, Observed, Reach, Row, closer_than_claimed
from reachtest.model import (
    Evidence,
    Finding,
    FindingKind,
    FlowPath,
    HopBudget,
    Protocol,
    ReplyKind,
    Severity,
    StopReason,
)

SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
#: p-value below which a difference in loss between hops counts (Fisher's exact test).
SIGNIFICANT = 0.01
#: p-value below which the loss after the starting hop counts as persisting (a second,
#: weaker test on fewer probes).
PERSISTS = 0.05
MIN_LOST = 3
#: How much more loss (as a fraction) a hop must show than the hops after it to be called
#: rate limiting: noise in a lossy path is not a rate limit.
RATE_LIMIT_MARGIN = 0.25


def evidence(obs: Observed, label: str, ttl: int) -> list[Evidence]:
    """What ``label`` got at ``ttl``, one Evidence per (kind, responder)."""
    rows = obs.at(label, ttl)
    counts = obs.kinds(label, ttl)
    return [
        Evidence(
            flow=obs.flows[label],
            ttl=ttl,
            kind=ReplyKind(kind),
            responder=responder,
            count=n,
            of=rows.total(),
        )
        for (kind, responder), n in sorted(
            counts.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1] or "")
        )
    ]


def _answered(obs: Observed, label: str, ttl: int) -> bool:
    return any(responder for _, responder, _, _ in obs.at(label, ttl))


def _silent_rounds(obs: Observed, label: str, ttl: int) -> tuple[int, int]:
    rows = obs.at(label, ttl)
    return sum(n for r, n in rows.items() if r[0] == TIMEOUT), rows.total()


def blocked(obs: Observed, path: FlowPath, reached: Reach) -> Finding | None:
    """A flow that goes silent while reference flows get further: where, with evidence."""
    label = path.flow.label
    k = path.last_hop or 0
    nxt = k + 1
    others = [o for o in obs.flows if o != label]
    refs = [o for o in others if _answered(obs, o, nxt)]
    last: int | None = nxt
    note = ""
    if not refs:
        later = sorted(
            t for t in obs.answered_ttls() if t > nxt and any(_answered(obs, o, t) for o in others)
        )
        if later:
            last = later[0]
            refs = [o for o in others if _answered(obs, o, last)]
            note = f"hops {nxt}..{last - 1} answer no protocol, so the drop cannot be placed closer"
        elif not others:
            last = None
            note = "no other flow was traced to compare with"
        else:
            return None  # nothing beyond this point answers anything: host-not-reached says it
    silent, of = _silent_rounds(obs, label, nxt)
    if not silent:
        return None  # its probes there are still in flight: no silence seen yet
    proof: list[Evidence] = []
    if k:
        proof += evidence(obs, label, k)
    proof += evidence(obs, label, nxt)
    if last is not None and last != nxt:
        proof += evidence(obs, label, last)
    for ref in refs:
        proof += evidence(obs, ref, last if last is not None else nxt)
    udp = path.flow.protocol is Protocol.UDP
    router_answered = any(
        r[0] != TIMEOUT and r[1] and r[1] != obs.target
        for ref in refs
        for r in obs.at(ref, last if last is not None else nxt)
    )
    silent_proofs = obs.proofs[label][nxt][False] if nxt in obs.proofs[label] else 0
    proven = not router_answered or silent_proofs > 0
    if path.flow.protocol is Protocol.ICMP:
        kind, severity = FindingKind.PING_BLOCKED, Severity.WARNING
    elif last is not None and last == reached.distance:
        kind = FindingKind.NO_ANSWER_AT_TARGET
        severity = Severity.WARNING if udp else Severity.CRITICAL
        if udp:
            note = (note + "; " if note else "") + (
                "open|filtered: a UDP service may ignore the probe, or a filter drops it"
            )
    else:
        kind, severity = FindingKind.BLOCKED_SILENTLY, Severity.CRITICAL
    if last is None:
        severity = Severity.WARNING
    if router_answered:
        if proven:
            probes = "a probe" if silent_proofs == 1 else f"{silent_proofs} probes"
            proof_note = (
                f"proven: {probes} sent alone at TTL {nxt} after the router's ICMP budget "
                "refilled stayed silent too"
            )
        else:
            severity = Severity.WARNING
            proof_note = (
                f"not proven: no probe was sent alone at TTL {nxt} after the router's ICMP "
                "budget refilled, so a rate limit cannot be ruled out"
            )
        note = (note + "; " if note else "") + proof_note
    return Finding(
        kind=kind,
        severity=severity,
        target=obs.target,
        flow=path.flow,
        first_hop=k or None,
        last_hop=last,
        responder=path.last_address,
        confidence=silent / of if of else 0.0,
        evidence=tuple(proof),
        note=note,
    )


def rejected(obs: Observed, path: FlowPath) -> Finding:
    """A flow answered by admin-prohibited or unreachable: the device that said so."""
    label = path.flow.label
    rows = obs.seen[label]
    ttl = min(t for t, r in rows.items() if any(x[0] not in (TE, TIMEOUT) and x[1] for x in r))
    proof = evidence(obs, label, ttl)
    if path.stop_hop and path.stop_hop != ttl:
        proof = evidence(obs, label, path.stop_hop) + proof
    agree = sum(e.count for e in proof if e.ttl == ttl and e.responder == path.stop_address)
    of = obs.at(label, ttl).total()
    admin = path.stop is StopReason.ADMIN_PROHIBITED
    note = "" if admin or path.icmp_code is None else f"ICMP code {path.icmp_code}"
    return Finding(
        kind=FindingKind.BLOCKED_PROHIBITED if admin else FindingKind.UNREACHABLE,
        severity=Severity.CRITICAL,
        target=obs.target,
        flow=path.flow,
        first_hop=path.stop_hop,
        last_hop=path.stop_hop,
        responder=path.stop_address,
        confidence=agree / of if of else 0.0,
        evidence=tuple(proof),
        note=note,
    )


def forged(obs: Observed, path: FlowPath, reached: Reach) -> Finding:
    """An RST or SYN-ACK with the target's address for a probe that cannot have reached it."""
    label = path.flow.label
    ttl = reached.forged[label]
    proof = evidence(obs, label, ttl)
    kinds = {e.kind for e in proof}
    for ref in obs.flows:
        if ref != label and any(r[0] == TE for r in obs.at(ref, ttl)):
            proof += [e for e in evidence(obs, ref, ttl) if e.kind is ReplyKind.TIME_EXCEEDED]
    reset = ReplyKind.TCP_RST in kinds
    agree = sum(
        e.count for e in proof if e.ttl == ttl and e.flow == path.flow and e.responder == obs.target
    )
    of = obs.at(label, ttl).total()
    note = f"answered in the target's name at TTL {ttl}, where other flows still meet routers"
    if not any(max(obs.te_ttls(o), default=0) >= ttl for o in obs.seen if o != label):
        closer = closer_than_claimed(obs, label, ttl)
        if closer is not None:
            back, reference, basis = closer
            than = (
                f"the target's answers on other flows cross {reference}"
                if basis == "flows"
                else f"the time-exceeded of hop {ttl - 1} crosses {reference}"
            )
            note = (
                f"answered in the target's name from TTL {ttl}, but its answers crossed "
                f"{back:g} routers on the way back, where {than}: a box at or before "
                f"hop {ttl - 1} answered (reply TTLs)"
            )
    return Finding(
        kind=FindingKind.FORGED_RESET if reset else FindingKind.SYN_PROXY,
        severity=Severity.CRITICAL if reset else Severity.WARNING,
        target=obs.target,
        flow=path.flow,
        first_hop=path.stop_hop,
        last_hop=ttl,
        responder=path.stop_address,
        confidence=agree / of if of else 0.0,
        evidence=tuple(proof),
        note=note,
    )


SYN_ACK = str(ReplyKind.TCP_SYN_ACK)
#: Quoted fields a source NAT changes (the address, the port or echo identifier): the
#: NAT finding covers them, one for every flow. ``ack``: a SYN-ACK acknowledging no SYN
#: of ours (see ``sequence_rewritten``).
NAT_FIELDS = frozenset({"src", "port"})
NOT_QUOTED = NAT_FIELDS | {"ack"}


def _changed(row: Row) -> set[str]:
    return set(row[2].split(",")) if row[2] else set()


def rewritten(obs: Observed, label: str) -> Finding | None:
    """Quoted headers that differ from what was sent, other than a NAT's changes (see
    ``nat``): DSCP or length rewritten before that hop."""
    changed = sorted(
        (t, ",".join(sorted(_changed(r) - NOT_QUOTED)))
        for t, rows in obs.seen[label].items()
        for r in rows
        if _changed(r) - NOT_QUOTED
    )
    if not changed:
        return None
    ttl, fields = changed[0]
    return Finding(
        kind=FindingKind.QUOTE_REWRITTEN,
        severity=Severity.INFO,
        target=obs.target,
        flow=obs.flows[label],
        first_hop=ttl - 1 or None,
        last_hop=ttl,
        responder=None,
        confidence=1.0,
        evidence=tuple(evidence(obs, label, ttl)),
        note=f"quoted fields changed on the way: {fields}",
    )


def sequence_rewritten(obs: Observed, label: str) -> Finding | None:
    """SYN-ACKs from the target whose acknowledgment number names no SYN of ours: a box
    on the path (a sequence randomiser) changed the sequence numbers and did not change
    them back. The service answered all the same: open, matched to the oldest probe."""
    cells = obs.seen[label].items()
    off = sorted((t, n) for t, rows in cells for r, n in rows.items() if "ack" in _changed(r))
    if not off:
        return None
    ttl = off[0][0]
    answers = sum(n for _, rows in cells for r, n in rows.items() if r[0] == SYN_ACK)
    return Finding(
        kind=FindingKind.SEQUENCE_REWRITTEN,
        severity=Severity.INFO,
        target=obs.target,
        flow=obs.flows[label],
        first_hop=None,
        last_hop=ttl,
        responder=None,
        confidence=1.0,
        evidence=tuple(evidence(obs, label, ttl)),
        note=(
            f"{sum(n for _, n in off)} of {answers} SYN-ACKs acknowledge no SYN we sent: "
            "counted as the service's answers (open), each to the oldest unanswered probe"
        ),
    )


def nat(obs: Observed) -> Finding | None:
    """A source NAT that does not restore the quotes of ICMP errors: from the first TTL
    whose quotes show another source address or port than was sent. It sits after the
    last hop whose quotes show ours, at or before that TTL's router."""
    first: dict[str, int] = {}
    fields: set[str] = set()
    for label, rows_at in obs.seen.items():
        for ttl, rows in rows_at.items():
            for row in rows:
                nat_fields = _changed(row) & NAT_FIELDS
                if nat_fields:
                    fields |= nat_fields
                    first[label] = min(first.get(label, ttl), ttl)
    if not first:
        return None
    hop = min(first.values())
    ours = [
        t
        for rows_at in obs.seen.values()
        for t, rows in rows_at.items()
        if t < hop and any(r[0] == TE and not _changed(r) & NAT_FIELDS for r in rows)
    ]
    before = max(ours, default=None)
    flows = [label for label in obs.flows if label in first]
    addresses = sorted(set().union(*(obs.translated[label] for label in flows)))
    shows = " and ".join(
        x
        for x in (
            f"source address {', '.join(addresses)}" if "src" in fields else "",
            "another source port" if "port" in fields else "",
        )
        if x
    )
    return Finding(
        kind=FindingKind.NAT,
        severity=Severity.INFO,
        target=obs.target,
        flow=None,
        first_hop=before,
        last_hop=hop,
        responder=None,
        confidence=1.0,
        evidence=tuple(e for label in flows for e in evidence(obs, label, first[label])),
        note=(
            f"from hop {hop} on, the probes quoted in ICMP errors show {shows} "
            f"({', '.join(flows)}): the NAT does not restore them; they were matched to "
            "the probes by their identity fields"
        ),
    )


def _expected_ttls(obs: Observed, path: FlowPath, reached: Reach) -> list[int]:
    """The TTLs at which this flow's probes should all be answered."""
    end = reached.genuine.get(path.flow.label) or path.last_hop or 0
    silent_hops = silent_ttls(obs, reached.distance)
    return [t for t in sorted(obs.seen[path.flow.label]) if t <= end and t not in silent_hops]


def _fisher_greater(lost_a: int, sent_a: int, lost_b: int, sent_b: int) -> float:
    import numpy as np
    from scipy.stats import fisher_exact

    table = np.array([[lost_a, sent_a - lost_a], [lost_b, sent_b - lost_b]])
    return float(fisher_exact(table, alternative="greater").pvalue)


def _loss_start(
    ttls: list[int], sent: dict[int, int], lost: dict[int, int]
) -> tuple[int | None, float]:
    """The earliest TTL k from which loss starts (k and later lose more than the TTLs
    before, p < SIGNIFICANT) and stays (the TTLs after k alone too, p < PERSISTS), with
    its p-value; (None, 1.0) when there is none."""
    for i, k in enumerate(ttls[:-1]):
        before, later = ttls[:i], ttls[i + 1 :]
        lost_after = sum(lost[t] for t in (k, *later))
        lost_later = sum(lost[t] for t in later)
        sent_before = sum(sent[t] for t in before)
        lost_before = sum(lost[t] for t in before)
        if lost_after < MIN_LOST or lost_later < 2 or not before or lost[k] == 0:
            continue
        p_start = _fisher_greater(
            lost_after, sum(sent[t] for t in (k, *later)), lost_before, sent_before
        )
        p_persist = _fisher_greater(
            lost_later, sum(sent[t] for t in later), lost_before, sent_before
        )
        if p_start < SIGNIFICANT and p_persist < PERSISTS:
            return k, p_start
    return None, 1.0


def loss(
    obs: Observed, path: FlowPath, reached: Reach, limited: Iterable[int] = ()
) -> tuple[list[Finding], set[int]]:
    """Forwarding loss from hop k (starts at k, persists to the end), and the TTLs where
    this flow shows ICMP rate limiting (loss at one hop that later hops do not show).
    TTLs in ``limited`` (routers known to limit their ICMP errors) are left out of the
    forwarding-loss test: their silence is the router's budget, not loss."""
    label = path.flow.label
    skip = set(limited)
    ttls = [t for t in _expected_ttls(obs, path, reached) if t not in skip]
    sent = {t: obs.at(label, t).total() for t in ttls}
    lost = {t: _silent_rounds(obs, label, t)[0] for t in ttls}
    found: list[Finding] = []
    start, best = _loss_start(ttls, sent, lost)
    if start is not None:
        tail = [t for t in ttls if t >= start]
        proof = [e for t in tail for e in evidence(obs, label, t)]
        pct = 100 * sum(lost[t] for t in tail) / max(1, sum(sent[t] for t in tail))
        found.append(
            Finding(
                kind=FindingKind.FORWARDING_LOSS,
                severity=Severity.WARNING,
                target=obs.target,
                flow=path.flow,
                first_hop=start - 1 or None,
                last_hop=start,
                responder=None,
                confidence=1.0 - best,
                evidence=tuple(proof),
                note=f"{pct:.0f}% of probes lost from TTL {start} on, none before",
            )
        )
    spiky: set[int] = set()
    for i, h in enumerate(ttls[:-1]):
        later = ttls[i + 1 :]
        if lost[h] < 2:
            continue
        lost_later, sent_later = sum(lost[t] for t in later), sum(sent[t] for t in later)
        p = _fisher_greater(lost[h], sent[h], lost_later, sent_later)
        margin = lost[h] / sent[h] - lost_later / max(1, sent_later)
        if p < SIGNIFICANT and margin >= RATE_LIMIT_MARGIN:
            spiky.add(h)
    return found, spiky


def _loss_counts(
    obs: Observed, labels: Iterable[str], ttls_of: dict[str, list[int]]
) -> tuple[list[int], dict[int, int], dict[int, int]]:
    """TTLs and (sent, lost) per TTL summed over ``labels``, each flow at its own TTLs."""
    chosen = list(labels)
    ttls = sorted({t for label in chosen for t in ttls_of[label]})
    sent = {t: sum(obs.at(x, t).total() for x in chosen if t in ttls_of[x]) for t in ttls}
    lost = {t: sum(_silent_rounds(obs, x, t)[0] for x in chosen if t in ttls_of[x]) for t in ttls}
    return ttls, sent, lost


#: A flow that loses this much more (in points) than the others at the same hops, and
#: significantly so, is policed or filtered on its own: not the link's loss.
OWN_LOSS_MARGIN = 0.10


#: The others' loss is "theirs too" below this p-value: a lenient test, since calling
#: a flow's loss its own (a policer) needs the others to pass cleanly.
OTHERS_LOSE = 0.05


def _also_losing(ttls: list[int], sent: dict[int, int], lost: dict[int, int], until: int) -> bool:
    """Do the flows counted in ``sent``/``lost`` lose more from some TTL at or before
    ``until`` on than before it (p < OTHERS_LOSE)?"""
    for start in (t for t in ttls if t <= until):
        tail_lost = sum(lost[t] for t in ttls if t >= start)
        if not tail_lost:
            continue
        tail_sent = sum(sent[t] for t in ttls if t >= start)
        head_lost = sum(lost[t] for t in ttls if t < start)
        head_sent = sum(sent[t] for t in ttls if t < start)
        if head_sent and _fisher_greater(tail_lost, tail_sent, head_lost, head_sent) < OTHERS_LOSE:
            return True
    return False


def shared_loss(
    obs: Observed,
    paths: Iterable[FlowPath],
    reached: Reach,
    per_flow: list[Finding],
    limited: Iterable[int] = (),
) -> list[Finding]:
    """Forwarding loss pooled over the flows that cross the same hops: four flows give
    four times the evidence of one. Returns the loss findings that replace ``per_flow``
    (each flow's own, from ``loss``): one per lossy link, listing its flows, and one per
    flow that loses significantly more than the others at the same hops (a policer or a
    filter for that port, not the link)."""
    skip = set(limited)
    paths = list(paths)
    ttls_of = {
        p.flow.label: [t for t in _expected_ttls(obs, p, reached) if t not in skip] for p in paths
    }
    labels = [label for label, ttls in ttls_of.items() if ttls]
    own: dict[str, Finding] = {}
    for f in per_flow:
        label = str(f.flow)
        others = [x for x in labels if x != label]
        if f.last_hop is None or not others:
            continue
        tail = [t for t in ttls_of[label] if t >= f.last_hop]
        _, mine_sent_at, mine_lost_at = _loss_counts(obs, [label], {label: tail})
        mine_lost, mine_sent = sum(mine_lost_at.values()), sum(mine_sent_at.values())
        theirs, sent, lost = _loss_counts(obs, others, ttls_of)
        if _loss_start(theirs, sent, lost)[0] is not None:
            continue  # the others lose too: the link's loss, pooled below
        their_lost = sum(lost[t] for t in tail if t in lost)
        their_sent = sum(sent[t] for t in tail if t in sent)
        if not their_sent or not mine_sent:
            continue
        if _also_losing(theirs, sent, lost, f.last_hop):
            continue  # the others lose there too, if less: no flow of its own
        margin = mine_lost / mine_sent - their_lost / their_sent
        p = _fisher_greater(mine_lost, mine_sent, their_lost, their_sent)
        # One test per flow: a flow stands out by chance more often the more there are.
        if p < SIGNIFICANT / len(labels) and margin >= OWN_LOSS_MARGIN:
            clean = ", ".join(others)
            own[label] = replace(
                f,
                note=f"{f.note}; {clean} cross the same hops with "
                f"{100 * their_lost / their_sent:.0f}% lost: a policer or filter for "
                f"{label}, not the link",
            )
    pool = [x for x in labels if x not in own]
    ttls, sent, lost = _loss_counts(obs, pool, ttls_of)
    start, best = _loss_start(ttls, sent, lost) if len(pool) >= 2 else (None, 1.0)
    if start is None:
        return [*own.values(), *(f for f in per_flow if str(f.flow) not in own)]
    crossing = [x for x in pool if any(t >= start for t in ttls_of[x])]
    tail = [t for t in ttls if t >= start]
    pct = 100 * sum(lost[t] for t in tail) / max(1, sum(sent[t] for t in tail))
    link = Finding(
        kind=FindingKind.FORWARDING_LOSS,
        severity=Severity.WARNING,
        target=obs.target,
        flow=None,
        first_hop=start - 1 or None,
        last_hop=start,
        responder=None,
        confidence=1.0 - best,
        evidence=tuple(
            e for x in crossing for t in ttls_of[x] if t >= start for e in evidence(obs, x, t)
        ),
        note=f"{pct:.0f}% of the probes of {', '.join(crossing)} lost from TTL {start} on, "
        f"none before (pooled over {len(crossing)} flows)",
    )
    # A flow that showed loss on its own from an earlier hop keeps its finding: the pooled
    # test is more sensitive, never less.
    earlier = [
        f for f in per_flow
        if str(f.flow) not in own and f.last_hop is not None and f.last_hop < start
    ]  # fmt: skip
    return [link, *own.values(), *earlier]


def pooled_spikes(
    obs: Observed, paths: list[FlowPath], reached: Reach, limited: Iterable[int] = ()
) -> set[int]:
    """Hops whose misses, pooled over every flow that gets past them, stand out against
    the same flows' later hops as ``loss`` asks of one flow (p < SIGNIFICANT, at least
    RATE_LIMIT_MARGIN more): a router's ICMP rate limit that ten rounds of one flow cannot
    show (4, 5 and 6 of 10 lost on three flows is chance for each, not for all three)."""
    skip = set(limited)
    ttls_of = [
        [t for t in _expected_ttls(obs, p, reached) if t not in skip] for p in paths
    ]  # fmt: skip
    labels = [p.flow.label for p in paths]
    found: set[int] = set()
    for h in sorted({t for ttls in ttls_of for t in ttls[:-1]}):
        lost_h = sent_h = lost_later = sent_later = 0
        for label, ttls in zip(labels, ttls_of, strict=True):
            if h not in ttls[:-1]:
                continue
            later = [t for t in ttls if t > h]
            lost_h += _silent_rounds(obs, label, h)[0]
            sent_h += obs.at(label, h).total()
            lost_later += sum(_silent_rounds(obs, label, t)[0] for t in later)
            sent_later += sum(obs.at(label, t).total() for t in later)
        if lost_h < 2 or not sent_h or not sent_later:
            continue
        margin = lost_h / sent_h - lost_later / sent_later
        if (
            margin >= RATE_LIMIT_MARGIN
            and _fisher_greater(lost_h, sent_h, lost_later, sent_later) < SIGNIFICANT
        ):
            found.add(h)
    return found


def tested_ttls(obs: Observed, paths: Iterable[FlowPath], reached: Reach) -> Counter[int]:
    """How many flows each intermediate TTL was tested on for rate limiting."""
    return Counter(h for p in paths for h in _expected_ttls(obs, p, reached)[:-1])


def limited_cells(obs: Observed, ttls: Iterable[int]) -> dict[tuple[str, int], int]:
    """(flow, TTL) -> the non-answers a router's rate limit explains: at a rate-limiting
    hop, the timeouts of every flow that gets that far (answered there or beyond)."""
    cells: dict[tuple[str, int], int] = {}
    for ttl in ttls:
        for label in obs.flows:
            silent, _ = _silent_rounds(obs, label, ttl)
            if silent and obs.passes(label, ttl):
                cells[(label, ttl)] = silent
    return cells


def _per_second(rate: float) -> str:
    if rate >= 10:
        return f"{rate:.0f}"
    return f"{rate:.1f}".rstrip("0").rstrip(".")


def rate_limiting(
    obs: Observed, ttl: int, budget: HopBudget | None, cells: dict[tuple[str, int], int]
) -> Finding:
    """One finding for a router that limits its ICMP errors, covering every flow."""
    proof = [e for label in obs.flows for e in evidence(obs, label, ttl)]
    answers = Counter(
        e.responder for e in proof if e.responder and e.kind is ReplyKind.TIME_EXCEEDED
    )
    responder = budget.address if budget is not None else None
    if responder is None and answers:
        responder = answers.most_common(1)[0][0]
    lost = sum(n for (_, t), n in cells.items() if t == ttl)
    probed = sum(e.count for e in proof)
    parts = []
    if budget is not None and budget.limited and budget.rate_per_s is not None:
        rate = _per_second(budget.rate_per_s)
        what = f"about {rate} answer{'' if rate == '1' else 's'}/s"
        if budget.burst:
            what += f" after a burst of {budget.burst}"
        parts.append(what)
    parts.append(f"{lost} of {probed} probes at TTL {ttl} unanswered while later hops answer")
    if budget is not None and budget.held:
        parts.append(f"{budget.held} probes held back to stay within its budget")
    parts.append("not forwarding loss")
    return Finding(
        kind=FindingKind.RATE_LIMITING,
        severity=Severity.INFO,
        target=obs.target,
        flow=None,
        first_hop=ttl,
        last_hop=ttl,
        responder=responder,
        confidence=1.0 if budget is not None and budget.limited else 0.99,
        evidence=tuple(proof),
        note="; ".join(parts),
    )


def _te_responders(obs: Observed, label: str, ttl: int) -> Counter[str | None]:
    counts: Counter[str | None] = Counter()
    for (kind, responder, _, _), n in obs.at(label, ttl).items():
        if kind == TE:
            counts[responder] += n
    return counts


def ecmp(obs: Observed) -> list[Finding]:
    """Hops where flows (or one flow) meet different routers: load balancing. Consecutive
    TTLs that each meet several routers are one divergence (the parallel branches, and the
    hop after them that answers from the branch a probe came in on), however the flows
    group at each: answers lost to rate limiting or loss regroup them from TTL to TTL."""
    found: list[Finding] = []
    ttls = sorted({t for rows in obs.seen.values() for t in rows})
    previous: int | None = None
    for ttl in ttls:
        per_flow = {label: _te_responders(obs, label, ttl) for label in obs.flows}
        per_flow = {label: c for label, c in per_flow.items() if c}
        addresses = sorted({a for c in per_flow.values() for a in c if a}, key=str)
        if len(addresses) < 2:
            previous = None
            continue
        groups = {a: sorted(label for label, c in per_flow.items() if a in c) for a in addresses}
        proof = tuple(
            e
            for label in per_flow
            for e in evidence(obs, label, ttl)
            if e.kind is ReplyKind.TIME_EXCEEDED
        )
        if previous == ttl - 1 and found:
            previous = ttl
            last = found[-1]
            found[-1] = replace(last, last_hop=ttl, evidence=last.evidence + proof)
            continue
        previous = ttl
        within = [label for label, c in per_flow.items() if len(c) > 1]
        note = "; ".join(f"{a}: {', '.join(flows)}" for a, flows in groups.items())
        if within:
            note += f"; several routers within one flow: {', '.join(within)}"
        found.append(
            Finding(
                kind=FindingKind.ECMP,
                severity=Severity.INFO,
                target=obs.target,
                flow=None,
                first_hop=ttl,
                last_hop=ttl,
                responder=None,
                confidence=1.0,
                evidence=proof,
                note=note,
            )
        )
    return found


def silent_ttls(obs: Observed, distance: int | None = None) -> set[int]:
    """TTLs no flow got any answer at, below a TTL that answered (and below the target's
    distance, past which TTLs are the target, not hops): silent routers."""
    answered = obs.answered_ttls()
    if not answered:
        return set()
    limit = distance if distance is not None else max(answered)
    probed = {t for rows in obs.seen.values() for t in rows}
    return {t for t in probed if t < limit and t not in answered}


def silent_hops(obs: Observed, distance: int | None) -> list[Finding]:
    """Routers that answer no protocol: not a filter, just quiet."""
    found = []
    for ttl in sorted(silent_ttls(obs, distance)):
        proof = [e for label in obs.flows for e in evidence(obs, label, ttl)]
        found.append(
            Finding(
                kind=FindingKind.SILENT_HOP,
                severity=Severity.INFO,
                target=obs.target,
                flow=None,
                first_hop=ttl,
                last_hop=ttl,
                responder=None,
                confidence=1.0,
                evidence=tuple(proof),
                note="no time-exceeded for any protocol; later hops answer, so it forwards",
            )
        )
    return found


def host_not_reached(obs: Observed, paths: dict[str, FlowPath]) -> Finding:
    """No flow got an answer from the target."""
    last = max((p.last_hop or 0 for p in paths.values()), default=0)
    proof = [
        e for label, p in paths.items() if p.last_hop for e in evidence(obs, label, p.last_hop)
    ]
    address = next((p.last_address for p in paths.values() if p.last_hop == last), None)
    return Finding(
        kind=FindingKind.HOST_NOT_REACHED,
        severity=Severity.CRITICAL,
        target=obs.target,
        flow=None,
        first_hop=last or None,
        last_hop=None,
        responder=address,
        confidence=1.0,
        evidence=tuple(proof),
        note=f"no flow got an answer from {obs.target}",
    )


def sort_findings(found: list[Finding]) -> list[Finding]:
    """What an admin must read first: severity, then the target, hop and flow."""
    return sorted(
        found,
        key=lambda f: (
            SEVERITY_ORDER[f.severity],
            f.target,
            f.first_hop or 0,
            f.flow.label if f.flow else "",
            str(f.kind),
        ),
    )
