"""Where a request dies after the handshake: the outcomes of one request traced TTL by
TTL (a test name and its control, see ``engine/requests.py``) judged into a verdict.

A router checks the TTL before its filter, so a box at hop h first meets the requests
sent with TTL h + 1: a reset first seen at TTL r puts the box at hop r - 1; an answer in
the server's name at a TTL too small to reach the server (below the control's first
answer) is injected by the box at hop r - 1; silence from the TTL after the last router
that said time-exceeded puts a dropping box there (raw sockets only: without them an
expired request is silent too, and the hop stays unknown)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

#: Request-level states (nmap's words run out here).
ANSWERED = "answered"
BLOCKED = "blocked-after-handshake"
NO_HANDSHAKE = "no-handshake"


#: A blocked request's reason in words.
HOW = {
    "reset": "reset",
    "dropped": "dropped",
    "block-page": "answered in the server's name (a block page or forged answer)",
    "dns-injected": "answered by a forged DNS answer in the server's name",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVerdict:
    """What happened to the request with the test name (and its control)."""

    name: str
    control: str | None
    state: str  # answered | blocked-after-handshake | no-handshake
    reason: str | None  # reset | dropped | block-page | dns-injected (blocked); or None
    box_hop: int | None  # the hop of the box that blocked it (None: not known)
    box_address: str | None  # its address, when a router at that hop answered
    distance: int | None  # the first TTL at which the server answered (test or control)
    by_name: bool | None  # blocked while the control is answered (None: no control)
    #: A drop whose hop is not proven: (the last router that said the TTL ran out, None):
    #: the box is there or beyond.
    box_range: tuple[int, int | None] | None = None
    #: A reset or forged answer: injected on-path (the server's own answer came after it:
    #: True), in-path (the capture saw no answer from the server at a TTL that reaches
    #: it: False), or not known (no capture, or no TTL that reaches the server).
    on_path: bool | None = None

    def summary(self, flow: str) -> str:
        """The finding in words, e.g. for an admin's ticket."""
        head = f"{flow} for {self.name}"
        dns = flow.startswith("dns/")
        if self.state == NO_HANDSHAKE:
            if dns:
                return f"{head}: no DNS service answers there (port unreachable)"
            return f"{head}: the TCP handshake does not complete"
        control = ""
        if self.control is not None:
            passes = "is answered" if self.by_name is not False else "is not answered either"
            control = f"; the control name {self.control} {passes}"
        if self.state == ANSWERED:
            if dns:
                return f"{head}: the query is answered by the server{control}"
            return f"{head}: the handshake completes and the request is answered{control}"
        address = f" ({self.box_address})" if self.box_address else ""
        if self.box_hop is not None:
            where = f" at hop {self.box_hop}{address}"
        elif self.box_range is not None and self.box_range[0]:
            where = f" after hop {self.box_range[0]}{address} (not proven where)"
        else:
            where = ""
        how = HOW.get(self.reason or "", "blocked")
        path = {True: " on-path", False: " in-path", None: ""}[self.on_path]
        late = " (the server's own answer came after it)" if self.on_path else ""
        done = "the query" if dns else "the handshake completes; the request"
        return f"{head}: {done} is {how}{path}{where}{late}{control}"


def _by_ttl(outcomes: Iterable[Any], name: str) -> dict[int, Any]:
    """TTL -> outcome of ``name``; a later outcome (a proof) stands over an earlier one."""
    return {o.ttl: o for o in outcomes if o.name == name}


def _first(by_ttl: Mapping[int, Any], outcome: str) -> int | None:
    return min((ttl for ttl, o in by_ttl.items() if o.outcome == outcome), default=None)


def _placed(ttl: int | None, by_ttl: Mapping[int, Any]) -> bool:
    """Does the first TTL ``ttl`` of an outcome say where (the TTL before was probed)?"""
    return ttl is not None and (ttl == 1 or ttl - 1 in by_ttl)


