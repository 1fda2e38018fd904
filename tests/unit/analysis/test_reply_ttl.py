"""Reply TTLs as evidence: an answer in the target's name that crossed no more routers on
its way back than the time-exceeded of the router before it comes from a box on the way,
not from the target; also with one flow and no ICMP, where no other flow can show it.
(Real engine, simulated path: replies leave with TTL 64 and lose one per router back.)"""

from __future__ import annotations

from collections import Counter

from reachtest.analysis.accumulate import accumulate
from reachtest.analysis.paths import closer_than_claimed, hops_back
from reachtest.model import tcp
from tests.unit.report.conftest import router, sim_record


def test_hops_back_guesses_the_initial_ttl() -> None:
    assert [hops_back(t) for t in (64, 59, 128, 120, 255, 250, 30)] == [0, 5, 0, 8, 0, 5, 2]


def _findings(record: dict[str, object]) -> dict[str, dict[str, object]]:
    target = record["targets"][0]  # type: ignore[index]
    return {f["kind"]: f for f in target["findings"]}


def test_a_forged_reset_is_found_with_one_flow_and_no_icmp() -> None:
    record = sim_record({3: router(3, reset=frozenset({"tcp/443"}))}, flows=(tcp(443),))
    flow = record["targets"][0]["flows"][0]
    answers = [s for h in flow["hops"] for s in h["samples"] if s["kind"] == "tcp-rst"]
    assert answers and {s["reply_ttl"] for s in answers} == {62}  # r3's, as r3's TE
    forged = _findings(record)["forged-reset"]
    assert forged["severity"] == "critical" and forged["last_hop"] == 4
    assert "crossed 2 routers on the way back" in forged["note"]
    assert "the time-exceeded of hop 3 crosses 2" in forged["note"]
    assert "a box at or before hop 3" in forged["note"]
    assert flow["verdict"]["reached"] is False  # a box on the way said closed, not the target


def test_the_targets_own_reset_is_not_called_forged() -> None:
    record = sim_record(flows=(tcp(443),), open_=frozenset(), closed=frozenset({"tcp/443"}))
    flow = record["targets"][0]["flows"][0]
    assert flow["verdict"]["state"] == "closed" and flow["verdict"]["reached"] is True
    assert "forged-reset" not in _findings(record)


def test_an_answer_from_further_than_the_last_router_is_genuine() -> None:
    record = sim_record(flows=(tcp(443),))
    assert record["targets"][0]["flows"][0]["verdict"]["state"] == "open"
    assert not {"forged-reset", "syn-proxy"} & set(_findings(record))


def test_closer_than_claimed_reads_the_outcome_table() -> None:
    from reachtest.engine.simulated import SimPath, SimulatedNetwork
    from reachtest.engine.tracer import Tracer
    from reachtest.model import TraceParams

    hops = tuple(
        router(i, reset=frozenset({"tcp/443"}) if i == 3 else frozenset()) for i in range(1, 6)
    )
    net = SimulatedNetwork(
        paths=(SimPath(target="198.18.6.2", hops=hops, open=frozenset({"tcp/443"})),)
    )
    result = Tracer(
        net, ["198.18.6.2"], [tcp(443)], TraceParams(rounds=3, interval_s=0.1, max_ttl=8)
    ).run()
    (obs,) = accumulate(result.outcomes).targets()
    assert closer_than_claimed(obs, "tcp/443", 4) == (2, 2, "router")


def test_an_asymmetric_return_path_is_judged_by_the_targets_other_answers() -> None:
    """The target's answers come back over fewer routers than the router before it (a
    shorter return route): every flow alike, so no flow is called forged."""
    from reachtest.analysis.paths import Observed

    obs = Observed("198.18.6.2")
    for label in ("icmp", "tcp/443"):
        obs.flows[label] = tcp(443) if label != "icmp" else tcp(1)
        obs.seen[label][5][("time-exceeded", "198.18.5.2", "", None)] += 3
        obs.back[label][5][("time-exceeded", "198.18.5.2", 4)] += 3
        final = "echo-reply" if label == "icmp" else "tcp-syn-ack"
        obs.seen[label][6][(final, "198.18.6.2", "", None)] += 3
        obs.back[label][6][(final, "198.18.6.2", 3)] += 3  # fewer than hop 5's 4
    assert closer_than_claimed(obs, "tcp/443", 6) is None
    obs.back["tcp/443"][6] = Counter({("tcp-syn-ack", "198.18.6.2", 1): 3})  # 2 fewer: another box
    assert closer_than_claimed(obs, "tcp/443", 6) == (1, 3, "flows")
