"""One trace as the user sees it: the engine in a worker thread, and in the foreground the
live view (redrawn as evidence grows, ``q`` or Ctrl-C to stop), a progress line, or nothing.

The engine keeps no outcome: each goes through a queue to the foreground, which folds it
into the run's Accumulator (streaming statistics), so memory and the cost of a frame stay
flat however long the run.

Part of the composition root with ``cli``: it wires engine, analysis and report.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from reachtest.analysis.accumulate import Accumulator
from reachtest.model import Outcome, RunResult

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from reachtest.asn import AsLookup
    from reachtest.engine.tracer import Tracer
    from reachtest.names import ReverseNames

#: The live view redraws at most this often (and less often when analysing takes long).
MIN_REDRAW_S = 0.25


@contextlib.contextmanager
def keys(stream: Any) -> Iterator[Callable[[float], str]]:
    """Single key presses from a terminal (cbreak mode, restored on exit); a reader that
    returns '' after ``timeout`` seconds. Without a terminal the reader only waits."""
    fd = stream.fileno() if hasattr(stream, "fileno") else -1
    if fd < 0 or not os.isatty(fd):

        def sleep(timeout: float) -> str:
            time.sleep(timeout)
            return ""

        yield sleep
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)

        def read(timeout: float) -> str:
            ready, _, _ = select.select([fd], [], [], timeout)
            return os.read(fd, 32).decode(errors="replace") if ready else ""

        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class TraceSession:
    """Runs ``tracer`` to the end (or until stopped) while the foreground shows it."""

    def __init__(
        self,
        tracer: Tracer,
        *,
        names: ReverseNames | None = None,
        asns: AsLookup | None = None,
    ) -> None:
        self.tracer = tracer
        tracer.keep_outcomes = False
        self.names = names
        self.asns = asns
        # The engine thread appends, the foreground pops (deque: both thread-safe).
        self._queue: deque[Outcome] = deque()
        self.accumulated = Accumulator()
        self.started_ns = tracer.transport.now_ns()
        self.started_monotonic = time.monotonic()
        self.stopped_by_user = False
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        # Waiting on an Event, not on Thread.join: a join interrupted by Ctrl-C can leave
        # is_alive() False while the thread still runs (CPython gh-90882).
        self._done = threading.Event()
        tracer.on_outcome = self._on_outcome
        self._thread = threading.Thread(target=self._work, name="engine", daemon=True)

    def _on_outcome(self, outcome: Outcome) -> None:
        self._queue.append(outcome)

    def drain(self) -> Accumulator:
        """Fold what the engine produced since the last call into ``accumulated`` (in
        the foreground thread only); reverse look-ups asked for new responders."""
        queue, accumulated, names = self._queue, self.accumulated, self.names
        while queue:
            outcome = queue.popleft()
            if names is not None:
                names.submit(outcome.responder)  # once per address: it keeps track
            if self.asns is not None:
                self.asns.submit(outcome.responder)
            accumulated.add(outcome)
        return accumulated

    def _work(self) -> None:
        try:
            self._result = self.tracer.run()
        except BaseException as exc:  # handed to the foreground thread
            self._error = exc
        finally:
            self._done.set()

    def snapshot(self) -> RunResult:
        """A RunResult of the run so far (for the live view; its outcomes are in
        ``accumulated``, brought up to date here)."""
        tracer = self.tracer
        self.drain()
        return RunResult(
            params=tracer.params,
            targets=tracer.targets,
            flows=tracer.flows,
            started_ns=self.started_ns,
            finished_ns=tracer.transport.now_ns(),
            outcomes=(),
            extras=tuple(tracer.extras),  # at most keep_strays of them
            strays=(),
            stray_counts=tuple(sorted(tracer.stray_counts.items())),
            sent=tracer.sent,
            interrupted=False,
            budgets=tracer.budgets(),
            extras_dropped=tracer.extras_dropped,
        )

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_monotonic

    def stop(self) -> None:
        self.stopped_by_user = True
        self.tracer.stop()

    def _finish(self) -> RunResult:
        while not self._done.is_set():
            try:
                self._done.wait(0.1)
            except KeyboardInterrupt:  # a second Ctrl-C: the engine is stopping already
                self.stop()
        self._thread.join()
        self.drain()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def run_quiet(self, on_tick: Callable[[], None] | None = None) -> RunResult:
        """No view: wait for the engine (``on_tick`` twice a second, for a progress line)."""
        self._thread.start()
        try:
            while not self._done.wait(0.5):
                self.drain()
                if on_tick is not None:
                    on_tick()
        except KeyboardInterrupt:
            self.stop()
        return self._finish()

    def run_live(
        self,
        console: Console,
        draw: Callable[[TraceSession], RenderableType],
        stdin: Any = None,
    ) -> RunResult:
        """The live view: ``draw(self)`` redrawn while the engine runs; ``q`` or Ctrl-C stop."""
        from rich.live import Live

        self._thread.start()
        next_draw = 0.0
        try:
            with (
                keys(stdin if stdin is not None else sys.stdin) as read_key,
                Live(
                    console=console,
                    auto_refresh=False,
                    transient=True,
                    vertical_overflow="crop",
                    redirect_stdout=False,
                    redirect_stderr=False,
                ) as live,
            ):
                while not self._done.is_set():
                    key = read_key(0.05)
                    if key and key[0] in "qQ":
                        self.stop()
                        break
                    now = time.monotonic()
                    if now < next_draw:
                        continue
                    renderable = draw(self)
                    cost = time.monotonic() - now
                    live.update(renderable, refresh=True)
                    next_draw = now + max(MIN_REDRAW_S, 4 * cost)
        except KeyboardInterrupt:
            self.stop()
        return self._finish()


def trace_request(
    address: str,
    port: int,
    kind: str,
    name: str,
    control: str | None,
    ttls: Sequence[int],
    *,
    timeout_s: float,
    raw: bool,
    sockets: Any = None,
    query_type: str = "A",
) -> tuple[Any, list[Any]]:
    """One request flow traced and judged (the verdict, the outcomes): every TTL of the
    test name and the control at once, then, for a drop with raw sockets (DNS: none
    needed), the proof of its first silence (``engine.requests.prove``). For ``trace``
    and ``run`` alike."""
    from reachtest.analysis.requests import judge_requests, needs_proof
    from reachtest.engine.requests import prove, trace_requests
    from reachtest.packet.requests import RequestKind

    if not ttls:
        raise ValueError("a request is traced at one TTL at least")
    names = [name] if control is None else [name, control]
    outcomes = trace_requests(
        address, port, RequestKind(kind), names, ttls, timeout_s=timeout_s, raw=raw,
        sockets=sockets, query_type=query_type,
    )  # fmt: skip
    verdict = judge_requests(outcomes, name, control)
    after = needs_proof(verdict)
    if after is not None and (raw or kind == "dns") and ttls:
        outcomes += prove(
            address, port, RequestKind(kind), name, after, max(ttls), timeout_s=timeout_s,
            sockets=sockets, query_type=query_type,
        )  # fmt: skip
        verdict = judge_requests(outcomes, name, control)
    return verdict, outcomes


def measure_mtu(target: dict[str, Any], timeout_s: float) -> None:
    """Each flow's path MTU at one target of a run record (``engine.mtu``), added to it
    with its finding (``report.record.add_mtu``). The routers the trace saw place a
    router that names an MTU; a TCP flow, which an ordinary socket cannot follow TTL by
    TTL, takes the hop another flow found for the same size. For ``trace --mtu``,
    ``run`` and the exporter alike."""
    from reachtest.engine.mtu import search
    from reachtest.errors import EnvironmentProblem
    from reachtest.report.record import add_mtu

    if not target["reachable"]:
        return  # nothing answers: no size would
    hops: dict[str, int] = {}
    for flow in target["flows"]:
        for hop in flow["hops"]:
            for responder in hop["responders"]:
                hops[responder["address"]] = min(hops.get(responder["address"], 255), hop["ttl"])
    located: dict[int, Any] = {}
    for flow in target["flows"]:
        try:
            found = search(
                target["address"], flow["protocol"], flow["port"], timeout_s=timeout_s,
                distance=target["distance"], known_hops=hops,
            )  # fmt: skip
        except EnvironmentProblem as exc:
            target.setdefault("mtu", []).append(
                {"flow": flow["flow"], "mtu": None, "local_mtu": 1500, "limit": None,
                 "named": False, "black_hole": False, "hop": None, "address": None,
                 "probes": 0, "note": f"not measured: {exc}"}
            )  # fmt: skip
            continue
        note = None
        if found.limit is not None and found.hop is not None:
            located.setdefault(found.limit, found)
        elif found.limit is not None and found.limit in located:
            other = located[found.limit]
            found = replace(found, hop=other.hop, address=other.address)
            note = f"where: as {other.flow} found it"
        add_mtu(target, found, note)


def measure_branches(
    target: dict[str, Any],
    *,
    confidence: float,
    timeout_s: float,
    flows: Sequence[str] | None = None,
    progress: Callable[[str, int], None] | None = None,
    stop_at: float | None = None,
) -> None:
    """Each flow of one target of a run record spread over many flow hashes (MDA,
    ``engine.multipath``), judged per branch (``analysis.branches``) and added to it
    (``report.record.add_branches``): the hops up to the target's distance (or one past
    the farthest that answered). For ``trace --mda``, ``run`` and the exporter alike."""
    from reachtest.analysis.branches import judge_branches
    from reachtest.engine.multipath import Exploration, explore, short_of, widths
    from reachtest.errors import EnvironmentProblem
    from reachtest.report.record import add_branches

    if target["distance"] is not None:
        last = target["distance"] - 1
    else:
        answered = [h["ttl"] for f in target["flows"] for h in f["hops"] if h["responders"]]
        last = max(answered, default=0) + 1
    chosen = [f for f in target["flows"] if flows is None or f["flow"] in flows]

    def run(flow: dict[str, Any], at_least: dict[int, int] | None = None) -> Exploration:
        report = None if progress is None else (lambda n, f=flow["flow"]: progress(f, n))
        return explore(
            target["address"], flow["protocol"], flow["port"], range(1, max(1, last) + 1),
            confidence=confidence, timeout_s=timeout_s, flow=flow["flow"], progress=report,
            stop_at=stop_at, at_least=at_least,
        )  # fmt: skip

    found: dict[str, Exploration | str] = {}
    for flow in chosen:
        try:
            found[flow["flow"]] = run(flow)
        except EnvironmentProblem as exc:
            found[flow["flow"]] = f"not measured: {exc}"
    # A hop's routers met by one flow are there for the other flows of its protocol too
    # (identifiers that vary the source port, or the echo id, spread over the same next
    # hops). A flow whose identifiers all hashed onto fewer of them, by chance (1 in 32
    # for 6 identifiers over 2 branches), may have seen only the branch that blocks it
    # and called that the whole path: it is explored again, held to that many routers.
    known: dict[str, dict[int, int]] = {}
    for flow in chosen:
        if isinstance(one := found[flow["flow"]], Exploration):
            most = known.setdefault(flow["protocol"], {})
            for ttl, n in widths(one).items():
                most[ttl] = max(most.get(ttl, 0), n)
    for flow in chosen:
        first = found[flow["flow"]]
        if not isinstance(first, Exploration) or not (
            short := short_of(first, known.get(flow["protocol"], {}))
        ):
            continue
        if stop_at is not None and time.monotonic() >= stop_at:
            continue
        with contextlib.suppress(EnvironmentProblem):
            again = run(flow, at_least=short)
            found[flow["flow"]] = replace(
                again,
                probes=first.probes + again.probes,
                elapsed_s=round(first.elapsed_s + again.elapsed_s, 3),
            )
    for flow in chosen:
        one = found[flow["flow"]]
        if isinstance(one, str):
            target.setdefault("multipath", []).append(
                {"flow": flow["flow"], "confidence": confidence, "probes": 0, "elapsed_s": 0.0,
                 "settled": False, "state": "unstable", "failing": 0, "of": 0, "unstable": 0,
                 "how": None, "hop": None, "address": None, "fork_hop": None,
                 "passing_via": [], "widest": 1, "widest_hop": None, "hops": [], "fates": [],
                 "note": one}
            )  # fmt: skip
            continue
        add_branches(target, one, judge_branches(one))
