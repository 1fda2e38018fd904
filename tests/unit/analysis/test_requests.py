"""Judging a request traced TTL by TTL after the handshake (analysis/requests.py): where
the box sits, reset or dropped or a block page, filtered by name or not."""

from __future__ import annotations

import pytest

from reachtest.analysis.requests import (
    ANSWERED,
    BLOCKED,
    NO_HANDSHAKE,
    judge_requests,
    needs_proof,
)
from reachtest.engine.requests import RequestOutcome

SERVER = "198.18.6.2"


def router(ttl: int) -> str:
    return f"198.18.{ttl}.2"


def trace(name: str, per_ttl: dict[int, str], raw: bool = True) -> list[RequestOutcome]:
    out = []
    for ttl, said in per_ttl.items():
        outcome = "silent" if said == "time-exceeded" and not raw else said
        responder = router(ttl) if outcome == "time-exceeded" else SERVER
        out.append(RequestOutcome(name=name, ttl=ttl, outcome=outcome, responder=responder))
    return out


def path(box: dict[int, str], last: int = 6) -> dict[int, str]:
    """time-exceeded up to the server at ``last``, then answered; ``box`` overrides."""
    plain = {ttl: "time-exceeded" for ttl in range(1, last)} | {last: "answered"}
    return plain | box


def test_a_reset_from_ttl_4_puts_the_box_at_hop_3_and_the_control_passes() -> None:
    outcomes = trace("bad.example", path({4: "reset", 5: "reset", 6: "reset"}))
    outcomes += trace("good.example", path({}))
    verdict = judge_requests(outcomes, "bad.example", "good.example")
    assert (verdict.state, verdict.reason, verdict.box_hop) == (BLOCKED, "reset", 3)
    assert verdict.box_address == router(3) and verdict.by_name is True
    assert verdict.distance == 6
    assert verdict.summary("tls/443") == (
        "tls/443 for bad.example: the handshake completes; the request is reset at hop 3 "
        "(198.18.3.2); the control name good.example is answered"
    )


@pytest.mark.parametrize("raw", [True, False])
def test_a_proven_silence_after_the_last_router_is_a_drop_there(raw: bool) -> None:
    from dataclasses import replace

    outcomes = trace("bad.example", path({4: "silent", 5: "silent", 6: "silent"}), raw)
    outcomes += trace("good.example", path({}), raw)
    outcomes = [replace(o, captured=raw) for o in outcomes]
    verdict = judge_requests(outcomes, "bad.example", "good.example")
    assert (verdict.state, verdict.reason) == (BLOCKED, "dropped")
    assert verdict.box_hop is None  # not proven: a rate-limited router may hide hops
    assert verdict.box_range == ((3, None) if raw else None)
    if raw:
        assert needs_proof(verdict) == 3
        assert "dropped after hop 3 (198.18.3.2) (not proven where)" in verdict.summary("x/1")
    proof = RequestOutcome(name="bad.example", ttl=4, outcome="silent", captured=raw, proof=True)
    proven = judge_requests([*outcomes, proof], "bad.example", "good.example")
    assert proven.box_hop == (3 if raw else None)  # without raw sockets: not known


def test_a_proof_that_gets_time_exceeded_moves_the_drop_on() -> None:
    from dataclasses import replace

    outcomes = trace("bad.example", path({2: "silent", 3: "silent", 4: "silent", 5: "silent",
                                          6: "silent"}))  # fmt: skip
    outcomes = [replace(o, captured=True) for o in outcomes]  # r2 was rate-limited
    proofs = [
        RequestOutcome(name="bad.example", ttl=2, outcome="time-exceeded",
                       responder=router(2), captured=True, proof=True),
        RequestOutcome(name="bad.example", ttl=3, outcome="silent", captured=True, proof=True),
    ]  # fmt: skip
    verdict = judge_requests(outcomes + proofs, "bad.example", None)
    assert (verdict.box_hop, verdict.box_address) == (2, router(2))


def test_an_answer_before_the_server_is_reachable_is_a_block_page() -> None:
    outcomes = trace("bad.example", path({4: "answered", 5: "answered", 6: "answered"}))
    outcomes += trace("good.example", path({}))
    verdict = judge_requests(outcomes, "bad.example", "good.example")
    assert (verdict.state, verdict.reason, verdict.box_hop) == (BLOCKED, "block-page", 3)


def test_both_names_blocked_is_not_filtering_by_name() -> None:
    outcomes = trace("bad.example", path({4: "reset", 5: "reset", 6: "reset"}))
    outcomes += trace("good.example", path({4: "reset", 5: "reset", 6: "reset"}))
    verdict = judge_requests(outcomes, "bad.example", "good.example")
    assert verdict.state == BLOCKED and verdict.by_name is False
    assert "is not answered either" in verdict.summary("http/80")


