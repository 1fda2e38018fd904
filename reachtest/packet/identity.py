"""Probe identity: probe number k of a flow <-> the two 16-bit words that travel in packets.

Both words are salted bijections of k over 1..65534 (never 0, never 0xFFFF), so each
word alone names the probe within a window of 65,534 probes, and a reply must carry
consistent values in every field where it shows them: a forged or almost-matching
quote passes only by guessing 32 bits.
"""

from __future__ import annotations

import secrets

SPACE = 65534  # identities per flow before they repeat
_MA, _MA_INV = 40503, 6273
_MB, _MB_INV = 45673, 1795


class IdentityCodec:
    """The salted map between a probe number and its identity words (a, b)."""

    __slots__ = ("salt_a", "salt_b")

    def __init__(self, salt_a: int | None = None, salt_b: int | None = None) -> None:
        self.salt_a = secrets.randbelow(SPACE) if salt_a is None else salt_a % SPACE
        self.salt_b = secrets.randbelow(SPACE) if salt_b is None else salt_b % SPACE

    def a(self, k: int) -> int:
        """Primary word of probe ``k`` (ICMP sequence, UDP checksum, high half of TCP seq)."""
        return 1 + (k * _MA + self.salt_a) % SPACE

    def b(self, k: int) -> int:
        """Secondary word of probe ``k`` (IPv4 ID, payload word, low half of TCP seq)."""
        return 1 + (k * _MB + self.salt_b) % SPACE

    def k_from_a(self, a: int) -> int:
        """The probe number whose primary word is ``a`` (-1 when ``a`` is no identity)."""
        if not 1 <= a <= SPACE:
            return -1
        return ((a - 1 - self.salt_a) * _MA_INV) % SPACE

    def k_from_b(self, b: int) -> int:
        """The probe number whose secondary word is ``b`` (-1 when ``b`` is no identity)."""
        if not 1 <= b <= SPACE:
            return -1
        return ((b - 1 - self.salt_b) * _MB_INV) % SPACE
