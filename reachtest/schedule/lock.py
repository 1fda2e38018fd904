"""One scheduled run at a time: an advisory lock (flock) on a file beside the history.

The kernel drops a flock when its holder dies, SIGKILL included, so a stale lock cannot
outlive a crashed run. The file holds the holder's pid and start time, for the message
the next run prints when it finds the lock taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from reachtest.errors import EnvironmentProblem
from reachtest.files import PRIVATE, open_regular

#: How often a waiting run tries the lock again.
HOLDER_TRIES = 10
POLL_S = 0.2


class LockHeld(EnvironmentProblem):
    """Another run holds the lock (exit 3, one line saying who and since when)."""


def lock_path(history: Path | None, config: Path) -> Path:
    """The lock beside the history file, or beside the configuration without one."""
    base = history if history is not None else config
    return base.with_name(base.name + ".lock")


def _holder(fd: int) -> str:
    """Who holds the lock: its line, which the holder writes just after taking the lock
    (so a run that lost the race by a hair gives it a moment to appear)."""
    for _ in range(HOLDER_TRIES):
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if holder:
            return holder
        time.sleep(POLL_S)
    return "unknown"


@contextlib.contextmanager
def hold(path: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock at ``path`` for the block; wait up to ``wait_s`` seconds for it.

    The lock file is ours alone (mode 0600): a link, a device, a FIFO or a file with
    other hard links at ``path`` is refused untouched (exit 2), since the holder truncates
    and writes it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot open the lock {path}: {exc.strerror or exc}") from None
    fd = open_regular(path, os.O_RDWR | os.O_CREAT, "the lock", PRIVATE)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    waited = f"waited {wait_s:g} s; " if wait_s else ""
                    raise LockHeld(
                        f"another reachtest run holds {path} ({holder}); {waited}"
                        "this run is skipped (--wait SECONDS waits for it)"
                    ) from None
                time.sleep(POLL_S)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, since {stamp}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock
