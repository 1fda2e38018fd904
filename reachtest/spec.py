"""User spellings of flows and targets: ``tcp/443``, ``udp/53``, ``443``, ``icmp``; hosts."""

from __future__ import annotations

import ipaddress
import socket

from reachtest.errors import UsageError
from reachtest.model import ICMP_FLOW, FlowSpec, Protocol


def parse_flow(text: str) -> FlowSpec:
    """One flow from ``icmp``, ``tcp/PORT``, ``udp/PORT`` or a bare ``PORT`` (TCP)."""
    spelling = text.strip().lower()
    if spelling == "icmp":
        return ICMP_FLOW
    protocol, _, port_text = spelling.rpartition("/")
    if not protocol:
        protocol = "tcp"
    if protocol not in ("tcp", "udp"):
        raise UsageError(f"bad flow {text!r}: the protocol must be icmp, tcp or udp")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"bad flow {text!r}: the port must be a number") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"bad flow {text!r}: the port must be 1..65535")
    return FlowSpec(protocol=Protocol(protocol), port=port)


def resolve_target(text: str, family: int | None = None) -> str:
    """An address for ``text``: itself when it is one, else the first from the resolver."""
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        if family is not None and address.version != family:
            raise UsageError(f"{text} is not an IPv{family} address")
        return str(address)
    af = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family or 0, socket.AF_UNSPEC)
    try:
        infos = socket.getaddrinfo(text, None, af, socket.SOCK_RAW)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise UsageError(f"unknown host {text!r}: {reason}") from None
    if not infos:
        raise UsageError(f"unknown host {text!r}")
    return str(infos[0][4][0])
