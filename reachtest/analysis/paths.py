"""Where each flow's probes got to and why they stop; host and service verdicts.

The target's distance comes from flows whose answers from the target's address are
consistent with every other flow: an answer "from the target" at a TTL where another
flow still got time-exceeded from a router was forged on the way (an RST injector or a
SYN proxy between the last router that answered and the next hop).
"""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import pandas as pd

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


#: One outcome as the analysis sees it: (round, kind, responder, quote_changed, icmp_code).
Row = tuple[int, str, str | None, str, int | None]


@dataclass(slots=True)
class Observed:
    """One target's outcomes by flow and TTL (``seen[flow][ttl]``, a list of Row), and the
    flows in the order they were traced."""

    target: str
    flows: dict[str, FlowSpec] = field(default_factory=dict)
    seen: dict[str, dict[int, list[Row]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    #: Proof probes (sent alone after the router's budget refilled): flow -> TTL -> answered?
    proofs: dict[str, dict[int, list[bool]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    #: How many routers each answer crossed on its way back (from its IP TTL / hop limit,
    #: see ``hops_back``): flow -> TTL -> [(kind, responder, hops)].
    back: dict[str, dict[int, list[tuple[str, str, int]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    #: The source addresses a NAT left in the quotes of each flow's ICMP errors.
    translated: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def at(self, flow: str, ttl: int) -> list[Row]:
        return self.seen[flow].get(ttl, [])

    def kinds(self, flow: str, ttl: int) -> Counter[tuple[str, str | None]]:
        return Counter((row[1], row[2]) for row in self.at(flow, ttl))

    def te_ttls(self, flow: str) -> list[int]:
        return sorted(t for t, rows in self.seen[flow].items() if any(r[1] == TE for r in rows))

    def answered_ttls(self) -> set[int]:
        """TTLs at which any flow got any answer."""
        return {t for rows in self.seen.values() for t, r in rows.items() if any(x[2] for x in r)}

    def passes(self, flow: str, ttl: int) -> bool:
        """Did ``flow`` get any answer at ``ttl`` or beyond (so its probes get that far)?"""
        return any(t >= ttl and any(x[2] for x in r) for t, r in self.seen[flow].items())

    def hop_of(self, address: str) -> int | None:
        """The hop of a router address: the lowest TTL it sent time-exceeded from."""
        ttls = [
            t
            for rows in self.seen.values()
            for t, r in rows.items()
            if any(x[1] == TE and x[2] == address for x in r)
        ]
        return min(ttls) if ttls else None


def observe(table: pd.DataFrame) -> list[Observed]:
    """The table regrouped per target; targets in address order, flows in protocol and
    port order, whatever the order of the outcomes."""
    by_target: dict[str, Observed] = {}
    records: list[dict[str, Any]] = table.to_dict("records")  # type: ignore[assignment]
    for row in records:
        target = str(row["target"])
        obs = by_target.get(target)
        if obs is None:
            obs = by_target[target] = Observed(target)
        label = str(row["flow"])
        if label not in obs.flows:
            port = None if _missing(row["port"]) else int(row["port"])
            obs.flows[label] = FlowSpec(protocol=Protocol(str(row["protocol"])), port=port)
        responder = str(row["responder"]) if row["answered"] else None
        code = None if _missing(row["icmp_code"]) else int(row["icmp_code"])
        obs.seen[label][int(row["ttl"])].append(
            (int(row["round"]), str(row["kind"]), responder, str(row["quote_changed"] or ""), code)
        )
        if not _missing(row.get("quote_src")):
            obs.translated[label].add(str(row["quote_src"]))
        if row.get("proof"):
            obs.proofs[label][int(row["ttl"])].append(responder is not None)
        if responder is not None and not _missing(row.get("reply_ttl")):
            hops = hops_back(int(row["reply_ttl"]))
            obs.back[label][int(row["ttl"])].append((str(row["kind"]), responder, hops))
    for obs in by_target.values():  # independent of the order of the outcomes
        obs.flows = dict(sorted(obs.flows.items(), key=lambda item: item[1]))
    return [by_target[t] for t in sorted(by_target, key=_address_key)]


def _address_key(address: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(address)
    return (parsed.version, int(parsed))


def _missing(value: Any) -> bool:
    return value is None or str(value) in ("<NA>", "nan", "None")


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


def _median(values: list[int]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _answers_back(obs: Observed, label: str) -> list[int]:
    """How many routers each answer of ``label`` in the target's name crossed back."""
    return [
        h for rows in obs.back[label].values()
        for kind, who, h in rows if kind in FROM_TARGET and who == obs.target
    ]  # fmt: skip


def _te_back(obs: Observed, label: str, ttl: int) -> float | None:
    """How many routers the time-exceeded from TTL ``ttl`` crossed back (median; this
    flow's, else any flow's)."""
    own = [h for kind, _who, h in obs.back[label].get(ttl, []) if kind == TE]
    every = [h for rows in obs.back.values() for kind, _who, h in rows.get(ttl, []) if kind == TE]
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
    others = [h for other in obs.flows if other != label for h in _answers_back(obs, other)]
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
            t for t, r in rows.items() if any(x[1] in FROM_TARGET and x[2] == obs.target for x in r)
        ]
        if ttls:
            first[label] = min(ttls)
    last_te = {label: max(obs.te_ttls(label), default=0) for label in obs.seen}
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
    rejected = sorted(t for t, r in rows.items() if any(x[1] in REJECTS for x in r))
    if rejected:
        ttl = rejected[0]
        kind, address = _majority(obs.kinds(label, ttl), set(REJECTS))
        assert address is not None
        # The target's own firewall is at the target; a router is at the hop where it
        # expires probes, else (it never does) the hop before the rejected TTL.
        at_router = obs.hop_of(address) or max(ttl - 1, 1)
        hop = (distance or ttl) if address == obs.target else at_router
        code = next((x[4] for x in rows[ttl] if x[1] == kind and x[2] == address), None)
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
        ttl = min(t for t, r in rows.items() if any(x[1] in REJECTS for x in r))
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
