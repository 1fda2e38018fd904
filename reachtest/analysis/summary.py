"""A plain-text summary of an analysis: verdicts and findings in sentences, with evidence.

The report layer will word findings for every format; this renderer is the one the
analysis ships so that ``reachtest probe --analyse`` can say what it found.
"""

from __future__ import annotations

import re

from reachtest.analysis.analyse import Analysis, TargetAnalysis
from reachtest.model import Evidence, Finding, FindingKind, ServiceVerdict

#: What an ECMP finding tells the admin to do: a plain trace judges each flow on the one
#: branch its hash takes; ``--mda`` judges every branch (dropped from the finding when it ran).
ECMP_HINT = ": each verdict holds for the branch its flow's hash takes; --mda judges every branch"


def _hop(hop: int | None, address: str | None) -> str:
    if hop is None:
        return "an unknown hop"
    return f"hop {hop} ({address})" if address else f"hop {hop}"


def evidence_words(
    flow: str, ttl: int, kind: str, responder: str | None, count: int, of: int
) -> str:
    """One observation in words: ``tcp/443 at TTL 4: timeout in 5/5 rounds``."""
    who = f" from {responder}" if responder else ""
    return f"{flow} at TTL {ttl}: {kind}{who} in {count}/{of} rounds"


def _evidence(e: Evidence) -> str:
    return evidence_words(str(e.flow), e.ttl, str(e.kind), e.responder, e.count, e.of)


def sentence(f: Finding) -> str:
    """One finding in plain words."""
    flow = str(f.flow) if f.flow else "all flows"
    place = _hop(f.first_hop, f.responder)
    match f.kind:
        case FindingKind.HOST_NOT_REACHED:
            text = f"{f.target} was not reached: the last answer came from {place}"
        case FindingKind.BLOCKED_SILENTLY:
            text = f"{flow} is silently dropped after {place}"
            if f.last_hop is not None:
                text += f", before hop {f.last_hop}"
        case FindingKind.NO_ANSWER_AT_TARGET:
            text = f"{flow} gets no answer from {f.target} (hop {f.last_hop}); it passes {place}"
        case FindingKind.PING_BLOCKED:
            text = f"ping (ICMP echo) is dropped after {place} while services answer"
        case FindingKind.BLOCKED_PROHIBITED:
            text = f"{flow} is rejected as administratively prohibited by {place}"
        case FindingKind.UNREACHABLE:
            text = f"{flow} is reported unreachable by {place}"
        case FindingKind.FORGED_RESET:
            text = (
                f"{flow} is reset by a middlebox at {place}, not by {f.target}: "
                f"the RST carries the target's address"
            )
        case FindingKind.SYN_PROXY:
            text = f"{flow} is answered by a SYN proxy at {place}, not by {f.target}"
        case FindingKind.FORWARDING_LOSS if f.flow is None:
            text = (
                f"the path loses packets from hop {f.last_hop} on, for every flow (forwarding loss)"
            )
        case FindingKind.FORWARDING_LOSS:
            text = f"{flow} loses packets from hop {f.last_hop} on (forwarding loss)"
        case FindingKind.RATE_LIMITING:
            text = (
                f"{place} rate-limits its ICMP errors"
                if f.flow is None
                else f"{flow}: {place} rate-limits its ICMP errors (not forwarding loss)"
            )
        case FindingKind.QUOTE_REWRITTEN:
            clamp = re.search(r"mss=(\d+)", f.note or "")
            tos = re.search(r"tos=(0x[0-9a-f]+)", f.note or "")
            where = f"hop {f.first_hop}" if f.first_hop else "a box before hop 1"
            if clamp is not None:
                text = f"{flow}: {where} clamps the SYN's MSS to {clamp.group(1)}"
            elif tos is not None:
                value = int(tos.group(1), 16)
                text = (
                    f"{flow}: {where} rewrites the traffic class (DSCP {value >> 2}, ECN"
                    f" {value & 3}; sent 0)"
                )
            else:
                text = f"{flow}: headers are rewritten before hop {f.last_hop} (NAT or a middlebox)"
        case FindingKind.NAT:
            text = (
                f"a NAT between hop {f.first_hop} and hop {f.last_hop} rewrites our source"
                if f.first_hop is not None
                else f"a NAT at or before hop {f.last_hop} rewrites our source"
            )
        case FindingKind.SEQUENCE_REWRITTEN:
            text = (
                f"{flow}: a box on the path rewrites TCP sequence numbers and does not "
                "translate the SYN-ACK's back"
            )
        case FindingKind.ECMP:
            text = f"hop {f.first_hop} is load-balanced (ECMP){ECMP_HINT}"
        case FindingKind.SILENT_HOP:
            text = f"hop {f.first_hop} answers no protocol (a quiet router, not a filter)"
        case _:
            text = f"{f.kind} for {flow} at {place}"
    if f.note:
        text += f" [{f.note}]"
    return text


def _verdict(v: ServiceVerdict) -> str:
    state = v.state or ("reachable" if v.reached else "no answer")
    by = f" from {v.reason_address}" if v.reason_address else ""
    hop = f" at hop {v.reason_hop}" if v.reason_hop is not None else ""
    return f"  {v.flow!s:10} {state!s:14} {v.reason}{by}{hop} ({v.rounds}/{v.rounds_probed})"


def render_target(t: TargetAnalysis, *, evidence: bool = True) -> str:
    """One target: host line, one line per flow, then findings with their evidence."""
    host = t.host
    if host.reachable:
        head = f"{t.target}: reachable at hop {host.distance}"
        if host.ping_blocked_services_answer:
            head += " (ping blocked, services answer)"
    else:
        head = f"{t.target}: NOT reached"
    lines = [head, *(_verdict(v) for v in t.services)]
    if t.findings:
        lines.append("findings:")
    for f in t.findings:
        lines.append(f"  [{f.severity}] {sentence(f)} (confidence {f.confidence:.0%})")
        if evidence:
            lines += [f"      - {_evidence(e)}" for e in f.evidence[:6]]
            if len(f.evidence) > 6:
                lines.append(f"      - ... {len(f.evidence) - 6} more")
    return "\n".join(lines)


def render_text(analysis: Analysis, *, evidence: bool = True) -> str:
    """Every target of the run, in the order traced."""
    return "\n\n".join(render_target(t, evidence=evidence) for t in analysis.targets) + "\n"
