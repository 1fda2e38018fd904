"""SIGINT and SIGTERM as one promise: a command stops where it is (KeyboardInterrupt,
so every ``finally`` runs and no temporary file is left), except inside a ``held`` block,
which finishes first: then the command says what it finished and exits 130.

`reachtest run` holds its writes (reports, the batch in the history, the metrics): an
interrupt before them stores nothing; one during them lets them finish.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from reachtest.errors import ReachtestError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 130


class Interrupted(ReachtestError):
    """An interrupt that came while a held block ran: the block finished; exit 130."""

    exit_code = EXIT_INTERRUPTED


class Interrupts:
    """The handler of SIGINT and SIGTERM while installed (see ``interrupts``)."""

    def __init__(self) -> None:
        self._held = 0
        self.pending: int | None = None  # the signal that came while held

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._held:
            self.pending = signum
            return
        raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        """Run the block to its end whatever signal comes (see ``raise_pending``)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    def raise_pending(self, done: str) -> None:
        """If a signal came while held: ``Interrupted``, saying ``done`` was finished."""
        if self.pending is not None:
            name = signal.Signals(self.pending).name
            raise Interrupted(f"interrupted ({name}) after {done}")


@contextmanager
def interrupts() -> Iterator[Interrupts]:
    """Install the handler for SIGINT and SIGTERM; the previous ones come back after."""
    guard = Interrupts()
    previous = {s: signal.signal(s, guard.handle) for s in SIGNALS}
    try:
        yield guard
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def terminate_as_interrupt() -> None:
    """SIGTERM does what Ctrl-C does (stop, clean up, exit 130), not kill outright."""

    def raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)
