"""The tracer: targets x flows x TTLs x rounds, paced, matched, streamed as outcome records.

Scheduling, in short:

* A round lasts ``interval_s``. Each (target, flow) gets a slot in it, evenly spaced,
  so the probes of all flows and targets that expire at the same TTL (and so at the
  same router, which rate-limits its ICMP errors) are spread over the round, not burst.
  The slots rotate by one each round: no flow is first at a router every round.
* Each router's ICMP-error budget is learned and spent by ``budget``: before a probe that
  expires at a known router is sent, the router's budget admits it, makes it wait, or
  holds it back (a routine probe of a flow already shown to pass that hop). Urgent are
  the reference flow (ICMP, or the first flow without it), a flow at TTLs it is not yet
  shown to pass (around where it stops), a flow whose own router at a hop is not yet
  known, and every ``REFRESH_ROUNDS`` a flow's probe at each hop (ECMP may route it
  differently).
* Proof: when a flow is silent at the TTL after its last answer while another flow got an
  ICMP error from a router there, the silent flow is probed there once more, alone, a
  token's worth of refill after the silent probe (a second when the router is not known
  to limit; the timeout has mostly passed that) and when that router's budget allows.
  A filter stays silent; a rate limit answers.
* In its slot a flow sweeps TTLs upwards. It never goes beyond its *horizon*: the
  lowest TTL that got a final answer (the target, or a reject); else the distance at
  which another flow reached the target (one TTL past its own last answer when it met a
  router there: a longer branch), or before any did, the highest TTL that answered plus
  ``gap_limit``. A sweep that hits its horizon while probes are in
  flight waits for them: their answers may move the horizon.
* ``fast`` mode sends every TTL of every flow at once, in one round.
* A global ``rate_pps`` cap and ``max_in_flight`` bound what is on the wire.
"""

from __future__ import annotations

import heapq
import itertools
import math
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence

from reachtest.engine.budget import SEND, SKIP, TRY, Budget
from reachtest.engine.matcher import (
    ANSWERED,
    OUTSTANDING,
    TIMED_OUT,
    UNSET_TTL,
    FlowEntry,
    FlowKey,
    SentProbe,
    ServiceKey,
    flow_key,
    match,
    service_key,
)
from reachtest.engine.transport import Transport
from reachtest.model import (
    Extra,
    FlowSpec,
    HopBudget,
    Outcome,
    Protocol,
    ReplyKind,
    RunResult,
    Stray,
    StrayReason,
    TraceParams,
)
from reachtest.packet.build import ProbeTemplate, family_of, packed
from reachtest.packet.identity import SPACE, IdentityCodec
from reachtest.packet.parse import Malformed, Parsed, parse

_NEVER = 1 << 62
#: Parked sweeps older than a timeout and this many rounds more are let go.
PARKED_ROUNDS = 10
_SEND_BATCH = 64
_RATE_BURST = 16
_TERMINAL_FROM_ANYONE = frozenset(
    {
        ReplyKind.ADMIN_PROHIBITED,
        ReplyKind.NET_UNREACHABLE,
        ReplyKind.HOST_UNREACHABLE,
        ReplyKind.PROTOCOL_UNREACHABLE,
        ReplyKind.UNREACHABLE,
        ReplyKind.FRAG_NEEDED,
        ReplyKind.PACKET_TOO_BIG,
        ReplyKind.PORT_UNREACHABLE,
        ReplyKind.ECHO_REPLY,
        ReplyKind.TCP_SYN_ACK,
        ReplyKind.TCP_RST,
        ReplyKind.UDP_REPLY,
    }
)
_FROM_TARGET_KINDS = frozenset(
    {ReplyKind.ECHO_REPLY, ReplyKind.TCP_SYN_ACK, ReplyKind.TCP_RST, ReplyKind.UDP_REPLY}
)
#: A proof waits this long for a router not known to limit (Linux refills a token a second).
PROOF_WAIT_NS = 1_000_000_000
#: A flow's probe at a hop it is shown to pass is urgent again after this many rounds.
REFRESH_ROUNDS = 10

OutcomeSink = Callable[[Outcome], None]
#: Told every packet matched to a probe (answers, duplicates, late ones): bytes, receive ns.
PacketSink = Callable[[bytes, int], None]


