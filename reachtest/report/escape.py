"""Strings from the network or a record made harmless for a terminal (control characters
shown, never sent) and for a spreadsheet (no cell read as a formula)."""

from __future__ import annotations

import re
from typing import Any

#: C0 controls (ESC, BEL, CR, LF, TAB ...), DEL and the C1 controls (CSI, OSC ...).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _visible(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def for_terminal(text: str) -> str:
    """``text`` with every control character written out as ``\\xNN``: an escape
    sequence in a PTR name or a record cannot retitle, clear or recolour a terminal, and
    a newline cannot forge a second line."""
    return _CONTROL.sub(_visible, text)


def clean(value: Any, skip: frozenset[str] = frozenset()) -> Any:
    """``value`` (JSON data) with every string, keys included, passed through
    ``for_terminal``; the members named in ``skip`` are kept as they are."""
    if isinstance(value, str):
        return for_terminal(value)
    if isinstance(value, dict):
        return {
            for_terminal(k) if isinstance(k, str) else k: v if k in skip else clean(v, skip)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [clean(v, skip) for v in value]
    return value


#: What makes a spreadsheet read a cell as a formula (OWASP's CSV injection list).
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def for_spreadsheet(text: str) -> str:
    """``text`` kept a text cell: one starting like a formula (``=HYPERLINK(...)`` in a
    PTR name) gets a leading apostrophe, which spreadsheets show as text."""
    return f"'{text}" if text.startswith(_FORMULA) else text
