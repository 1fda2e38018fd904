"""Opening the files reachtest keeps (locks, histories and their journals, outputs): no
symbolic link followed, no device or FIFO opened or blocked on, no file with other hard
links changed, and the mode of what we create set here, never left to the caller's umask.

A root ``reachtest run`` from cron writes beside files that other users may be able to
replace (a history in a shared folder): a link planted there must not turn a write into
one at its target. Checks are made on the opened descriptor (``fstat``), not only on the
path, so swapping the file between the check and the open gains nothing.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from reachtest.errors import UsageError

#: Longest path and file name the kernel takes (PATH_MAX, NAME_MAX).
PATH_MAX = 4095
NAME_MAX = 255
#: The mode of files reachtest creates for itself (locks) and for others to read.
PRIVATE = 0o600
SHARED = 0o644


class UnsafeFile(UsageError):
    """A file we would change is a link, a device, a FIFO or has other hard links (2)."""


def check_path_text(text: str, what: str) -> None:
    """A path the kernel can take: no NUL byte, not longer than PATH_MAX, no part longer
    than NAME_MAX (in bytes, as the file system counts)."""
    if "\x00" in text:
        raise UsageError(f"{what}: the path holds a NUL byte")
    try:
        encoded = os.fsencode(text)
    except UnicodeEncodeError:
        raise UsageError(f"{what}: the path cannot be encoded for the file system") from None
    if len(encoded) > PATH_MAX:
        raise UsageError(f"{what}: the path is longer than {PATH_MAX} bytes")
    if any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise UsageError(f"{what}: a part of the path is longer than {NAME_MAX} bytes")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def refuse_unsafe(path: Path, what: str) -> None:
    """Nothing, when ``path`` is absent or a regular file with one link; otherwise an
    ``UnsafeFile`` saying what it is (looked at with lstat: a link is not followed)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}") from None
    _judge(found, path, what)


def _judge(found: os.stat_result, path: Path, what: str) -> None:
    if not stat.S_ISREG(found.st_mode):
        raise UnsafeFile(
            f"{what} {path} is {_kind(found.st_mode)}: refusing to open it, left as it is "
            "(name a regular file)"
        )
    if found.st_nlink != 1:
        raise UnsafeFile(
            f"{what} {path} has {found.st_nlink} hard links: refusing to change it, left as "
            "it is (another name of it could be any file)"
        )


def open_regular(path: Path, flags: int, what: str, mode: int = PRIVATE) -> int:
    """A descriptor of the regular, singly linked file at ``path`` (created with at most
    ``mode`` when ``flags`` has O_CREAT and it is new; an existing file keeps its mode).
    Links, devices, FIFOs, sockets and hard-linked files are refused (``UnsafeFile``)
    without being opened for writing: O_NOFOLLOW, O_NONBLOCK for the open, then the
    descriptor's own fstat."""
    refuse_unsafe(path, what)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(
                f"{what} {path} is a symbolic link: refusing to follow it, left as it is"
            ) from None
        if exc.errno == errno.ENXIO:
            raise UnsafeFile(f"{what} {path} is a FIFO or socket: left as it is") from None
        raise UsageError(f"cannot open {what} {path}: {exc.strerror or exc}") from None
    try:
        found = os.fstat(fd)
        _judge(found, path, what)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def new_file_mode(umask: int) -> int:
    """The mode of a report or other output reachtest writes: readable by all unless the
    umask says less, never writable by group or others (whatever the umask)."""
    return SHARED & ~umask
