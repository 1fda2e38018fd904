"""Run records made from real engine runs on the simulated network (no root), with fixed
wall-clock times so that rendered reports are reproducible."""

from __future__ import annotations

from datetime import UTC, datetime

from reachtest.analysis.analyse import analyse
from reachtest.engine.simulated import SimHop, SimPath, SimulatedNetwork
from reachtest.engine.tracer import Tracer
from reachtest.model import ICMP_FLOW, FlowSpec, TraceParams, tcp, udp
from reachtest.report.record import Record, RunMeta, build_record

TARGET = "198.18.6.2"
FLOWS: tuple[FlowSpec, ...] = (ICMP_FLOW, tcp(443), tcp(80), udp(53))
STARTED = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
FINISHED = datetime(2026, 11, 21, 10, 0, 5, tzinfo=UTC)
OPEN = frozenset({"icmp", "tcp/80", "tcp/443", "udp/53"})


def router(i: int, **options: object) -> SimHop:
    return SimHop(address=f"198.18.{i}.2", **options)  # type: ignore[arg-type]


def sim_record(
    special: dict[int, SimHop] | None = None,
    *,
    open_: frozenset[str] = OPEN,
    closed: frozenset[str] = frozenset(),
    flows: tuple[FlowSpec, ...] = FLOWS,
    rounds: int = 5,
    target: str = TARGET,
    names: dict[str, str] | None = None,
    interval_s: float = 0.1,
    timeout_s: float = 0.5,
) -> Record:
    """The record of a real engine run over a simulated 5-router path."""
    special = special or {}
    hops = tuple(special.get(i, router(i)) for i in range(1, 6))
    net = SimulatedNetwork(paths=(SimPath(target=target, hops=hops, open=open_, closed=closed),))
    params = TraceParams(rounds=rounds, interval_s=interval_s, timeout_s=timeout_s, max_ttl=10)
    result = Tracer(net, [target], flows, params).run()
    meta = RunMeta(
        command=("reachtest", "trace", "server"),
        started=STARTED,
        finished=FINISHED,
        hosts={target: "server"},
        names=names if names is not None else {"198.18.1.2": "r1.lab.test", TARGET: "srv.lab.test"},
    )
    return build_record(result, analyse(result.outcomes, result.params, result.budgets), meta)
