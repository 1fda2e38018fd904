"""Where each flow's probes got to and why they stop; host and service verdicts.

The target's distance comes from flows whose answers from the target's address are
consistent with every other flow: an answer "from the target" at a TTL where another
flow still got time-exceeded from a router was forged on the way (an RST injector or a
SYN proxy between the last router that answered and the next hop). A router met again
one hop later than before (a longer branch of a load balancer) is no such router.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from reachtest.model import (
    FlowPath,
    FlowSpec,
    HostVerdict,
    Protocol,
    Reason,
    ReplyKind,
    ServiceState,
    ServiceVerdict,
    StopReason,
    TraceParams,
)

TE = str(ReplyKind.TIME_EXCEEDED)
TIMEOUT = str(ReplyKind.TIMEOUT)
FROM_TARGET = {
    str(ReplyKind.ECHO_REPLY),
    str(ReplyKind.TCP_SYN_ACK),
    str(ReplyKind.TCP_RST),
    str(ReplyKind.UDP_REPLY),
    str(ReplyKind.PORT_UNREACHABLE),
    str(ReplyKind.PROTOCOL_UNREACHABLE),
}
REJECTS = {
    str(ReplyKind.ADMIN_PROHIBITED): Reason.ADMIN_PROHIBITED,
    str(ReplyKind.NET_UNREACHABLE): Reason.NET_UNREACH,
    str(ReplyKind.HOST_UNREACHABLE): Reason.HOST_UNREACH,
    str(ReplyKind.UNREACHABLE): Reason.UNREACH,
    str(ReplyKind.FRAG_NEEDED): Reason.FRAG_NEEDED,
    str(ReplyKind.PACKET_TOO_BIG): Reason.FRAG_NEEDED,
}
REACHED = {
    str(ReplyKind.ECHO_REPLY): (None, Reason.ECHO_REPLY, StopReason.REACHED_ANSWERED),
    str(ReplyKind.TCP_SYN_ACK): (ServiceState.OPEN, Reason.SYN_ACK, StopReason.REACHED_OPEN),
    str(ReplyKind.TCP_RST): (ServiceState.CLOSED, Reason.RESET, StopReason.REACHED_CLOSED),
    str(ReplyKind.UDP_REPLY): (ServiceState.OPEN, Reason.UDP_RESPONSE, StopReason.REACHED_ANSWERED),
    str(ReplyKind.PORT_UNREACHABLE): (
        ServiceState.CLOSED,
        Reason.PORT_UNREACH,
        StopReason.REACHED_CLOSED,
    ),
    str(ReplyKind.PROTOCOL_UNREACHABLE): (
        ServiceState.CLOSED,
        Reason.PROTO_UNREACH,
        StopReason.REACHED_CLOSED,
    ),
}


#: Outcomes as the analysis sees them: (kind, responder, quote_changed, icmp_code).
Row = tuple[str, str | None, str, int | None]
#: The outcomes of one flow at one TTL: each Row with how often it came.
Cell = Counter[Row]


def _cells() -> defaultdict[int, Cell]:
    return defaultdict(Counter)


def _proofs() -> defaultdict[int, Counter[bool]]:
    return defaultdict(Counter)


def _back() -> defaultdict[int, Counter[tuple[str, str, int]]]:
    return defaultdict(Counter)


@dataclass(slots=True)
class Observed:
    """One target's outcomes by flow and TTL (``seen[flow][ttl]``, a Cell: counts, never a
    list that grows with the run), and the flows in the order they were traced."""

    target: str
    flows: dict[str, FlowSpec] = field(default_factory=dict)
    seen: defaultdict[str, defaultdict[int, Cell]] = field(
        default_factory=lambda: defaultdict(_cells)
    )
    #: Proof probes (sent alone after the router's budget refilled): flow -> TTL ->
    #: {answered?: count}.
    proofs: defaultdict[str, defaultdict[int, Counter[bool]]] = field(
        default_factory=lambda: defaultdict(_proofs)
    )
    #: How many routers each answer crossed on its way back (from its IP TTL / hop limit,
    #: see ``hops_back``): flow -> TTL -> {(kind, responder, hops): count}.
    back: defaultdict[str, defaultdict[int, Counter[tuple[str, str, int]]]] = field(
        default_factory=lambda: defaultdict(_back)
    )
    #: The source addresses a NAT left in the quotes of each flow's ICMP errors.
    translated: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def at(self, flow: str, ttl: int) -> Cell:
        return self.seen[flow].get(ttl) or Counter()

    def kinds(self, flow: str, ttl: int) -> Counter[tuple[str, str | None]]:
        counts: Counter[tuple[str, str | None]] = Counter()
        for row, n in self.at(flow, ttl).items():
            counts[(row[0], row[1])] += n
        return counts

    def te_ttls(self, flow: str) -> list[int]:
        return sorted(t for t, rows in self.seen[flow].items() if any(r[0] == TE for r in rows))

    def answered_ttls(self) -> set[int]:
        """TTLs at which any flow got any answer."""
        return {t for rows in self.seen.values() for t, r in rows.items() if any(x[1] for x in r)}

    def passes(self, flow: str, ttl: int) -> bool:
        """Did ``flow`` get any answer at ``ttl`` or beyond (so its probes get that far)?"""
        return any(t >= ttl and any(x[1] for x in r) for t, r in self.seen[flow].items())

    def hop_of(self, address: str) -> int | None:
        """The hop of a router address: the lowest TTL it sent time-exceeded from."""
        ttls = [
            t
            for rows in self.seen.values()
            for t, r in rows.items()
            if any(x[0] == TE and x[1] == address for x in r)
        ]
        return min(ttls) if ttls else None


@dataclass(frozen=True, slots=True)
class Reach:
    """Per target: the distance, and per flow the TTL at which it got an answer carrying
    the target's address, split into genuine and forged."""

    distance: int | None
    genuine: dict[str, int]
    forged: dict[str, int]


