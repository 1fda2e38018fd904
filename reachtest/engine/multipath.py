"""Every branch of a load-balanced path, and each flow hash's fate: MDA (Augustin et al.'s
Multipath Detection Algorithm) per hop, through ordinary sockets (no root needed).

A *flow identifier* is what an ECMP router hashes and a flow's own probes keep: the
source port of a TCP or UDP flow, the echo identifier of an ICMP flow (a ping socket
bound to it). Each probe is one socket bound to its identifier, with the TTL set, a
connection attempt (TCP, ``SO_LINGER`` 0 so that nothing lingers), a datagram (UDP: the
flow's real payload, a DNS query to 53) or an echo request; the socket's error queue
(``IP_RECVERR``) names the router where it expired or that rejected it.

``explore`` measures two things with the same identifiers:

- **fates**: every identifier sent to the target at full TTL: answered, refused (the
  target's RST or port unreachable), rejected by a router (admin-prohibited and
  friends), silent; when they disagree (some reach the target, others do not), each is
  sent once more: a fate that is the same both times is the path's doing, not chance;
- **branches**: for each hop, identifiers probed at that TTL until the stopping rule
  says that no responder is left unseen: with ``k`` responders seen, ``n_k``
  identifiers must have answered there (6, 11, 16, 21, ... for 95%), the confidence per
  hop as in Augustin et al. and scamper's tracelb (a path with ``F`` forks misses one
  of their branches with a chance of at most ``F`` times one minus the confidence).
  Identifiers are spent where the rule needs them: a hop that shows one responder costs
  ``n_1``, a fork ``n_2``.

One socket per (identifier, destination) at a time (two connections on one 4-tuple
cannot coexist), so the probes go in *waves*: every identifier at most once per wave,
waves until every hop is settled. A wave waits for the slowest answer it can expect
(a few times the round trip seen so far), not the full timeout: a router's
time-exceeded comes back at once or not at all. A probe that stays silent at a hop where
others were answered is sent again after a second (a router's ICMP budget refills).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import random
import selectors
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from reachtest.engine.linux import (
    IP_RECVERR,
    IPV6_RECVERR,
    SOL_IP,
    SOL_IPV6,
    TCP_SYNCNT,
    icmp_errors,
    set_ttl,
)
from reachtest.errors import EnvironmentProblem

ANSWERED = "answered"  # the target's answer: SYN-ACK, UDP reply, echo reply
REFUSED = "refused"  # the target's refusal: RST, port unreachable (it was reached)
EXPIRED = "time-exceeded"
REJECTED = "rejected"  # a router's unreachable: admin-prohibited, host/net unreachable
SILENT = "silent"
#: The full TTL a fate probe is sent with.
FULL_TTL = 64
#: How many times each identifier's fate is measured when the identifiers' fates differ
#: (once when they all agree: no branch decides).
FATE_ROUNDS = 2
#: At most this many probes to one hop in one wave (Linux's default ICMP burst is 6).
WAVE_PER_HOP = 6
#: A silent probe at a hop where others answer is sent again at most this often.
RETRIES = 2
#: Waiting for a retried probe: Linux refills a router's ICMP budget at one token a second.
REFILL_S = 1.0


def stopping_points(confidence: float, most: int = 16) -> tuple[int, ...]:
    """``n_k`` for k = 1 .. ``most``: how many probes of distinct identifiers must have
    reached a hop, ``k`` responders seen there, to rule out a ``k+1``-th at
    ``confidence``: the smallest ``n`` for which ``n`` probes spread evenly over ``k+1``
    responders miss one of them with a chance of at most ``1 - confidence`` (exactly, by
    inclusion-exclusion; at 95% Augustin et al.'s table: 6, 11, 16, 21, 27, ...)."""
    if not 0 < confidence < 1:
        raise ValueError("the confidence is between 0 and 1")
    alpha = 1 - confidence
    out = []
    for k in range(1, most + 1):
        m = k + 1

        def miss(n: int, m: int = m) -> float:
            return float(
                sum((-1) ** (j + 1) * math.comb(m, j) * (1 - j / m) ** n for j in range(1, m))
            )

        n = 1
        while miss(n) > alpha:
            n += 1
        out.append(n)
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowProbe:
    """One probe of flow identifier ``flow_id`` sent with ``ttl``, and what came of it."""

    flow_id: int
    ttl: int
    outcome: str
    responder: str | None = None
    icmp: tuple[int, int] | None = None  # (type, code) of a router's error
    rtt_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Exploration:
    """What ``explore`` found for one flow: each identifier's fates and, per TTL, its
    responder (None: silent), and the probes it cost."""

    flow: str
    confidence: float
    flow_ids: tuple[int, ...]
    fates: dict[int, tuple[FlowProbe, ...]]
    paths: dict[int, dict[int, FlowProbe]]  # ttl -> flow id -> the probe's outcome
    ttls: tuple[int, ...]
    probes: int
    elapsed_s: float
    settled: bool  # every hop met the stopping rule
    note: str | None = None


@dataclass(slots=True)
class _Probe:
    flow_id: int
    ttl: int
    sock: socket.socket
    sent_ns: int = 0
    done: FlowProbe | None = None
    expired: FlowProbe | None = None


def _udp_payload(port: int, v6: bool) -> bytes:
    """What a UDP probe carries: to 53 a DNS query (a resolver answers it), else zeros,
    as the path MTU probes do (a packet of 128 bytes)."""
    from reachtest.engine.mtu import _payload

    return _payload("udp", port, 128, v6)


def _open(kind: str, v6: bool, flow_id: int, ttl: int) -> socket.socket:
    family = socket.AF_INET6 if v6 else socket.AF_INET
    if kind == "icmp":
        proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    elif kind == "udp":
        sock = socket.socket(family, socket.SOCK_DGRAM)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::" if v6 else "0.0.0.0", flow_id))
        level = SOL_IPV6 if v6 else SOL_IP
        sock.setsockopt(level, IPV6_RECVERR if v6 else IP_RECVERR, 1)
        set_ttl(sock, v6, ttl)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


#: ICMP errors by family (v6?) and (type, code); code None: any code of the type.
_ERRORS: dict[bool, dict[tuple[int, int | None], str]] = {
    False: {(11, 0): EXPIRED, (3, 3): REFUSED, (3, None): REJECTED},
    True: {(3, 0): EXPIRED, (1, 4): REFUSED, (1, None): REJECTED},
}


def send_wave(
    address: str,
    kind: str,
    port: int | None,
    probes: Sequence[tuple[int, int]],
    *,
    timeout_s: float,
) -> list[FlowProbe]:
    """Every (flow identifier, TTL) of ``probes`` at once (each identifier once), on
    ``kind`` (icmp, udp, tcp) to ``address`` (``port``); outcomes in the same order. An
    identifier whose port this host cannot bind comes back ``None``-free: it is left out."""
    v6 = ipaddress.ip_address(address).version == 6
    selector = selectors.DefaultSelector()
    made: list[_Probe] = []
    try:
        for flow_id, ttl in probes:
            try:
                sock = _open(kind, v6, flow_id, ttl)
            except OSError as exc:
                if kind == "icmp" and exc.errno in (errno.EACCES, errno.EPERM):
                    raise EnvironmentProblem(
                        "ICMP multipath needs ping sockets (net.ipv4.ping_group_range)"
                    ) from exc
                if exc.errno == errno.EADDRINUSE:
                    continue  # another program holds this port: not our identifier
                raise
            attempt = _Probe(flow_id, ttl, sock)
            made.append(attempt)
            _send(attempt, kind, port, address)
            if attempt.done is None:
                events = selectors.EVENT_WRITE if kind == "tcp" else selectors.EVENT_READ
                selector.register(sock, events, attempt)
        deadline = time.monotonic() + timeout_s
        while any(p.done is None for p in made) and (left := deadline - time.monotonic()) > 0:
            for key, events in selector.select(min(left, 0.05)):
                attempt = key.data
                _errors(attempt, v6)
                if attempt.done is None:
                    _answer(attempt, kind, address, events)
                if attempt.done is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        selector.unregister(attempt.sock)
            now = time.monotonic_ns()
            for attempt in made:  # an expiry is final once nothing else came with it
                if attempt.done is None and attempt.expired and now > attempt.sent_ns + 20_000_000:
                    attempt.done = attempt.expired
        for attempt in made:
            if attempt.done is None:
                attempt.done = attempt.expired or FlowProbe(
                    flow_id=attempt.flow_id, ttl=attempt.ttl, outcome=SILENT
                )
    finally:
        selector.close()
        for attempt in made:
            attempt.sock.close()
    return [p.done for p in made if p.done is not None]


def _rtt(attempt: _Probe) -> float:
    return round((time.monotonic_ns() - attempt.sent_ns) / 1e6, 3)


def _send(attempt: _Probe, kind: str, port: int | None, address: str) -> None:
    sock = attempt.sock
    attempt.sent_ns = time.monotonic_ns()
    try:
        if kind == "tcp":
            sock.connect_ex((address, port or 0))
            return
        sock.connect((address, port or 0))
        if kind == "icmp":  # the kernel fills the identifier (the bound port) and checksum
            sock.send(struct.pack("!BBHHH", 128 if ":" in address else 8, 0, 0, 0, 1))
        else:
            sock.send(_udp_payload(port or 0, ":" in address))
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            attempt.done = FlowProbe(
                flow_id=attempt.flow_id, ttl=attempt.ttl, outcome=REFUSED, responder=address
            )
        elif exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES):
            attempt.done = FlowProbe(flow_id=attempt.flow_id, ttl=attempt.ttl, outcome=REJECTED)
        else:
            raise


