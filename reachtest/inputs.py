"""Reading a file the user named (a record, a configuration, a host list): whole, as
UTF-8, and never without bound: ``/dev/zero`` or a huge file is refused at a limit, not
read until memory runs out. ``-`` reads standard input, under the same limit."""

from __future__ import annotations

import sys
from pathlib import Path

from reachtest.errors import UsageError

MIB = 2**20


def read_text(path: str | Path, what: str, limit: int) -> str:
    """The text of ``path`` (``-``: stdin); UsageError naming ``what`` when it cannot be
    read, is not UTF-8, or is larger than ``limit`` bytes."""
    shown = "standard input" if str(path) == "-" else repr(str(path))
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(path).open("rb") as stream:
                data = stream.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UsageError(f"{what} {shown} is larger than {limit // MIB} MiB: is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {shown} is not UTF-8 text (byte {exc.start}): is it the right file?"
        ) from None