#: The initial TTLs (hop limits) systems send with: Linux and most Unix 64, Windows 128,
#: many routers 255 for ICMP; a few old stacks 32.
INITIAL_TTLS = (32, 64, 128, 255)


#: Answers of one target on two flows may come back one router apart (per-flow ECMP on
#: the way back); two or more apart, one of them is not the target's.
CLOSER_BY = 2


def hops_back(reply_ttl: int) -> int:
    """How many routers a reply crossed on its way back: the smallest usual initial TTL
    at or above what arrived, minus what arrived."""
    return next(t for t in INITIAL_TTLS if t >= reply_ttl) - reply_ttl


def _median(counts: Counter[int]) -> float | None:
    """The median of values given with their counts (a middle pair averaged)."""
    total = counts.total()
    if not total:
        return None
    low = high = None
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if low is None and 2 * seen > total - 1:  # holds the (total - 1) // 2-th value
            low = value
        if 2 * seen > total:  # holds the total // 2-th value
            high = value
            break
    assert low is not None and high is not None
    return high if total % 2 else (low + high) / 2


def _answers_back(obs: Observed, label: str) -> Counter[int]:
    """How many routers the answers of ``label`` in the target's name crossed back."""
    counts: Counter[int] = Counter()
    for rows in obs.back[label].values():
        for (kind, who, h), n in rows.items():
            if kind in FROM_TARGET and who == obs.target:
                counts[h] += n
    return counts


def _te_back(obs: Observed, label: str, ttl: int) -> float | None:
    """How many routers the time-exceeded from TTL ``ttl`` crossed back (median; this
    flow's, else any flow's)."""
    own: Counter[int] = Counter()
    every: Counter[int] = Counter()
    for other, rows in obs.back.items():
        for (kind, _who, h), n in rows.get(ttl, Counter()).items():
            if kind == TE:
                every[h] += n
                if other == label:
                    own[h] += n
    return _median(own or every)


