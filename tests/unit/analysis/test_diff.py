"""The diff of two runs: state changes and where a block moved, responder changes, and
per-hop latency and loss changes only when significant (noise is no change)."""

from __future__ import annotations

import copy
import random
from typing import Any

from reachtest.analysis.diff import classify, diff_runs, hop_change
from reachtest.report.diffview import RENDER
from tests.unit.report.conftest import router, sim_record


def test_a_drop_after_a_clean_run_is_a_regression_with_its_hop() -> None:
    clean, drop = sim_record(), sim_record({3: router(3, drop=frozenset({"tcp/443"}))})
    diff = diff_runs(clean, drop, before_name="a.json", after_name="b.json")
    by_flow = {s.flow: s for s in diff.services}
    https = by_flow["tcp/443"]
    assert (https.before, https.after, https.change) == ("open", "filtered", "regression")
    assert https.stop_after == "silent after hop 3 (198.18.3.2)" and https.stop_before == ""
    assert {s.change for f, s in by_flow.items() if f != "tcp/443"} == {"same"}
    assert diff.regressions == (https,)
    lost = {h.ttl for h in diff.hops if h.flow == "tcp/443" and h.loss_changed}
    assert lost == {4, 5, 6}  # silent after the drop: every probe of 5 lost, p < 0.01
    assert all(h.flow == "tcp/443" for h in diff.hops)
    back = diff_runs(drop, clean)
    assert [s.change for s in back.services if s.flow == "tcp/443"] == ["improvement"]
    for render in RENDER.values():
        text = render(diff)
        assert "tcp/443" in text and "filtered" in text


def test_a_run_against_itself_has_no_change() -> None:
    record = sim_record()
    diff = diff_runs(record, copy.deepcopy(record))
    assert not diff.changed and not diff.hops and not diff.regressions


def test_classify_names_the_kind_of_change() -> None:
    assert classify("open", "filtered", "", "blocked after hop 3") == "regression"
    assert classify("filtered", "closed", "x", "") == "changed"
    assert classify("filtered", "filtered", "blocked after hop 3", "blocked after hop 2") == "moved"
    assert classify("unreachable", "reachable", "", "") == "improvement"
    assert classify(None, "open", "", "") == "new" and classify("open", None, "", "") == "gone"


def _hop(rtts: list[float], responders: tuple[str, ...] = ("198.18.3.2",), lost: int = 0) -> Any:
    samples = [{"round": i, "kind": "time-exceeded", "responder": responders[0], "rtt_ms": r}
               for i, r in enumerate(rtts)]  # fmt: skip
    samples += [{"round": len(rtts) + i, "kind": "timeout", "responder": None, "rtt_ms": None}
                for i in range(lost)]  # fmt: skip
    return {
        "ttl": 3,
        "snt": len(rtts) + lost,
        "rcv": len(rtts),
        "responders": [{"address": a, "count": 1} for a in responders],
        "samples": samples,
    }


def test_latency_noise_is_no_change_and_a_real_shift_is() -> None:
    rng = random.Random(7)
    same = [hop_change("t", "icmp", _hop([rng.gauss(5, 1) for _ in range(20)]),
                       _hop([rng.gauss(5, 1) for _ in range(20)])) for _ in range(50)]  # fmt: skip
    assert sum(h.rtt_changed for h in same) <= 2  # about 1% of 50 at p < 0.01
    shifted = hop_change(
        "t", "icmp", _hop([rng.gauss(5, 1) for _ in range(20)]),
        _hop([rng.gauss(15, 1) for _ in range(20)]),
    )  # fmt: skip
    assert shifted.rtt_changed and shifted.rtt_p is not None and shifted.rtt_p < 1e-6
    assert not shifted.path_changed and not shifted.loss_changed


def test_a_new_responder_is_a_path_change_and_a_lost_probe_is_not_loss() -> None:
    moved = hop_change("t", "icmp", _hop([1.0] * 10), _hop([1.0] * 10, ("198.18.3.9",)))
    assert moved.path_changed and not moved.rtt_changed
    one = hop_change("t", "icmp", _hop([1.0] * 10), _hop([1.0] * 9, lost=1))
    assert not one.loss_changed and one.loss_after == (1, 10)


def test_non_answers_a_rate_limit_explains_are_no_change_of_loss() -> None:
    before = _hop([1.0] * 20)
    limited = _hop([1.0] * 4, lost=16)
    lossy = copy.deepcopy(limited)
    limited["limited"] = 16  # the router's ICMP budget, as the analysis found
    assert not hop_change("t", "icmp", before, limited).loss_changed
    assert hop_change("t", "icmp", before, limited).loss_after == (0, 4)
    assert hop_change("t", "icmp", before, lossy).loss_changed  # the same, unexplained