def _errors(attempt: _Probe, v6: bool) -> None:
    """The socket's error queue: time-exceeded, refused, a router's rejection."""
    for icmp_type, code, offender, _info in icmp_errors(attempt.sock):
        if attempt.done is not None:
            continue
        what = _ERRORS[v6].get((icmp_type, code)) or _ERRORS[v6].get((icmp_type, None))
        if what is None:
            continue
        said = FlowProbe(
            flow_id=attempt.flow_id, ttl=attempt.ttl, outcome=what, responder=offender,
            icmp=(icmp_type, code), rtt_ms=_rtt(attempt),
        )  # fmt: skip
        if what == EXPIRED:
            attempt.expired = attempt.expired or said
        else:
            attempt.done = said


def _answer(attempt: _Probe, kind: str, address: str, events: int) -> None:
    sock = attempt.sock
    rtt = _rtt(attempt)
    if kind == "tcp":
        if not events & selectors.EVENT_WRITE:
            return
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error == 0:
            outcome = ANSWERED
        elif error == errno.ECONNREFUSED:
            outcome = REFUSED
        elif error in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES):
            # The ICMP error that ended the attempt; the error queue (read first) said
            # which, and who: a time-exceeded ends a connection attempt too.
            if attempt.expired is not None:
                attempt.done = attempt.expired
                return
            outcome = REJECTED
        else:
            return  # a timeout of the kernel's own: silence, decided at the deadline
        attempt.done = FlowProbe(
            flow_id=attempt.flow_id, ttl=attempt.ttl, outcome=outcome,
            responder=address if outcome != REJECTED else None, rtt_ms=rtt,
        )  # fmt: skip
        return
    try:
        sock.recv(65535)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            attempt.done = FlowProbe(
                flow_id=attempt.flow_id, ttl=attempt.ttl, outcome=REFUSED, responder=address,
                rtt_ms=rtt,
            )  # fmt: skip
        return
    attempt.done = FlowProbe(
        flow_id=attempt.flow_id, ttl=attempt.ttl, outcome=ANSWERED, responder=address, rtt_ms=rtt
    )


