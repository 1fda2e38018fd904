"""`reachtest run`: one scheduled pass over the configured targets.

1. A fast end-to-end check of every target: ICMP echo with icmplib (many hosts at once),
   TCP and UDP probes at full TTL with our engine.
2. Full traces, hop by hop, for the targets the policy picks: ``always``; ``on-failure``
   (an expectation not met); ``on-change`` (that, or a state that differs from the last
   stored run, or no stored run yet to compare with).
3. Every expectation judged (on the trace when there is one: more rounds, more evidence),
   the batch stored in the history in one transaction, reports and metrics written.

Part of the composition root: it wires engine, analysis, report and history.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reachtest.analysis.diff import word
from reachtest.analysis.where import Where, of_flow, of_request
from reachtest.errors import PrivilegeError, ReachtestError
from reachtest.model import (
    ICMP_FLOW,
    UNRESOLVED,
    FlowSpec,
    Outcome,
    Protocol,
    ReplyKind,
    Stray,
    TraceParams,
)
from reachtest.report.record import Record
from reachtest.schedule.config import Config, TargetConfig

if TYPE_CHECKING:
    from reachtest.history.store import HistoryStore, Writing

#: The fast check probes at this TTL only: far enough for any real path.
CHECK_TTL = 64
CHECK_ROUNDS = 3
CHECK_INTERVAL_S = 0.2
#: The fast check waits at most this long for an answer (less when a target asks less).
CHECK_TIMEOUT_S = 1.0
ICMP_TASKS = 100  # icmplib hosts pinged at once

#: Called with (step done, steps in all, what is being done).
Progress = Callable[[int, int, str], None]
#: Saves a trace record's reports in a folder; the files written.
SaveReports = Callable[[Record, str], list[Path]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Judged:
    """One flow of one target after the run: what it was expected to be and what it was."""

    target: str  # the configured name
    host: str
    address: str | None  # None: the host did not resolve
    flow: str
    expected: str | None  # None: no expectation on this flow
    got: str  # open, closed, filtered, open|filtered; reachable, unreachable; unresolved
    reason: str
    met: bool | None  # None: nothing expected
    traced: bool
    stop_hop: int | None  # traced: the hop where the flow stops (it passes the one before)
    last_hop: int | None  # traced: the last hop that answered this flow
    last_address: str | None
    distance: int | None  # traced: the target's hop count
    loss_ratio: float | None  # of the probes at the final TTL
    rtt_ms: float | None  # median round trip of the final answers
    finding: str | None  # the analysis' sentence about this flow, when it has one
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Measured (``mtu`` in the configuration): the flow's path MTU, a black hole on it.
    path_mtu: int | None = None
    black_hole: bool | None = None
    #: Multipath (``mda`` in the configuration), a partially filtered flow: how many of
    #: the flow hashes tried die on the branch that ``last_hop``/``stop_hop`` name.
    share: tuple[int, int] | None = None
    #: Traced: where the flow stops (``analysis.where``: the hop, address and words every
    #: output uses); None when not traced.
    stopped: Where | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """What one `reachtest run` did."""

    started: datetime
    finished: datetime
    judged: tuple[Judged, ...]
    records: tuple[tuple[str, Record], ...]  # (check | trace, run record), as stored
    traced: Mapping[str, str]  # target name -> why it was traced
    reports: tuple[Path, ...]
    changes: tuple[tuple[str, str, str, str], ...]  # (target, flow, before, after)
    durations_s: Mapping[str, float]  # target name -> seconds spent on it (check + trace)
    run_id: int | None  # the batch id in the history (None: not stored, or no history)
    unresolved: Mapping[str, str] = field(default_factory=dict)  # name -> why not

    @property
    def ok(self) -> bool:
        return all(j.met is not False for j in self.judged)

    @property
    def failed(self) -> tuple[Judged, ...]:
        return tuple(j for j in self.judged if j.met is False)


# -- expectations ----------------------------------------------------------------------


def meets(expected: str, got: str) -> bool:
    """Does ``got`` satisfy the expectation word ``expected``? Nothing is known of a host
    that did not resolve, so it satisfies none."""
    if got == UNRESOLVED:
        return False
    if expected == "blocked":
        return got not in ("open", "reachable")
    return got == expected


def states(target: Mapping[str, Any]) -> dict[str, str]:
    """flow -> word, for one target of a run record (its requests after the handshake
    too)."""
    found = {f["flow"]: word(f) for f in target["flows"]}
    return found | {r["flow"]: request_word(r) for r in target.get("requests", ())}


def why_trace(
    policy: str, failing: bool, now: Mapping[str, str], before: Mapping[str, str] | None
) -> str | None:
    """Why this target gets a full trace under ``policy`` (None: it does not)."""
    if policy == "always":
        return "policy always"
    if failing:
        return "an expectation is not met"
    if policy == "on-change":
        if before is None:
            return "no earlier run to compare with"
        changed = sorted(f for f in now if before.get(f, now[f]) != now[f])
        if changed:
            return "changed since the last run: " + ", ".join(changed)
    return None


def _finding(target: Mapping[str, Any], flow: str) -> str | None:
    order = {"critical": 0, "warning": 1, "info": 2}
    mine = sorted(
        (f for f in target["findings"] if f["flow"] == flow),
        key=lambda f: order.get(f["severity"], 3),
    )
    return mine[0]["summary"] if mine else None


def _final_stats(flow: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(loss ratio, median RTT in ms) of the probes at the flow's deepest TTL."""
    hops = flow["hops"]
    if not hops:
        return None, None
    last = hops[-1]
    sent = last["snt"] or 0
    loss = None if not sent else round(1 - (last["rcv"] or 0) / sent, 4)
    rtts = sorted(s["rtt_ms"] for s in last.get("samples", []) if s.get("rtt_ms") is not None)
    rtt = rtts[len(rtts) // 2] if rtts else None
    return loss, rtt


def judge(
    config: TargetConfig,
    target: Mapping[str, Any] | None,
    address: str | None,
    traced: bool,
    why_not: str = "unresolved",
) -> list[Judged]:
    """Every flow of ``config`` judged against the run record's ``target`` entry (None:
    the host did not resolve, so nothing was sent; ``why_not`` says why)."""
    flows = {f["flow"]: f for f in target["flows"]} if target else {}
    judged = []
    for spec in config.flows:
        flow = flows.get(spec.label)
        expected = config.expect.get(spec.label)
        got = word(flow) if flow is not None else UNRESOLVED
        path = flow["path"] if flow is not None and traced else None
        branch = (flow["verdict"] or {}).get("branch") if flow is not None and traced else None
        if branch is not None:
            # Some flow hashes die on one branch: where is that branch's hop, not where
            # the one flow hash of the trace happened to go.
            rejected = branch["how"] == "rejected"
            path = {
                "stop_hop": branch["hop"] if rejected else None,
                "last_hop": branch["hop"],
                "last_address": branch["address"],
            }
        loss, rtt = _final_stats(flow) if flow is not None else (None, None)
        judged.append(
            Judged(
                target=config.name,
                host=config.host,
                address=address,
                flow=spec.label,
                expected=expected,
                got=got,
                reason=(flow["verdict"]["reason"] if flow["verdict"] else "no-probe")
                if flow
                else why_not,
                met=None if expected is None else meets(expected, got),
                traced=traced,
                stop_hop=path["stop_hop"] if path else None,
                last_hop=path["last_hop"] if path else None,
                last_address=path["last_address"] if path else None,
                distance=target["distance"] if target and traced else None,
                loss_ratio=loss,
                rtt_ms=rtt,
                finding=_finding(target, spec.label) if target and traced else None,
                labels=config.labels,
                share=(branch["failing"], branch["of"]) if branch is not None else None,
                stopped=of_flow(flow) if flow is not None and traced else None,
            )
        )
    measured = {m["flow"]: m for m in target.get("mtu", ())} if target else {}
    if measured:
        judged = [
            replace(j, path_mtu=measured[j.flow]["mtu"], black_hole=measured[j.flow]["black_hole"])
            if j.flow in measured else j
            for j in judged
        ]  # fmt: skip
    if config.mtu:  # an expectation: every flow's path MTU at least this, no black hole
        judged.append(_mtu_judged(config, target, address, traced, measured, why_not))
    requests = {r["flow"]: r for r in target.get("requests", ())} if target else {}
    for kind, port in config.requests:
        label = f"{kind}/{port}"
        request = requests.get(label)
        expected = config.expect.get(label)
        got = request_word(request) if request is not None else UNRESOLVED
        blocked = request is not None and request["state"] != "answered"
        hop = request["box_hop"] if blocked and request is not None else None
        judged.append(
            Judged(
                target=config.name, host=config.host, address=address, flow=label,
                expected=expected, got=got,
                reason=(request["reason"] or "answered") if request is not None else why_not,
                met=None if expected is None else meets(expected, got), traced=traced,
                stop_hop=None, last_hop=hop,  # said as "reset after hop 3 (address)"
                last_address=request["box_address"] if blocked and request else None,
                distance=target["distance"] if target and traced else None,
                loss_ratio=None, rtt_ms=None,
                finding=_finding(target, label) if target and blocked else None,
                labels=config.labels,
                stopped=of_request(request) if request is not None and traced else None,
            )
        )  # fmt: skip
    return judged


#: The pseudo-flow an ``mtu = N`` expectation is judged as.
MTU_FLOW = "mtu"


def _mtu_judged(
    config: TargetConfig,
    target: Mapping[str, Any] | None,
    address: str | None,
    traced: bool,
    measured: Mapping[str, Mapping[str, Any]],
    why_not: str,
) -> Judged:
    """``mtu = N``: the smallest path MTU of the target's flows against N; a black hole
    fails it whatever the size (bigger packets vanish without a word)."""
    found = [m for m in measured.values() if m["mtu"] is not None]
    worst = min(found, key=lambda m: (not m["black_hole"], m["mtu"]), default=None)
    said = None
    if worst is None:
        got, met = (why_not if target is None else "no answer"), False
    else:
        got = str(worst["mtu"])
        met = worst["mtu"] >= (config.mtu or 0) and not worst["black_hole"]
        said = next(
            (f["summary"] for f in (target or {}).get("findings", ())
             if f["kind"] in ("pmtu-black-hole", "path-mtu") and f["flow"] == worst["flow"]),
            None,
        )  # fmt: skip
    return Judged(
        target=config.name, host=config.host, address=address, flow=MTU_FLOW,
        expected=f">= {config.mtu}", got=got,
        reason="black-hole" if worst and worst["black_hole"] else "path-mtu", met=met,
        traced=worst is not None and worst["limit"] is not None, stop_hop=None,
        last_hop=worst["hop"] if worst else None,
        last_address=worst["address"] if worst else None,
        distance=target["distance"] if target and traced else None, loss_ratio=None,
        rtt_ms=None, finding=said, labels=config.labels,
        path_mtu=worst["mtu"] if worst else None,
        black_hole=worst["black_hole"] if worst else None,
    )  # fmt: skip


def request_word(request: Mapping[str, Any]) -> str:
    """A request flow's word: ``open`` when the request is answered (what an expectation
    of ``open`` means for it), else its state (``blocked-after-handshake``, ...)."""
    return "open" if request["state"] == "answered" else str(request["state"])


# -- the engine and icmplib ---------------------------------------------------------------


def icmp_outcomes(addresses: Sequence[str], timeout_s: float) -> tuple[list[Outcome], int]:
    """ICMP echo to every address at once (icmplib, raw sockets); the outcomes as the
    engine would give them (answered rounds first: icmplib does not say which were lost),
    and the number of echo requests sent."""
    from icmplib import multiping
    from icmplib.exceptions import ICMPLibError, SocketPermissionError

    if not addresses:
        return [], 0
    base = time.monotonic_ns()
    try:
        hosts = multiping(
            list(addresses),
            count=CHECK_ROUNDS,
            interval=CHECK_INTERVAL_S,
            timeout=timeout_s,
            concurrent_tasks=ICMP_TASKS,
            privileged=True,
        )
    except SocketPermissionError:
        raise PrivilegeError("the ICMP check needs root or CAP_NET_RAW (raw sockets)") from None
    except ICMPLibError as exc:
        raise ReachtestError(f"the ICMP check failed: {exc}") from None
    outcomes = []
    sent = 0
    for host in hosts:
        sent += host.packets_sent
        for i in range(host.packets_sent):
            sent_ns = base + int(i * CHECK_INTERVAL_S * 1e9)
            answered = i < len(host.rtts)
            outcomes.append(
                Outcome(
                    target=host.address,
                    flow=ICMP_FLOW,
                    ttl=CHECK_TTL,
                    round=i,
                    probe_id=i + 1,
                    sent_ns=sent_ns,
                    kind=ReplyKind.ECHO_REPLY if answered else ReplyKind.TIMEOUT,
                    responder=host.address if answered else None,
                    recv_ns=sent_ns + int(host.rtts[i] * 1e6) if answered else None,
                )
            )
    return outcomes, sent


@dataclass(frozen=True, slots=True)
class _Group:
    """Targets probed together: the same flows and settings."""

    flows: tuple[FlowSpec, ...]
    params: TraceParams
    members: tuple[tuple[TargetConfig, str], ...]  # (target, address)


def _groups(
    members: Iterable[tuple[TargetConfig, str]],
    key: Callable[[TargetConfig], tuple[tuple[FlowSpec, ...], TraceParams]],
) -> list[_Group]:
    by: dict[tuple[tuple[FlowSpec, ...], TraceParams], list[tuple[TargetConfig, str]]] = {}
    for target, address in members:
        by.setdefault(key(target), []).append((target, address))
    return [_Group(flows, params, tuple(m)) for (flows, params), m in by.items()]


def _engine(
    addresses: Sequence[str], flows: Sequence[FlowSpec], params: TraceParams
) -> Any:  # RunResult
    from reachtest.engine.bpf import for_run
    from reachtest.engine.tracer import Tracer
    from reachtest.engine.transport import RawTransport

    transport = RawTransport(receive_filter=for_run(addresses, flows))
    try:
        return Tracer(transport, list(addresses), list(flows), params).run()
    finally:
        transport.close()


def _record(result: Any, members: Sequence[tuple[TargetConfig, str]], started: datetime) -> Record:
    from reachtest.analysis.analyse import analyse
    from reachtest.report.record import RunMeta, build_record

    meta = RunMeta(
        command=("reachtest", "run"),
        started=started,
        finished=datetime.now(UTC),
        hosts={address: t.name for t, address in members},
        dns=False,
    )
    return build_record(result, analyse(result.outcomes, result.params, result.budgets), meta)


def check(
    members: Sequence[tuple[TargetConfig, str]], progress: Progress, steps: int
) -> tuple[Record, dict[str, float]]:
    """The fast check of every target: one run record, and the seconds spent per target."""
    from reachtest.model import RunResult

    started = datetime.now(UTC)
    began = time.monotonic_ns()
    spent: dict[str, float] = {}
    pinged = [(t, a) for t, a in members if ICMP_FLOW in t.flows]
    timeout = min(CHECK_TIMEOUT_S, max((t.timeout_s for t, _ in members), default=1.0))
    progress(0, steps, f"ICMP echo to {len(pinged)} targets")
    moment = time.monotonic()
    outcomes, sent = icmp_outcomes([a for _, a in pinged], timeout)
    for t, _ in pinged:
        spent[t.name] = time.monotonic() - moment
    params = TraceParams(
        first_ttl=CHECK_TTL,
        max_ttl=CHECK_TTL,
        rounds=CHECK_ROUNDS,
        interval_s=CHECK_INTERVAL_S,
        timeout_s=timeout,
        gap_limit=1,
    )
    services = [(t, a) for t, a in members if any(f != ICMP_FLOW for f in t.flows)]
    groups = _groups(services, lambda t: (tuple(f for f in t.flows if f != ICMP_FLOW), params))
    extras: list[Outcome] = []
    strays: list[Stray] = []
    stray_counts: dict[str, int] = {}
    for n, group in enumerate(groups, 1):
        progress(n, steps, f"TCP/UDP check of {len(group.members)} targets")
        moment = time.monotonic()
        result = _engine([a for _, a in group.members], group.flows, params)
        outcomes += result.outcomes
        extras += result.extras
        strays += result.strays
        for reason, count in result.stray_counts:
            stray_counts[reason] = stray_counts.get(reason, 0) + count
        sent += result.sent
        for t, _ in group.members:
            spent[t.name] = spent.get(t.name, 0.0) + time.monotonic() - moment
    flows = tuple(dict.fromkeys(f for t, _ in members for f in t.flows))
    combined = RunResult(
        params=params,
        targets=tuple(a for _, a in members),
        flows=flows,
        started_ns=began,
        finished_ns=time.monotonic_ns(),
        outcomes=tuple(outcomes),
        extras=tuple(extras),
        strays=tuple(strays),
        stray_counts=tuple(sorted(stray_counts.items())),
        sent=sent,
        interrupted=False,
    )
    return _record(combined, members, started), spent


def _trace_key(t: TargetConfig) -> tuple[tuple[FlowSpec, ...], TraceParams]:
    return t.flows, TraceParams(
        max_ttl=t.max_ttl, rounds=t.rounds, interval_s=t.interval_s, timeout_s=t.timeout_s
    )


def trace(
    members: Sequence[tuple[TargetConfig, str]], progress: Progress, step: int, steps: int
) -> tuple[list[Record], dict[str, float]]:
    """Full traces (TTL 1 up) of ``members``: one run record per group of settings."""
    records, spent = [], {}
    for n, group in enumerate(_groups(members, _trace_key)):
        progress(step + n, steps, f"tracing {len(group.members)} targets hop by hop")
        started = datetime.now(UTC)
        moment = time.monotonic()
        result = _engine([a for _, a in group.members], group.flows, group.params)
        records.append(_record(result, group.members, started))
        for t, _ in group.members:
            spent[t.name] = time.monotonic() - moment
    return records, spent


def trace_target_requests(
    t: TargetConfig,
    entry: dict[str, Any],
    ttls: Sequence[int],
    *,
    raw: bool = True,
    timeout_s: float | None = None,
) -> None:
    """The target's request flows (tls/PORT, http/PORT, dns/PORT) at ``ttls``, with their
    control name, judged and added to its record ``entry``. ``raw``: raw sockets allowed
    (``run`` is root; the exporter may be unprivileged); ``timeout_s``: the target's
    own unless less is left (a scrape)."""
    if not t.requests:
        return
    from reachtest.report.record import add_requests
    from reachtest.session import trace_request

    for kind, port in t.requests:
        name = t.request_names[kind]
        verdict, outcomes = trace_request(
            entry["address"], port, kind, name, t.control_name, ttls,
            timeout_s=t.timeout_s if timeout_s is None else min(timeout_s, t.timeout_s),
            raw=raw, query_type=t.query_type,
        )  # fmt: skip
        dns = kind == "dns"
        add_requests(
            entry, f"{kind}/{port}", verdict, outcomes, "raw" if raw and not dns else "ordinary",
            query_type=t.query_type if dns else None,
        )  # fmt: skip


#: Targets whose requests are traced at once (each holds 2 names x its TTLs of sockets:
#: 8 x 60 stays well under the usual 1024 open files).
REQUEST_WORKERS = 8


def _all_requests(jobs: Sequence[tuple[TargetConfig, dict[str, Any], Sequence[int]]]) -> None:
    """``trace_target_requests`` for many targets, several at once: a request that gets no answer
    waits its timeout, and a scheduled run may have hundreds of targets."""
    jobs = [job for job in jobs if job[0].requests]
    if len(jobs) <= 1:
        for job in jobs:
            trace_target_requests(*job)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=REQUEST_WORKERS) as pool:
        for done in [pool.submit(trace_target_requests, *job) for job in jobs]:
            done.result()  # an error in one is the run's error


