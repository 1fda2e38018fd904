"""Where a flow stops (issue 31): one hop, address and sentence from the path analysis,
for every way a flow stops; and the agreement check of the lab tests, shown to catch an
output that says otherwise (on records of the simulated network)."""

from __future__ import annotations

import pytest

from reachtest.analysis.where import Where, of_flow, of_request
from reachtest.lab.scenarios import scenario
from tests.lab import where_agreement
from tests.unit.report.conftest import sim_record
from tests.unit.report.test_record import SCENARIOS, flow

CASES = {
    # scenario of the simulated path: (how, hop, address, words, metric)
    "drop": ("silent", 3, "198.18.3.2", "silent after hop 3 (198.18.3.2)", 3),
    "prohibit": ("rejected", 2, "198.18.2.2", "rejected by hop 2 (198.18.2.2)", 2),
    "reset": (
        "forged", 4, "198.18.4.2", "answered in the target's name by hop 4 (198.18.4.2)", 4,
    ),
    "closed": ("closed", 6, "198.18.6.2", "answered by 198.18.6.2 at hop 6", 6),
    "clean": ("answered", 6, "198.18.6.2", "answered by 198.18.6.2 at hop 6", 0),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_each_way_a_flow_stops_has_one_hop_address_and_sentence(name: str) -> None:
    record = sim_record(**SCENARIOS[name])  # type: ignore[arg-type]
    stopped = of_flow(flow(record, "tcp/443"))
    assert stopped is not None
    how, hop, address, words, metric = CASES[name]
    assert (stopped.how, stopped.hop, stopped.address) == (how, hop, address)
    assert stopped.words() == words
    assert stopped.metric_hop == metric


def test_a_branch_and_a_request_say_their_own_hop() -> None:
    branch = Where("silent", 3, "198.18.103.2", share=(4, 11))
    assert branch.words() == (
        "4 of 11 flow hashes dropped after hop 3 (198.18.103.2); the others reach it"
    )
    assert (
        Where("rejected", 3, "198.18.103.2", share=(1, 2))
        .words()
        .startswith("1 of 2 flow hashes rejected by hop 3")
    )
    request = {
        "state": "blocked-after-handshake", "reason": "reset", "box_hop": 3,
        "box_address": "198.18.3.2", "on_path": False, "distance": 6,
    }  # fmt: skip
    assert of_request(request).words() == "reset in-path at hop 3 (198.18.3.2)"
    assert of_request(request).metric_hop == 3
    assert of_request({**request, "state": "answered"}).metric_hop == 0
    owners = {"198.18.3.2": {"asn": 64499}}
    assert Where("silent", 3, "198.18.3.2").words(owners) == (
        "silent after hop 3 (198.18.3.2, AS64499)"
    )


def hops(hop: int, v6: bool) -> set[str]:
    return {f"2001:db8:0:{hop}::2" if v6 else f"198.18.{hop}.2"}


def test_every_output_agrees_on_the_simulated_drop() -> None:
    record = sim_record(**SCENARIOS["drop"])  # type: ignore[arg-type]
    truth = scenario("tcp-drop", 5).truth
    assert where_agreement.disagreements(record, truth, hops) == []


def test_the_agreement_check_catches_an_output_or_a_truth_that_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = sim_record(**SCENARIOS["drop"])  # type: ignore[arg-type]
    # The truth of a path where r2 drops: the record's hop 3 is not it.
    wrong_truth = scenario("tcp-drop", 5).truth
    moved = tuple(
        f if f.flow.label != "tcp/443" else type(f)(
            flow=f.flow, state=f.state, reason=f.reason, reason_hop=None, last_hop=2,
            answer_ttl=None, reached=False,
        )
        for f in wrong_truth.flows
    )  # fmt: skip
    truth = type(wrong_truth)(**{**vars_of(wrong_truth), "flows": moved})
    problems = where_agreement.disagreements(record, truth, hops)
    assert problems == ["198.18.6.2 tcp/443: stops at hop 3, the truth says 2"]
    # diff saying it the old way ("blocked after") is caught
    monkeypatch.setattr(where_agreement, "diff_stop", lambda f: "blocked after hop 3")
    problems = where_agreement.disagreements(record, scenario("tcp-drop", 5).truth, hops)
    assert "198.18.6.2 tcp/443: the diff does not say 'silent after hop 3 (198.18.3.2)'" in problems


def vars_of(truth: object) -> dict[str, object]:
    return {name: getattr(truth, name) for name in truth.__dataclass_fields__}  # type: ignore[attr-defined]