class _Target:
    __slots__ = ("address", "entries", "family", "packed", "reach_ttl", "router_at", "source")

    def __init__(self, address: str, source: str) -> None:
        self.address = address
        self.family = family_of(address)
        self.packed = packed(address)
        self.source = source
        self.reach_ttl = 0
        self.entries: list[FlowEntry] = []
        self.router_at: dict[int, str] = {}  # TTL -> the router that sent an ICMP error


class _Sweep:
    """TTLs ``next_ttl``..``stop_ttl`` of one flow in one round (one TTL for a probe that
    waits for its router's budget, or a proof)."""

    __slots__ = ("entry", "next_ttl", "proof", "round", "stop_ttl", "wait_until")

    def __init__(
        self,
        entry: FlowEntry,
        round_: int,
        first_ttl: int,
        stop_ttl: int = 255,
        proof: bool = False,
    ) -> None:
        self.entry = entry
        self.round = round_
        self.next_ttl = first_ttl
        self.stop_ttl = stop_ttl
        self.proof = proof
        self.wait_until = 0  # a probe waiting for its router's budget: when to give up


#: Bounds that keep every time an integer of nanoseconds: 31 years of rounds, a day a wait.
MAX_ROUNDS = 1_000_000_000
MAX_SECONDS = 86_400.0
#: A packet-rate cap is 0 (none) or in this range: below, one probe takes longer than
#: any run (and the pacing's arithmetic overflows); above, no machine sends that fast.
MIN_RATE_PPS = 0.01
MAX_RATE_PPS = 10_000_000.0


def validate(params: TraceParams) -> None:
    """Raise ValueError naming the first parameter out of range."""
    if not 1 <= params.first_ttl <= 255:
        raise ValueError(f"first TTL must be 1..255, not {params.first_ttl}")
    if not params.first_ttl <= params.max_ttl <= 255:
        raise ValueError(f"max TTL must be {params.first_ttl}..255, not {params.max_ttl}")
    if not 1 <= params.rounds <= MAX_ROUNDS:
        raise ValueError(f"rounds must be 1..{MAX_ROUNDS}, not {params.rounds}")
    for name, value in (
        ("interval", params.interval_s),
        ("timeout", params.timeout_s),
        ("rate", params.rate_pps),
    ):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, not {value}")
    if not 0 <= params.interval_s <= MAX_SECONDS:
        raise ValueError(f"interval must be 0..{MAX_SECONDS:g} seconds, not {params.interval_s}")
    if not 0 < params.timeout_s <= MAX_SECONDS:
        raise ValueError(
            f"timeout must be positive, at most {MAX_SECONDS:g} s, not {params.timeout_s}"
        )
    if params.max_in_flight < 1:
        raise ValueError(f"max in flight must be at least 1, not {params.max_in_flight}")
    if params.rate_pps != 0 and not MIN_RATE_PPS <= params.rate_pps <= MAX_RATE_PPS:
        raise ValueError(
            f"rate must be 0 (no cap) or {MIN_RATE_PPS:g} to {MAX_RATE_PPS:g} packets a "
            f"second, not {params.rate_pps:g}"
        )
    if params.gap_limit < 1:
        raise ValueError(f"gap limit must be at least 1, not {params.gap_limit}")


_STOP_CHECK_NS = 200_000_000  # the longest wait before looking at stop() again