# -- the pass ---------------------------------------------------------------------------


def _previous(history: HistoryStore | None, names: Sequence[str]) -> dict[str, dict[str, str]]:
    """name -> flow -> word in the newest stored run that holds the target."""
    if history is None:
        return {}
    return {
        name: {
            flow: ("reachable" if reached else "unreachable")
            if flow == str(Protocol.ICMP) and state != UNRESOLVED
            else (state or "filtered")
            for flow, (state, reached) in flows.items()
        }
        for name, flows in history.last_services(names).items()
    }


def run_batch(
    config: Config,
    *,
    history: HistoryStore | None,
    progress: Progress,
    resolve: Callable[[str, int | None], str],
) -> Batch:
    """One pass over ``config``'s targets (see the module's docstring); it writes
    nothing (``store_batch`` does; the history is only read here)."""
    started = datetime.now(UTC)
    members: list[tuple[TargetConfig, str]] = []
    unresolved: list[tuple[TargetConfig, str]] = []
    owner: dict[str, str] = {}  # address -> the target traced for it
    for t in config.targets:
        try:
            address = resolve(t.host, t.family)
        except ReachtestError as exc:
            unresolved.append((t, str(exc)))
            continue
        if address in owner:  # two names, one address: traced once, under the first
            unresolved.append(
                (
                    t,
                    f"{t.host} resolves to {address}, the address of target {owner[address]!r}:"
                    f" traced once, as {owner[address]!r} (give one target per address)",
                )
            )
            continue
        owner[address] = t.name
        members.append((t, address))
    service_groups = len({tuple(f for f in t.flows if f != ICMP_FLOW) for t, _ in members})
    steps = 1 + service_groups + len({_trace_key(t) for t, _ in members})
    check_record, spent = check(members, progress, steps)
    by_address = {t["address"]: t for t in check_record["targets"]}

    why_not = {t.name: error for t, error in unresolved}
    check_record["unresolved"] = [
        {"host": t.name, "query": t.host, "flows": list(t.labels_of_flows), "error": error}
        for t, error in unresolved
    ]
    # Requests after the handshake: end to end (TTL 64) in the check.
    _all_requests([(t, by_address[a], [CHECK_TTL]) for t, a in members])
    traced: dict[str, str] = {}
    changes: list[tuple[str, str, str, str]] = []
    previous = _previous(history, [t.name for t in config.targets])
    for t, _ in unresolved:
        before = previous.get(t.name)
        if before is not None:
            changes += [(t.name, f, w, UNRESOLVED) for f, w in before.items() if w != UNRESOLVED]
    for t, address in members:
        now = states(by_address[address])
        failing = any(not meets(w, now.get(f, UNRESOLVED)) for f, w in t.expect.items())
        before = previous.get(t.name)
        if before is not None:
            changes += [(t.name, f, before[f], w) for f, w in now.items() if before.get(f, w) != w]
        reason = why_trace(t.policy, failing, now, before)
        if reason is not None:
            traced[t.name] = reason
    chosen = [(t, a) for t, a in members if t.name in traced]
    trace_records, trace_spent = trace(chosen, progress, 1 + service_groups, steps)
    progress(steps, steps, "done")
    for name, seconds in trace_spent.items():
        spent[name] = spent.get(name, 0.0) + seconds

    final = dict(by_address)
    for record in trace_records:
        final.update({t["address"]: t for t in record["targets"]})
    # Traced targets: their requests TTL by TTL, up to the target.
    _all_requests(
        [
            (t, final[a], range(1, min(final[a]["distance"] or t.max_ttl, t.max_ttl) + 1))
            for t, a in chosen
            if final[a] is not by_address[a]
        ]
    )
    # Targets that ask for it (`mtu`), traced or not: each flow's path MTU (one probe a
    # flow on a clean path; a search, and where bigger packets die, otherwise).
    from reachtest.session import measure_mtu

    for t, a in members:
        if t.mtu is not None:
            measure_mtu(final[a], t.timeout_s)
    # And (`mda`) each flow over many flow hashes: every branch, and flows that die on one.
    from reachtest.session import measure_branches

    for t, a in members:
        if t.mda is not None and final[a]["flows"]:
            measure_branches(final[a], confidence=t.mda, timeout_s=min(t.timeout_s, 1.0))
    judged: list[Judged] = []
    addresses = {t.name: a for t, a in members}
    for t in config.targets:
        found = addresses.get(t.name)
        entry = final.get(found) if found is not None else None
        judged += judge(t, entry, found, t.name in traced, why_not.get(t.name, UNRESOLVED))

    records = (("check", check_record), *(("trace", r) for r in trace_records))
    return Batch(
        started=started,
        finished=datetime.now(UTC),
        judged=tuple(judged),
        records=records,
        traced=traced,
        reports=(),
        changes=tuple(changes),
        durations_s=spent,
        run_id=None,
        unresolved=why_not,
    )