def widths(found: Exploration) -> dict[int, int]:
    """How many routers answered at each TTL of ``found``: the branches it saw there."""
    return {
        ttl: len({p.responder for p in row.values() if _at_hop(p)})
        for ttl, row in found.paths.items()
    }


def short_of(found: Exploration, known: Mapping[int, int]) -> dict[int, int]:
    """The hops where ``found``'s identifiers met fewer routers than ``known`` (TTL ->
    the most routers any flow of the same protocol met there) although some of them
    answered: where all its identifiers hashed onto fewer branches than the hop has, by
    chance, and a failing branch may have been the only one they saw."""
    seen = widths(found)
    return {ttl: n for ttl, n in known.items() if 0 < seen.get(ttl, 0) < n}


def _at_hop(probe: FlowProbe) -> bool:
    """Did ``probe`` find a node at its TTL: a router's time-exceeded, or the target
    itself (a shorter branch reaches it within the TTL)?"""
    return probe.outcome in (EXPIRED, ANSWERED, REFUSED) and probe.responder is not None


def flow_ids(count: int, *, seed: int | None = None, icmp: bool = False) -> list[int]:
    """``count`` distinct flow identifiers: consecutive source ports from a random base
    in the dynamic range (or echo identifiers for ICMP)."""
    rng = random.Random(seed)
    if icmp:
        return rng.sample(range(1, 65536), count)
    base = rng.randrange(33000, 61000 - count)
    return list(range(base, base + count))