def _on_path(test: Mapping[int, Any], distance: int | None, outcome: str) -> bool | None:
    """Was the reset (``outcome`` reset) or forged answer (answered) injected on-path
    (see ``RequestVerdict.on_path``)?"""
    resets = [o for o in test.values() if o.outcome == outcome]
    if any(o.late_answer for o in resets):
        return True
    reaching = [o for o in resets if distance is not None and o.ttl >= distance]
    if reaching and all(o.captured for o in reaching):
        return False
    return None


def judge_requests(outcomes: Iterable[Any], name: str, control: str | None) -> RequestVerdict:
    """The verdict for ``name`` from every (name, TTL) outcome of one traced request."""
    listed = list(outcomes)
    test = _by_ttl(listed, name)
    ctrl = _by_ttl(listed, control) if control is not None else {}
    answered = _first(test, "answered")
    control_answered = _first(ctrl, "answered")
    # A first TTL says where only when the TTL before it was probed too (one TTL alone,
    # as an end-to-end check sends, says what, not where).
    placed = [t for t, by in ((answered, test), (control_answered, ctrl)) if _placed(t, by)]
    # An answer to the test name before the control's is not the server's (injected): the
    # server's distance is the control's then.
    forged_first = (
        answered is not None and control_answered is not None and answered < control_answered
    )
    distance = min((t for t in placed if t is not None and not (forged_first and t == answered)),
                   default=None)  # fmt: skip
    by_name = None if control is None else control_answered is not None

    def verdict(state: str, reason: str | None = None, hop: int | None = None) -> RequestVerdict:
        at = test.get(hop) if hop is not None else None
        address = at.responder if at is not None and at.outcome == "time-exceeded" else None
        return RequestVerdict(
            name=name, control=control, state=state, reason=reason, box_hop=hop,
            box_address=address, distance=distance, by_name=None if state == ANSWERED
            else by_name,
        )  # fmt: skip

    if test and all(o.outcome == "no-handshake" for o in test.values()):
        return verdict(NO_HANDSHAKE)
    refused = _first(test, "refused")  # DNS: port unreachable
    if answered is None and refused is not None:
        refuser = next((o.responder for o in ctrl.values() if o.outcome == "refused"), None)
        if test[refused].responder == refuser:  # from one host, for the control too
            return verdict(NO_HANDSHAKE)
    reset = _first(test, "reset")
    if answered is not None and (reset is None or answered < reset):
        if control_answered is not None and answered < control_answered:
            forged = "dns-injected" if (test[answered].answer or "").startswith("dns-") else None
            found = verdict(BLOCKED, forged or "block-page", answered - 1)
            return replace(found, on_path=_on_path(test, distance, "answered"))
        return verdict(ANSWERED)
    if reset is not None:
        found = verdict(BLOCKED, "reset", reset - 1 if _placed(reset, test) else None)
        return replace(found, on_path=_on_path(test, distance, "reset"))
    return _dropped(verdict(BLOCKED, "dropped"), test)


def _dropped(found: RequestVerdict, test: Mapping[int, Any]) -> RequestVerdict:
    """Where a silently dropped request dies: at the last router that said its TTL ran out
    (a router checks the TTL before its filter), when the next TTL's silence is proven
    (sent alone after the routers' ICMP budgets refilled: ``engine.requests.prove``);
    without that proof a rate-limited router may hide hops, and only "after hop L" is
    said. Unknown without raw sockets (no time-exceeded is ever seen)."""
    if not any(o.captured for o in test.values()):
        return found
    after = max((t for t, o in test.items() if o.outcome == "time-exceeded"), default=0)
    address = test[after].responder if after else None
    nxt = test.get(after + 1)
    if after and nxt is not None and nxt.outcome == "silent" and nxt.proof:
        return replace(found, box_hop=after, box_address=address)
    return replace(found, box_address=address, box_range=(after, None))


def needs_proof(verdict: RequestVerdict) -> int | None:
    """The last TTL that said its time ran out, when a drop's hop waits for a proof."""
    if verdict.reason == "dropped" and verdict.box_hop is None and verdict.box_range:
        return verdict.box_range[0] or None  # no router answered: one TTL alone (a check)
    return None