def store_batch(
    batch: Batch, config: Config, writer: Writing | None, save_reports: SaveReports
) -> Batch:
    """Write what ``batch`` found, all or nothing: the traces' reports, then the batch in
    the history's open transaction (``writer``, taken by the caller before: the wait for
    the lock comes before any file), committed last. If anything fails on the way, the
    reports already written are removed and the transaction is not committed. The batch
    with its reports and run id. Nothing before this writes."""
    reports: list[Path] = []
    try:
        if config.reports is not None:
            for kind, record in batch.records:
                if kind == "trace":
                    reports += save_reports(record, str(config.reports))
        run_id = writer.add_batch(list(batch.records))[0] if writer is not None else None
        if writer is not None:
            writer.commit()
    except BaseException:
        for path in reports:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return replace(batch, reports=tuple(reports), run_id=run_id)


# -- the summary ----------------------------------------------------------------------------


def where(j: Judged) -> str:
    """Where a traced flow stops, in words ('' when not traced or it got through): the
    words of ``analysis.where``, as every report says them."""
    if not j.traced or j.got in ("open", "reachable"):
        return ""
    if j.stopped is None:  # the mtu expectation: where bigger packets die
        if j.last_hop is None:
            return ""
        return f"{j.reason} after hop {j.last_hop} ({j.last_address})"
    return j.stopped.words()