@dataclass(slots=True)
class _State:
    ids: list[int] = field(default_factory=list)
    fates: dict[int, list[FlowProbe]] = field(default_factory=dict)
    paths: dict[int, dict[int, FlowProbe]] = field(default_factory=dict)
    tries: dict[tuple[int, int], int] = field(default_factory=dict)
    last_try: dict[tuple[int, int], float] = field(default_factory=dict)
    probes: int = 0
    worst_rtt_ms: float = 0.0
    note: str | None = None


def explore(
    address: str,
    kind: str,
    port: int | None,
    ttls: Sequence[int],
    *,
    confidence: float = 0.95,
    timeout_s: float = 1.0,
    most_ids: int = 64,
    seed: int | None = None,
    flow: str | None = None,
    progress: Callable[[int], None] | None = None,
    stop_at: float | None = None,
    at_least: Mapping[int, int] | None = None,
) -> Exploration:
    """The branches of every hop in ``ttls`` and each identifier's fate, for one flow
    (``kind``/``port``) to ``address``; at most ``most_ids`` identifiers. With
    ``stop_at`` (a ``time.monotonic()`` instant; the exporter's scrape) no wave starts
    after it: what was found by then, not settled, says so. ``at_least`` (TTL -> routers)
    holds a hop to the stopping point of that many routers even while fewer have been
    seen: the routers another flow of the same protocol met there (``widths``)."""
    started = time.monotonic()
    points = stopping_points(confidence)  # per hop, as MDA and scamper define it
    pool = flow_ids(most_ids, seed=seed, icmp=kind == "icmp")
    state = _State()
    ttls = sorted(set(ttls))

    def take(n: int) -> None:
        while len(state.ids) < n and len(state.ids) < len(pool):
            state.ids.append(pool[len(state.ids)])

    def needed(ttl: int) -> int:
        """Identifiers that must have answered at ``ttl`` before it is settled."""
        seen = {p.responder for p in state.paths.get(ttl, {}).values() if _at_hop(p)}
        known = (at_least or {}).get(ttl, 1)
        return points[min(max(len(seen), known, 1), len(points)) - 1]

    def answered(ttl: int) -> int:
        return sum(1 for p in state.paths.get(ttl, {}).values() if _at_hop(p))

    def silent(i: int, ttl: int) -> bool:
        probe = state.paths.get(ttl, {}).get(i)
        return probe is not None and probe.outcome == SILENT

    def reached(i: int) -> bool:
        """Did identifier ``i`` reach the target (its fate so far)? A silence on the way
        of one that did is a router's budget or a silent router, worth a retry; of one
        that did not, it is where the flow stops."""
        return any(f.outcome in (ANSWERED, REFUSED) for f in state.fates.get(i, ()))

    def retry_ok(i: int, ttl: int, now: float) -> bool:
        return (
            reached(i)
            and state.tries.get((i, ttl), 0) <= RETRIES
            and now - state.last_try.get((i, ttl), 0.0) >= REFILL_S
            and answered(ttl) > 0
        )

    def open_at(ttl: int) -> list[int]:
        """Identifiers not yet probed at ``ttl``, or silent there and due a retry."""
        done = state.paths.get(ttl, {})
        now = time.monotonic()
        return [i for i in state.ids if i not in done or (silent(i, ttl) and retry_ok(i, ttl, now))]

    def stuck(ttl: int) -> int:
        """Identifiers silent at ``ttl`` that will not be tried there again."""
        done = state.paths.get(ttl, {})
        return sum(
            1 for i, p in done.items()
            if not _at_hop(p) and (
                p.outcome != SILENT or not reached(i) or state.tries.get((i, ttl), 0) > RETRIES
            )
        )  # fmt: skip

    take(points[0])
    while True:
        # Which hops still need identifiers; more identifiers when the pool of those
        # taken cannot settle them.
        unsettled = [t for t in ttls if answered(t) < needed(t)]
        for t in unsettled:
            if answered(t) == 0 and len(state.paths.get(t, {})) >= points[0]:
                continue  # a router that answers nobody: no identifier will change that
            if len(state.ids) - stuck(t) < needed(t):
                take(needed(t) + stuck(t))
        # Each identifier's fate once; all of them again once they disagree (proof that
        # it is the path, not chance, that decides).
        mixed = len({reached(i) for i in state.ids if state.fates.get(i)}) == 2
        rounds = FATE_ROUNDS if mixed else 1
        fate_due = [i for i in state.ids if len(state.fates.get(i, ())) < rounds]
        wave: dict[int, int] = {}
        per_ttl: dict[int, int] = {}
        for i in fate_due:  # fates first: one probe each at the full TTL
            wave[i] = FULL_TTL
        for t in unsettled:
            for i in open_at(t):
                if i in wave or per_ttl.get(t, 0) >= WAVE_PER_HOP:
                    continue
                if answered(t) + per_ttl.get(t, 0) >= needed(t) and silent(i, t):
                    continue  # enough on their way: no retry needed
                wave[i] = t
                per_ttl[t] = per_ttl.get(t, 0) + 1
        if not wave:
            now = time.monotonic()
            waiting = any(
                silent(i, t) and reached(i) and state.tries.get((i, t), 0) <= RETRIES
                and answered(t) > 0
                for t in unsettled for i in state.paths.get(t, {})
            )  # fmt: skip
            if waiting:
                time.sleep(REFILL_S / 4)  # retries wait for the routers' budgets
                continue
            break
        if stop_at is not None and time.monotonic() >= stop_at:
            state.note = "stopped at the time limit before every hop was settled"
            break
        full = any(t == FULL_TTL for t in wave.values())
        wait = timeout_s if full else min(timeout_s, max(0.25, 4 * state.worst_rtt_ms / 1e3 + 0.05))
        now = time.monotonic()
        if stop_at is not None:
            wait = max(0.05, min(wait, stop_at - now))
        for i, t in wave.items():
            if t != FULL_TTL:
                state.tries[(i, t)] = state.tries.get((i, t), 0) + 1
                state.last_try[(i, t)] = now
        outcomes = send_wave(address, kind, port, sorted(wave.items()), timeout_s=wait)
        state.probes += len(outcomes)
        if progress is not None:
            progress(state.probes)
        for o in outcomes:
            if o.rtt_ms is not None:
                state.worst_rtt_ms = max(state.worst_rtt_ms, o.rtt_ms)
            if o.ttl == FULL_TTL:
                state.fates.setdefault(o.flow_id, []).append(o)
            else:
                row = state.paths.setdefault(o.ttl, {})
                if o.flow_id not in row or row[o.flow_id].outcome == SILENT:
                    row[o.flow_id] = o
        sent_ids = {o.flow_id for o in outcomes}
        for i in wave:
            if i not in sent_ids:  # its port could not be bound: drop the identifier
                state.ids.remove(i)
                pool.remove(i)
        if len(state.ids) >= len(pool) and not fate_due and not any(open_at(t) for t in unsettled):
            break
    settled = all(answered(t) >= needed(t) or answered(t) == 0 for t in ttls)
    return Exploration(
        flow=flow or (kind if kind == "icmp" else f"{kind}/{port}"),
        confidence=confidence,
        flow_ids=tuple(state.ids),
        fates={i: tuple(state.fates.get(i, ())) for i in state.ids},
        paths={t: dict(state.paths.get(t, {})) for t in ttls},
        ttls=tuple(ttls),
        probes=state.probes,
        elapsed_s=round(time.monotonic() - started, 3),
        settled=settled and state.note is None,
        note=state.note,
    )