class Tracer:
    """Runs one trace over a transport and streams its outcomes."""

    def __init__(
        self,
        transport: Transport,
        targets: Sequence[str],
        flows: Sequence[FlowSpec],
        params: TraceParams,
        *,
        udp_payload: bytes = b"",
        on_outcome: OutcomeSink | None = None,
        on_reply: PacketSink | None = None,
        keep_outcomes: bool = True,
        keep_strays: int = 1000,
    ) -> None:
        validate(params)
        if not targets:
            raise ValueError("no targets")
        if not flows:
            raise ValueError("no flows")
        self.transport = transport
        self.params = params
        self.flows = tuple(flows)
        # The flow that keeps full per-hop statistics at rate-limited routers: ICMP, or
        # without it the first flow.
        self._reference = next((f for f in self.flows if f.protocol is Protocol.ICMP), flows[0])
        self.udp_payload = udp_payload
        self.on_outcome = on_outcome
        self.on_reply = on_reply
        self.keep_outcomes = keep_outcomes
        self.keep_strays = keep_strays
        self.outcomes: list[Outcome] = []
        self.extras: list[Outcome] = []
        self.extras_dropped = 0
        self.strays: list[Stray] = []
        self.stray_counts: dict[str, int] = {}
        self.sent = 0
        self.held = 0
        self.matched = 0
        self.in_flight = 0
        self.rounds_started = 0
        self._stop = False
        self._runnable: deque[_Sweep] = deque()
        self._entries: dict[FlowKey, FlowEntry] = {}
        self._services: dict[ServiceKey, list[FlowEntry]] = {}
        self._targets: list[_Target] = []
        self._budgets: dict[str, Budget] = {}
        self._heap: list[tuple[int, int, _Sweep]] = []
        self._counter = itertools.count()
        self._timeout_ns = int(params.timeout_s * 1e9)
        interval = params.interval_s
        self._parked_rounds = PARKED_ROUNDS + (
            math.ceil(params.timeout_s / interval) if interval > 0 else 0
        )
        # End-to-end probes (at or past their flow's final answer): lost ones; answered
        # ones, by sending time until they are as old as a timeout, then counted.
        self._e2e_lost = 0
        self._e2e_answered: deque[int] = deque()
        self._e2e_old = 0
        for address in dict.fromkeys(targets):
            target = _Target(address, transport.source_address(address))
            self._targets.append(target)
            for flow in self.flows:
                entry = self._make_entry(target, flow)
                target.entries.append(entry)
                self._entries[entry.key] = entry
                self._services.setdefault(service_key(entry.key), []).append(entry)
        self.targets = tuple(t.address for t in self._targets)

    def _make_entry(self, target: _Target, flow: FlowSpec) -> FlowEntry:
        # ICMP: the echo identifier (the flow key holds the target too: identifiers need not
        # differ between targets; an unprivileged transport's ping socket sets its own).
        sport = self.transport.reserve_port(target.family, str(flow.protocol))
        template = ProbeTemplate(
            src=target.source,
            dst=target.address,
            protocol=flow.protocol,
            sport=sport,
            dport=flow.port or 0,
            codec=IdentityCodec(),
            udp_payload=self.udp_payload,
        )
        entry = FlowEntry(target.address, flow, template, flow_key(template))
        entry.max_answered = self.params.first_ttl - 1
        entry.target_state = target
        return entry

    def budgets(self) -> tuple[HopBudget, ...]:
        """What has been learned of each router's budget so far, in address order."""
        known = list(self._budgets.values())  # one C-level copy: the live view reads this
        return tuple(b.record() for b in sorted(known, key=lambda b: b.address))

    def _budget(self, address: str) -> Budget:
        budget = self._budgets.get(address)
        if budget is None:
            budget = self._budgets[address] = Budget(address)
        return budget

    def _budget_for(self, entry: FlowEntry, ttl: int) -> Budget | None:
        """The budget of the router a probe at ``ttl`` expires at, when it is known."""
        address = entry.hop_at.get(ttl)
        if address is None:
            target: _Target = entry.target_state
            address = target.router_at.get(ttl)
        return None if address is None else self._budgets.get(address)

    def _urgent(self, entry: FlowEntry, ttl: int, round_: int) -> bool:
        return (
            entry.flow == self._reference
            or ttl > entry.max_answered
            or ttl not in entry.hop_at
            or round_ - entry.probed_round.get(ttl, -REFRESH_ROUNDS) >= REFRESH_ROUNDS
        )

    def _schedule(self, at_ns: int, sweep: _Sweep) -> None:
        heapq.heappush(self._heap, (at_ns, next(self._counter), sweep))

    def stop(self) -> None:
        """Ask a running trace to stop at its next wake-up (within 0.2 s; for Ctrl-C and
        ``q``): probes still in flight are not waited for, the result says interrupted."""
        self._stop = True

    # -- the loop ----------------------------------------------------------------------

    def _horizon(self, entry: FlowEntry) -> int:
        params = self.params
        if params.fast:
            return params.max_ttl
        horizon = min(params.max_ttl, entry.terminal_ttl)
        if entry.terminal_ttl == UNSET_TTL:
            # Up to where another flow reached the target (so the end-to-end probe runs
            # every round, even when rate-limited routers keep this flow's TTLs silent);
            # before any did, up to the gap limit past this flow's last answer.
            # A flow that still meets a router at or past that distance takes a longer
            # path there (a longer branch of a load balancer): it goes one TTL past its
            # last answer, as far as its own path is long.
            target: _Target = entry.target_state
            reach = target.reach_ttl or entry.max_answered + params.gap_limit
            if target.reach_ttl and entry.max_answered >= target.reach_ttl:
                reach = entry.max_answered + 1
            horizon = min(horizon, reach)
        return horizon

    def run(self, *, stop_at: float | None = None) -> RunResult:
        """Probe until every round is sent and every probe answered or timed out; with
        ``stop_at`` (a ``time.monotonic()`` instant), stop then as ``stop()`` would."""
        params = self.params
        transport = self.transport
        clock = transport.now_ns
        started = clock()
        timeout_ns = self._timeout_ns
        retention_ns = max(3 * timeout_ns, 5_000_000_000)
        interval_ns = int(params.interval_s * 1e9)
        rounds = 1 if params.fast else params.rounds
        entries = [e for t in self._targets for e in t.entries]
        leading = [e for e in entries if e.flow == self._reference]
        following = [e for e in entries if e.flow != self._reference]
        slot_ns = 0 if params.fast or not entries else interval_ns // len(entries)
        gap_ns = int(1e9 / params.rate_pps) if params.rate_pps else 0
        credit_ns = started
        heap = self._heap
        runnable = self._runnable
        deadlines: deque[SentProbe] = deque()
        retained: deque[SentProbe] = deque()
        next_round = 0
        next_round_ns = started
        first_ttl = params.first_ttl
        max_ttl = params.max_ttl
        max_in_flight = params.max_in_flight
        send = transport.send
        try:
            while True:
                now = clock()
                if stop_at is not None and time.monotonic() >= stop_at:
                    self._stop = True
                if self._stop:
                    break
                while next_round < rounds and now >= next_round_ns:
                    # The reference flows first in every round (their probes take a
                    # rate-limited router's token before the services' do: its numbers
                    # read like mtr's); the others take turns after them.
                    for slot, entry in enumerate(leading):
                        self._schedule(
                            next_round_ns + slot * slot_ns, _Sweep(entry, next_round, first_ttl)
                        )
                    n = len(following)
                    for slot, entry in enumerate(following):
                        at_ns = next_round_ns + (len(leading) + (slot + next_round) % n) * slot_ns
                        self._schedule(at_ns, _Sweep(entry, next_round, first_ttl))
                    next_round += 1
                    next_round_ns += interval_ns
                    self.rounds_started = next_round
                while heap and heap[0][0] <= now:
                    runnable.append(heapq.heappop(heap)[2])
                # -- send
                batch = 0
                while runnable and batch < _SEND_BATCH and self.in_flight < max_in_flight:
                    if gap_ns and credit_ns > now:
                        break
                    sweep = runnable[0]
                    entry = sweep.entry
                    ttl = sweep.next_ttl
                    horizon = self._horizon(entry)
                    if ttl > horizon or ttl > sweep.stop_ttl:
                        runnable.popleft()
                        if entry.outstanding and not params.fast and ttl <= sweep.stop_ttl:
                            self._park(entry, sweep)
                        continue
                    budget = self._budget_for(entry, ttl)
                    if budget is not None:
                        # Probes to it long past its slowest answer: misses, known now.
                        self._overdue(budget, now - budget.late_ns(), now)
                        proof = sweep.proof
                        wait = budget.admit(now, proof or self._urgent(entry, ttl, sweep.round))
                        if wait not in (SEND, TRY):
                            sweep.next_ttl = ttl + 1
                            if sweep.next_ttl > min(max_ttl, sweep.stop_ttl):
                                runnable.popleft()
                            # A probe waits for its router's token at most a round (a
                            # proof as long as it takes): then the next round's probe
                            # of that cell is due.
                            until = sweep.wait_until or now + interval_ns
                            if wait == SKIP or (now + wait > until and not proof):
                                budget.on_hold()
                                self.held += 1
                            else:
                                later = _Sweep(entry, sweep.round, ttl, ttl, proof)
                                later.wait_until = until
                                self._schedule(now + wait, later)
                            continue
                    k = entry.next_k
                    entry.next_k = (k + 1) % SPACE
                    template = entry.template
                    target = entry.target_state
                    sent_ns = send(template.build(ttl, k), target.family, target.address)
                    probe = SentProbe(
                        entry,
                        ttl,
                        sweep.round,
                        k,
                        template.codec.b(k),
                        sent_ns,
                        sent_ns + timeout_ns,
                    )
                    if budget is not None:
                        probe.budget = budget
                        probe.had_token = budget.on_send(
                            sent_ns, wait == TRY, entry.max_answered >= ttl
                        )
                        budget.pending.append(probe)
                    probe.proof = sweep.proof
                    entry.probed_round[ttl] = sweep.round
                    entry.by_k[k] = probe
                    entry.outstanding += 1
                    self.in_flight += 1
                    self.sent += 1
                    deadlines.append(probe)
                    batch += 1
                    if gap_ns:
                        credit_ns = max(credit_ns, now - _RATE_BURST * gap_ns) + gap_ns
                    sweep.next_ttl = ttl + 1
                    if sweep.next_ttl > min(max_ttl, sweep.stop_ttl):
                        runnable.popleft()
                # -- receive
                now = clock()
                wait_ns = _NEVER
                if runnable and self.in_flight < max_in_flight:
                    wait_ns = max(0, credit_ns - now) if gap_ns else 0
                if heap:
                    wait_ns = min(wait_ns, heap[0][0] - now)
                if next_round < rounds:
                    wait_ns = min(wait_ns, next_round_ns - now)
                while deadlines and deadlines[0].state != OUTSTANDING:
                    retained.append(deadlines.popleft())  # answered: no need to wait for it
                if deadlines:
                    wait_ns = min(wait_ns, deadlines[0].deadline_ns - now)
                if wait_ns == _NEVER:
                    break
                wait_ns = min(wait_ns, _STOP_CHECK_NS)  # see stop() soon
                if stop_at is not None:
                    wait_ns = min(wait_ns, int((stop_at - time.monotonic()) * 1e9))
                for data, recv_ns in transport.receive(max(wait_ns, 0) / 1e9):
                    self._handle(data, recv_ns)
                # -- timeouts and forgetting
                now = clock()
                while deadlines and deadlines[0].deadline_ns <= now:
                    probe = deadlines.popleft()
                    retained.append(probe)
                    if probe.state == OUTSTANDING:
                        probe.state = TIMED_OUT
                        self._emit(_timeout(probe))
                        self._missed(probe, now)
                        self._resolved(probe.entry)
                while retained and retained[0].sent_ns + retention_ns <= now:
                    probe = retained.popleft()
                    by_k = probe.entry.by_k
                    if by_k.get(probe.k) is probe:
                        del by_k[probe.k]
        finally:
            finished = clock()
            for budget in self._budgets.values():
                budget.settle()
        return RunResult(
            params=params,
            targets=tuple(t.address for t in self._targets),
            flows=self.flows,
            started_ns=started,
            finished_ns=finished,
            outcomes=tuple(self.outcomes),
            extras=tuple(self.extras),
            strays=tuple(self.strays),
            stray_counts=tuple(sorted(self.stray_counts.items())),
            sent=self.sent,
            interrupted=self._stop,
            budgets=self.budgets(),
            extras_dropped=self.extras_dropped,
            kernel_dropped=self.kernel_dropped(),
            bad_checksums=int(getattr(self.transport, "bad_checksums", 0)),
        )

    def kernel_dropped(self) -> int | None:
        """Packets the kernel dropped on our receive socket so far (None: not known)."""
        stats = getattr(self.transport, "receive_stats", None)
        return None if stats is None else int(stats()[1])

    def _path_loss(self, now: int) -> float:
        """The share of end-to-end probes (at or past a flow's final answer) lost, over
        those old enough to have timed out (answered and lost alike: no early bias),
        with one lost and one answered added (an estimate that never says 0 on no data)."""
        answered = self._e2e_answered
        while answered and answered[0] <= now - self._timeout_ns:
            answered.popleft()
            self._e2e_old += 1
        return (self._e2e_lost + 1) / (self._e2e_lost + self._e2e_old + 2)

    def _missed(self, probe: SentProbe, now: int) -> None:
        """A probe timed out: a budget miss, and maybe a proof to send."""
        entry, ttl = probe.entry, probe.ttl
        if ttl >= entry.terminal_ttl:
            self._e2e_lost += 1
        if probe.budget is not None and entry.max_answered >= ttl and not probe.missed:
            probe.budget.on_miss(probe.sent_ns, now, probe.had_token, self._path_loss(now))
        if ttl != entry.max_answered + 1 or ttl in entry.proved or ttl in entry.hop_at:
            return
        target: _Target = entry.target_state
        if ttl in target.router_at and not self._stop:
            entry.proved.add(ttl)  # at most one proof per flow and TTL
            # A token's worth of refill after the silent probe (its timeout has usually
            # passed that already): the learned rate's, or a second (Linux's).
            budget = self._budget_for(entry, ttl)
            refill_ns = PROOF_WAIT_NS
            if budget is not None and budget.limited:
                refill_ns = int(1e9 / budget.rate)
            at_ns = max(now, probe.sent_ns + refill_ns)
            self._schedule(at_ns, _Sweep(entry, probe.round, ttl, ttl, proof=True))

    def _park(self, entry: FlowEntry, sweep: _Sweep) -> None:
        """Hold a sweep that reached its flow's horizon until an answer moves it (or no
        probe of the flow is left in flight). Sweeps of rounds long past (older than a
        timeout and PARKED_ROUNDS more) are let go: a flow that never ends would pile
        up one a round, and each answer would walk them all."""
        parked = entry.parked
        parked.append(sweep)
        entry.parked_at = (
            sweep.next_ttl if len(parked) == 1 else min(entry.parked_at, sweep.next_ttl)
        )
        oldest = sweep.round - self._parked_rounds
        if parked[0].round < oldest:
            parked[:] = [s for s in parked if s.round >= oldest]

    def _resolved(self, entry: FlowEntry) -> None:
        entry.outstanding -= 1
        self.in_flight -= 1
        # The parked sweeps go back to run only when they can do something: the horizon
        # moved, or nothing is left in flight (then they end).
        if entry.parked and (entry.outstanding == 0 or self._horizon(entry) >= entry.parked_at):
            self._runnable.extend(entry.parked)
            entry.parked.clear()

    def _handle(self, data: bytes, recv_ns: int) -> None:
        try:
            parsed = parse(data)
        except (Malformed, struct.error, IndexError) as exc:
            self._stray(StrayReason.MALFORMED, recv_ns, None, str(exc) or type(exc).__name__)
            return
        if parsed is None:
            return
        found = match(parsed, recv_ns, self._entries, self._services)
        probe = found.probe
        if probe is None:
            assert found.reason is not None
            self._stray(found.reason, recv_ns, parsed.responder, _summary(parsed))
            return
        outcome = _reply(probe, parsed, recv_ns, found.changed, found.exact)
        if self.on_reply is not None:
            self.on_reply(data, recv_ns)
        if probe.state == OUTSTANDING:
            probe.state = ANSWERED
            self.matched += 1
            entry = probe.entry
            self._learn(entry, probe, parsed, outcome.responder, recv_ns)
            if probe.ttl >= entry.terminal_ttl:
                self._e2e_answered.append(probe.sent_ns)
                self._path_loss(recv_ns)  # ages the answered ones: the deque stays short
            self._emit(outcome)
            self._resolved(entry)
            return
        extra = Extra.DUPLICATE if probe.state == ANSWERED else Extra.LATE
        if self.keep_outcomes or len(self.extras) < self.keep_strays:
            self.extras.append(_with_extra(outcome, extra))
        else:
            self.extras_dropped += 1

    def _overdue(self, budget: Budget, before_ns: int, now_ns: int) -> None:
        """Count as misses the probes to ``budget``'s router sent before ``before_ns`` and
        still unanswered (a later probe was answered, or they are far past its RTT)."""
        pending = budget.pending
        while pending and (pending[0].state != OUTSTANDING or pending[0].sent_ns < before_ns):
            early = pending.popleft()
            if early.state == OUTSTANDING and early.entry.max_answered >= early.ttl:
                early.missed = True
                budget.on_miss(early.sent_ns, now_ns, early.had_token, self._path_loss(now_ns))

    def _learn(
        self,
        entry: FlowEntry,
        probe: SentProbe,
        parsed: Parsed,
        responder: str | None,
        recv_ns: int,
    ) -> None:
        ttl = probe.ttl
        entry.max_answered = max(entry.max_answered, ttl)
        if parsed.icmp_type >= 0 and parsed.kind not in _FROM_TARGET_KINDS and responder:
            # An ICMP error: its sender's budget paid for it. Other flows' probes at this
            # TTL meet the same budget only when a router sent it (the target's port
            # unreachable is no concern of a TCP probe).
            entry.hop_at[ttl] = responder
            if parsed.kind is ReplyKind.TIME_EXCEEDED:
                target_: _Target = entry.target_state
                target_.router_at[ttl] = responder
            budget = self._budget(responder)
            budget.on_answer(probe.sent_ns, probe.had_token, recv_ns - probe.sent_ns)
            # Probes to this router sent before this one and still unanswered: misses now.
            self._overdue(budget, probe.sent_ns, recv_ns)
        if parsed.kind in _TERMINAL_FROM_ANYONE and ttl < entry.terminal_ttl:
            entry.terminal_ttl = ttl
            target: _Target = entry.target_state
            if parsed.responder == target.packed and ttl > target.reach_ttl:
                target.reach_ttl = ttl

    def _emit(self, outcome: Outcome) -> None:
        if self.keep_outcomes:
            self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _stray(
        self, reason: StrayReason, recv_ns: int, responder: bytes | None, summary: str
    ) -> None:
        self.stray_counts[reason] = self.stray_counts.get(reason, 0) + 1
        if len(self.strays) < self.keep_strays:
            self.strays.append(
                Stray(
                    reason=reason,
                    recv_ns=recv_ns,
                    responder=_address(responder) if responder else None,
                    summary=summary,
                )
            )