def summary(batch: Batch, history: str | None = None) -> list[str]:
    """The short report for cron mail: what is not as expected and where it stops, what
    changed since the last run, and where the reports went."""
    expectations = [j for j in batch.judged if j.met is not None]
    failed = batch.failed
    targets = len({j.target for j in batch.judged})
    seconds = (batch.finished - batch.started).total_seconds()
    stamp = batch.started.strftime("%Y-%m-%d %H:%M:%S UTC")
    head = (
        f"all {len(expectations)} expectations met"
        if not failed
        else f"{len(failed)} of {len(expectations)} expectations not met"
    )
    lost = f", {len(batch.unresolved)} not resolved" if batch.unresolved else ""
    lines = [
        f"reachtest run: {head} · {targets} targets ({len(batch.traced)} traced{lost}) · "
        f"{stamp} · {seconds:.1f} s"
    ]
    for j in failed:
        at = f" ({j.address})" if j.address else ""
        stop = where(j)
        lines.append(
            f"  {j.target}{at} {j.flow}: expected {j.expected}, got {j.got} ({j.reason})"
            + (f"; {stop}" if stop else "")
        )
        if j.finding:
            lines.append(f"    {j.finding}")
    shown = {j.target for j in failed}
    lines += [
        f"  {name}: not resolved, nothing sent ({why})"
        for name, why in batch.unresolved.items()
        if name not in shown
    ]
    if batch.changes:
        lines.append("changed since the last run:")
        lines += [f"  {t} {f}: {a} -> {b}" for t, f, a, b in batch.changes]
    if batch.traced:
        lines.append("traced: " + "; ".join(f"{t} ({why})" for t, why in batch.traced.items()))
    lines += [f"report: {p}" for p in batch.reports if p.suffix == ".html"]
    if history is not None and batch.run_id is not None:
        lines.append(f"history: run {batch.run_id} in {history}")
    return lines
