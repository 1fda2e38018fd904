"""Frozen records and string enums shared by every layer: the project's vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Protocol(StrEnum):
    """What a probe carries; the value is the CLI and JSON spelling."""

    ICMP = "icmp"
    TCP = "tcp"
    UDP = "udp"


class ReplyKind(StrEnum):
    """What came back for one probe (``timeout`` when nothing did)."""

    ECHO_REPLY = "echo-reply"
    TIME_EXCEEDED = "time-exceeded"
    PORT_UNREACHABLE = "port-unreachable"
    ADMIN_PROHIBITED = "admin-prohibited"
    NET_UNREACHABLE = "net-unreachable"
    HOST_UNREACHABLE = "host-unreachable"
    TCP_SYN_ACK = "tcp-syn-ack"
    TCP_RST = "tcp-rst"
    UDP_REPLY = "udp-reply"
    TIMEOUT = "timeout"


class ServiceState(StrEnum):
    """nmap's port states, because admins know them."""

    OPEN = "open"
    CLOSED = "closed"
    FILTERED = "filtered"
    OPEN_FILTERED = "open|filtered"


class Reason(StrEnum):
    """Why a flow ended as it did (nmap's ``--reason`` vocabulary, plus echo)."""

    ECHO_REPLY = "echo-reply"
    SYN_ACK = "syn-ack"
    RESET = "reset"
    UDP_RESPONSE = "udp-response"
    PORT_UNREACH = "port-unreach"
    ADMIN_PROHIBITED = "admin-prohibited"
    NO_RESPONSE = "no-response"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class FlowSpec:
    """A protocol and, for TCP and UDP, a destination port: ``icmp``, ``tcp/443``."""

    protocol: Protocol
    port: int | None = None

    @property
    def label(self) -> str:
        """The spelling used in tables, JSON and the CLI."""
        return str(self.protocol) if self.port is None else f"{self.protocol}/{self.port}"

    def __str__(self) -> str:
        return self.label


ICMP_FLOW = FlowSpec(protocol=Protocol.ICMP)


def tcp(port: int) -> FlowSpec:
    """The TCP flow to ``port``."""
    return FlowSpec(protocol=Protocol.TCP, port=port)


def udp(port: int) -> FlowSpec:
    """The UDP flow to ``port``."""
    return FlowSpec(protocol=Protocol.UDP, port=port)