def test_answered_and_no_handshake() -> None:
    answered = judge_requests(trace("a.example", path({})), "a.example", None)
    assert answered.state == ANSWERED and answered.distance == 6 and answered.by_name is None
    refused = [RequestOutcome(name="a.example", ttl=t, outcome="no-handshake") for t in (1, 2)]
    assert judge_requests(refused, "a.example", None).state == NO_HANDSHAKE


def test_a_reset_with_the_servers_answer_after_it_is_on_path() -> None:
    from dataclasses import replace

    test = trace("bad.example", path({4: "reset", 5: "reset", 6: "reset"}))
    test = [replace(o, captured=True, late_answer=o.ttl == 6) for o in test]
    control = trace("good.example", path({}))
    verdict = judge_requests(test + control, "bad.example", "good.example")
    assert verdict.on_path is True
    assert "reset on-path at hop 3 (198.18.3.2) (the server's own answer came after it)" in (
        verdict.summary("tls/443")
    )
    in_path = [replace(o, captured=True, late_answer=False) for o in test]
    assert judge_requests(in_path + control, "bad.example", "good.example").on_path is False


def test_one_ttl_alone_says_what_but_not_where() -> None:
    """An end-to-end check sends the request at TTL 64 only: a reset there is no box at
    hop 63, an answer there no distance of 64."""
    reset = trace("bad.example", {64: "reset"}) + trace("good.example", {64: "answered"})
    verdict = judge_requests(reset, "bad.example", "good.example")
    assert (verdict.state, verdict.reason, verdict.box_hop, verdict.distance) == (
        BLOCKED, "reset", None, None,
    )  # fmt: skip
    assert "at hop" not in verdict.summary("tls/443")


def test_a_check_at_one_ttl_asks_for_no_proof() -> None:
    """A drop seen at TTL 64 alone (the fast check) has no router to walk on from: no
    proof (it walked every TTL from 1, a second each: 81 s for 8 targets)."""
    from dataclasses import replace

    silent = [replace(o, captured=True) for o in trace("bad.example", {64: "silent"})]
    assert needs_proof(judge_requests(silent, "bad.example", None)) is None


def dns(
    name: str, per_ttl: dict[int, str], forged: set[int], late: set[int]
) -> list[RequestOutcome]:
    """A DNS trace: TTLs in ``forged`` answered by a forged answer (in the server's name),
    those in ``late`` also by the server's own after it."""
    from dataclasses import replace

    out = []
    for o in trace(name, per_ttl):
        text = b"NOERROR A 198.18.255.254" if o.ttl in forged else b"NOERROR A 198.18.6.2"
        answer = "dns-noerror" if o.outcome == "answered" else None
        out.append(replace(o, captured=True, answer=answer, excerpt=text if answer else b"",
                           late_answer=o.ttl in late))  # fmt: skip
    return out


def test_a_forged_dns_answer_before_the_server_is_injected_on_path() -> None:
    test = dns("bad.example", path({4: "answered", 5: "answered"}), {4, 5, 6}, {6})
    control = dns("good.example", path({}), set(), set())
    verdict = judge_requests(test + control, "bad.example", "good.example")
    assert (verdict.state, verdict.reason, verdict.box_hop, verdict.on_path) == (
        BLOCKED, "dns-injected", 3, True,
    )  # fmt: skip
    assert verdict.distance == 6  # the control's: the test name's first answer was forged
    assert verdict.summary("dns/53") == (
        "dns/53 for bad.example: the query is answered by a forged DNS answer in the server's"
        " name on-path at hop 3 (198.18.3.2) (the server's own answer came after it); the"
        " control name good.example is answered"
    )
    # No second answer where the query reaches the server: the box answered in its place.
    in_path = dns("bad.example", path({4: "answered", 5: "answered"}), {4, 5, 6}, set())
    assert judge_requests(in_path + control, "bad.example", "good.example").on_path is False


def test_a_dns_query_refused_by_the_host_for_both_names_is_no_service() -> None:
    refused = {1: "time-exceeded", 2: "refused"}
    outcomes = dns("a.example", refused, set(), set()) + dns("b.example", refused, set(), set())
    verdict = judge_requests(outcomes, "a.example", "b.example")
    assert verdict.state == NO_HANDSHAKE
    assert verdict.summary("dns/53") == (
        "dns/53 for a.example: no DNS service answers there (port unreachable)"
    )
    answered = judge_requests(dns("a.example", path({}), set(), set()), "a.example", None)
    assert answered.summary("dns/53") == "dns/53 for a.example: the query is answered by the server"