def closer_than_claimed(obs: Observed, label: str, ttl: int) -> tuple[float, int, str] | None:
    """When ``label``'s answers in the target's name (first at ``ttl``) come from closer
    than the target: (their median hops back, the hops back they are measured against,
    and what that is: ``flows`` or ``router``).

    The reference is the target's own answers on other flows when there are any (a return
    path shorter than the router's before it, asymmetric routing, moves every flow alike):
    CLOSER_BY or more routers fewer is another box. With no other flow (one flow,
    --no-icmp), the time-exceeded of the router at ``ttl - 1``: crossing no more routers
    back than it, the answer comes from a box at or before that router.
    None when the reply TTLs say nothing of the kind."""
    median = _median(_answers_back(obs, label))
    if median is None:
        return None
    others: Counter[int] = Counter()
    for other in obs.flows:
        if other != label:
            others.update(_answers_back(obs, other))
    reference = _median(others)
    if reference is not None:
        return (median, int(reference), "flows") if median <= reference - CLOSER_BY else None
    before = _te_back(obs, label, ttl - 1)
    if before is not None and median <= before:
        return median, int(before), "router"
    return None


def reach(obs: Observed) -> Reach:
    """Which flows really reached the target, at what distance, and which were answered
    in its name on the way: at a TTL where other flows still meet routers, or with reply
    TTLs that show the answer came from closer than that TTL (``closer_than_claimed``)."""
    first: dict[str, int] = {}
    for label, rows in obs.seen.items():
        ttls = [
            t for t, r in rows.items() if any(x[0] in FROM_TARGET and x[1] == obs.target for x in r)
        ]
        if ttls:
            first[label] = min(ttls)
    # The last TTL at which each flow met a router seen there first: a router that
    # answered a lower TTL before (on any flow) met again one hop later is the same path
    # over a longer branch of a load balancer, not a router beyond the target.
    earliest: dict[str, int] = {}
    for rows in obs.seen.values():
        for t, cell in rows.items():
            for row in cell:
                if row[0] == TE and row[1] is not None:
                    earliest[row[1]] = min(earliest.get(row[1], t), t)

    def first_met(t: int, cell: Cell) -> bool:
        return any(r[0] == TE and r[1] is not None and earliest[r[1]] == t for r in cell)

    last_te = {
        label: max((t for t, cell in rows.items() if first_met(t, cell)), default=0)
        for label, rows in obs.seen.items()
    }
    genuine: dict[str, int] = {}
    forged: dict[str, int] = {}
    for label, ttl in first.items():
        beyond = any(last_te[other] >= ttl for other in obs.seen if other != label)
        (forged if beyond or closer_than_claimed(obs, label, ttl) else genuine)[label] = ttl
    distance = min(genuine.values()) if genuine else None
    return Reach(distance, genuine, forged)


def _majority(counter: Counter[tuple[str, str | None]], kinds: set[str]) -> tuple[str, str | None]:
    best = [(n, k) for k, n in counter.items() if k[0] in kinds]
    return max(best)[1]


def flow_path(obs: Observed, label: str, reached: Reach, params: TraceParams | None) -> FlowPath:
    """Where ``label``'s probes got to and why they stop there."""
    flow = obs.flows[label]
    rows = obs.seen[label]
    te = obs.te_ttls(label)
    last_te = te[-1] if te else None
    last_te_address = _majority(obs.kinds(label, last_te), {TE})[1] if last_te is not None else None
    distance = reached.distance
    if label in reached.genuine:
        ttl = reached.genuine[label]
        kind, _ = _majority(obs.kinds(label, ttl), FROM_TARGET)
        return FlowPath(
            target=obs.target,
            flow=flow,
            distance=distance,
            last_hop=ttl,
            last_address=obs.target,
            stop=REACHED[kind][2],
            stop_hop=ttl,
            stop_address=obs.target,
        )
    if label in reached.forged:
        ttl = reached.forged[label]
        hop = ttl - 1 if ttl - 1 in te else last_te
        device = _majority(obs.kinds(label, hop), {TE})[1] if hop else None
        return FlowPath(
            target=obs.target,
            flow=flow,
            distance=distance,
            last_hop=hop,
            last_address=device,
            stop=StopReason.MIDDLEBOX,
            stop_hop=hop,
            stop_address=device,
        )
    rejected = sorted(t for t, r in rows.items() if any(x[0] in REJECTS for x in r))
    if rejected:
        ttl = rejected[0]
        kind, address = _majority(obs.kinds(label, ttl), set(REJECTS))
        assert address is not None
        # The target's own firewall is at the target; a router is at the hop where it
        # expires probes, else (it never does) the hop before the rejected TTL.
        at_router = obs.hop_of(address) or max(ttl - 1, 1)
        hop = (distance or ttl) if address == obs.target else at_router
        code = next((x[3] for x in rows[ttl] if x[0] == kind and x[1] == address), None)
        stop = (
            StopReason.ADMIN_PROHIBITED
            if kind == str(ReplyKind.ADMIN_PROHIBITED)
            else StopReason.UNREACHABLE
        )
        return FlowPath(
            target=obs.target,
            flow=flow,
            distance=distance,
            last_hop=hop,
            last_address=address,
            stop=stop,
            stop_hop=hop,
            stop_address=address,
            icmp_code=code,
        )
    probed = max(rows)
    if distance is None and last_te is not None and last_te == probed:
        stop = StopReason.MAX_TTL
    elif (
        distance is None
        and params is not None
        and probed - (last_te or 0) >= params.gap_limit
        and probed < params.max_ttl
    ):
        stop = StopReason.GAP_LIMIT
    else:
        stop = StopReason.SILENT
    return FlowPath(
        target=obs.target,
        flow=flow,
        distance=distance,
        last_hop=last_te,
        last_address=last_te_address,
        stop=stop,
        stop_hop=last_te,
        stop_address=last_te_address,
    )


