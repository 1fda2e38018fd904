"""Where a flow stops: the one definition every output says (issue 31).

The hop where a flow stops is the last router that answers it. A router answers TTL
expiry before its forwarding filter, so a router that drops or rejects a flow still says
time-exceeded to the probes that expire there: the router that drops is the last hop
that answers (``silent after hop 3``), the one that rejects says so itself, from its own
hop (``rejected by hop 3``), a box that answers in the target's name sits at the hop
where the target's answers begin (``answered in the target's name by hop 4``), and an
answer from the target is at the target's distance. The path analysis
(``analysis.paths``) finds that hop and its address (a record's ``path.stop_hop`` and
``path.stop_address``); ``trace --mda`` names the failing branch (``verdict.branch``); a
request after the handshake names the box (``requests[].box_hop``). This module turns
them into the one hop number, address and sentence that the terminal, the live view,
Markdown, HTML (cards and diagram), CSV, ``run``, ``history``, ``diff`` and the metrics
(``reachtest_stop_hop``) all use.

Pure functions over run-record dicts, like ``analysis.diff``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Record = Mapping[str, Any]

#: How a flow stops, by the path analysis' ``stop``.
HOW = {
    "reached-open": "answered",
    "reached-answered": "answered",
    "reached-closed": "closed",
    "middlebox": "forged",
    "admin-prohibited": "rejected",
    "unreachable": "unreachable",
    "silent": "silent",
    "gap-limit": "no-answer",
    "max-ttl": "no-answer",
}


def at(hop: int | None, address: str | None, owners: Record | None = None) -> str:
    """``hop 3 (198.18.3.2)``; with ``-z`` the hop's AS too: ``(198.18.3.2, AS64499)``."""
    owner = (owners or {}).get(address or "")
    where = f"{address}, AS{owner['asn']}" if owner and address else address
    if hop is None:
        return f"from {where}" if where else ""
    return f"hop {hop} ({where})" if where else f"hop {hop}"


@dataclass(frozen=True, slots=True)
class Where:
    """Where one flow stops: how, the hop (the last router that answers it; None when no
    hop does) and that hop's address; for a flow that dies on one branch of a
    load-balanced path only, the share of its flow hashes that die there."""

    how: str  # answered, closed, forged, rejected, unreachable, silent, no-answer; or a
    # request's reason: reset, dropped, block-page, dns-injected
    hop: int | None
    address: str | None
    share: tuple[int, int] | None = None
    on_path: bool | None = None  # a request's box: beside the path (True) or in it

    @property
    def through(self) -> bool:
        """The flow gets through (answered by the target, open or reachable)."""
        return self.how == "answered"

    @property
    def metric_hop(self) -> int:
        """The hop number of the metrics: 0 when the flow gets through or no hop answers."""
        return 0 if self.through or self.hop is None else self.hop

    def words(self, owners: Record | None = None) -> str:
        """The sentence every output uses: ``silent after hop 3 (198.18.3.2)``."""
        place = at(self.hop, self.address, owners)
        if self.share is not None:
            how = f"rejected by {place}" if self.how == "rejected" else f"dropped after {place}"
            return f"{self.share[0]} of {self.share[1]} flow hashes {how}; the others reach it"
        if self.how in ("answered", "closed"):
            return f"answered by {self.address or '?'} at hop {self.hop}"
        if self.how == "forged":
            return f"answered in the target's name by {place}"
        if self.how == "rejected":
            return f"rejected by {place}"
        if self.how == "unreachable":
            return f"unreachable, says {place}"
        if self.how == "no-answer":
            return "no answer up to the last TTL"
        if self.how == "silent":
            return f"silent after {place}" if self.hop else "no answer from any hop"
        # A request after the handshake, stopped by a box.
        side = "" if self.on_path is None else " on-path" if self.on_path else " in-path"
        return f"{self.how}{side}" + (f" at {place}" if self.hop is not None else "")


def of_flow(flow: Record) -> Where | None:
    """Where a flow of a run record stops (None: no verdict, nothing came back)."""
    verdict, path = flow.get("verdict"), flow.get("path")
    if not verdict or not path:
        return None
    branch = verdict.get("branch")
    if branch is not None:  # trace --mda: some flow hashes die on one branch
        how = "rejected" if branch["how"] == "rejected" else "silent"
        return Where(how, branch["hop"], branch["address"], (branch["failing"], branch["of"]))
    how = HOW.get(path["stop"], "no-answer")
    if how in {"answered", "closed"}:
        return Where(how, path["distance"], verdict["reason_address"])
    if how == "silent":
        return Where(how, path["last_hop"] or None, path["last_address"])
    return Where(how, path["stop_hop"], path["stop_address"])


def of_request(request: Record) -> Where:
    """Where a request after the handshake stops: the box's hop, or the server's answer."""
    if request["state"] == "answered":
        return Where("answered", request["distance"], None)
    return Where(
        request["reason"] or "blocked",
        request["box_hop"],
        request["box_address"],
        on_path=request.get("on_path"),
    )