def _address(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def _summary(parsed: Parsed) -> str:
    return (
        f"{parsed.kind} from {_address(parsed.responder)} about "
        f"proto {parsed.proto} {_address(parsed.remote)} ports {parsed.lport}->{parsed.rport}"
    )


def _timeout(probe: SentProbe) -> Outcome:
    entry = probe.entry
    return Outcome(
        target=entry.target,
        flow=entry.flow,
        ttl=probe.ttl,
        round=probe.round,
        probe_id=probe.k,
        sent_ns=probe.sent_ns,
        kind=ReplyKind.TIMEOUT,
        proof=probe.proof,
    )


def _reply(
    probe: SentProbe, parsed: Parsed, recv_ns: int, changed: tuple[str, ...], exact: bool
) -> Outcome:
    entry = probe.entry
    quote = parsed.quote
    return Outcome(
        target=entry.target,
        flow=entry.flow,
        ttl=probe.ttl,
        round=probe.round,
        probe_id=probe.k,
        sent_ns=probe.sent_ns,
        kind=parsed.kind,
        responder=_address(parsed.responder),
        recv_ns=recv_ns,
        reply_ttl=parsed.reply_ttl or None,  # 0: the transport was not told
        icmp_type=None if parsed.icmp_type < 0 else parsed.icmp_type,
        icmp_code=None if parsed.icmp_code < 0 else parsed.icmp_code,
        tcp_flags=None if parsed.tcp_flags < 0 else parsed.tcp_flags,
        quote_ttl=None if quote is None else quote.ttl,
        quote_changed=changed,
        quote_src=_address(quote.src) if quote is not None and "src" in changed else None,
        quote_port=parsed.lport if "port" in changed else None,
        mpls=parsed.mpls,
        exact=exact,
        proof=probe.proof,
    )


def _with_extra(outcome: Outcome, extra: Extra) -> Outcome:
    from dataclasses import replace

    return replace(outcome, extra=extra)