def service_verdict(obs: Observed, path: FlowPath, reached: Reach) -> ServiceVerdict:
    """nmap's state and reason for one flow, with the address and hop that gave it."""
    label = path.flow.label
    icmp = path.flow.protocol is Protocol.ICMP
    if label in reached.genuine or label in reached.forged:
        ttl = reached.genuine.get(label) or reached.forged[label]
        counts = obs.kinds(label, ttl)
        kind, _ = _majority(counts, FROM_TARGET)
        state, reason, _stop = REACHED[kind]
        hop = ttl if label in reached.genuine else path.stop_hop
        return ServiceVerdict(
            target=obs.target,
            flow=path.flow,
            state=None if icmp else state,
            reason=reason,
            reason_address=obs.target,
            reason_hop=hop,
            reached=label in reached.genuine,
            rounds=counts[(kind, obs.target)],
            rounds_probed=sum(counts.values()),
        )
    if path.stop in (StopReason.ADMIN_PROHIBITED, StopReason.UNREACHABLE):
        rows = obs.seen[label]
        ttl = min(t for t, r in rows.items() if any(x[0] in REJECTS for x in r))
        counts = obs.kinds(label, ttl)
        kind, address = _majority(counts, set(REJECTS))
        return ServiceVerdict(
            target=obs.target,
            flow=path.flow,
            state=None if icmp else ServiceState.FILTERED,
            reason=REJECTS[kind],
            reason_address=address,
            reason_hop=path.stop_hop,
            reached=False,
            rounds=counts[(kind, address)],
            rounds_probed=sum(counts.values()),
        )
    after = (path.last_hop or 0) + 1
    counts = obs.kinds(label, after)
    state = (
        None
        if icmp
        else (
            ServiceState.OPEN_FILTERED
            if path.flow.protocol is Protocol.UDP
            else ServiceState.FILTERED
        )
    )
    return ServiceVerdict(
        target=obs.target,
        flow=path.flow,
        state=state,
        reason=Reason.NO_RESPONSE,
        reason_address=None,
        reason_hop=None,
        reached=False,
        rounds=counts[(TIMEOUT, None)],
        rounds_probed=sum(counts.values()),
    )


def host_verdict(obs: Observed, reached: Reach) -> HostVerdict:
    """Reachable when any flow really reached the target; ping vs services."""
    by = tuple(obs.flows[label] for label in obs.flows if label in reached.genuine)
    icmp = [label for label, f in obs.flows.items() if f.protocol is Protocol.ICMP]
    services = [label for label in obs.flows if label not in icmp]
    icmp_reached = any(label in reached.genuine for label in icmp)
    service_reached = any(label in reached.genuine for label in services)
    return HostVerdict(
        target=obs.target,
        reachable=bool(by),
        distance=reached.distance,
        reached_by=by,
        ping_blocked_services_answer=bool(icmp) and not icmp_reached and service_reached,
        ping_answers_services_blocked=icmp_reached
        and any(label not in reached.genuine for label in services),
    )
