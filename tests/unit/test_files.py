"""Files reachtest keeps, opened safely (reachtest/files.py): the lock of `run`, the
history and its journals. A link, a hard link, a device or a FIFO planted where they go
is refused, and the file it points at keeps every byte (issue: a root `run` emptied
whatever its lock file linked to)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reachtest.cli import main
from reachtest.files import UnsafeFile, check_path_text, open_regular
from reachtest.history.store import HistoryError, HistoryStore
from reachtest.schedule.lock import hold

SECRET = "root:$6$not-a-real-hash:19000:0:99999:7:::\n" * 20


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file the attacker wants emptied (another folder: it is not the lock's)."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "shadow"
    path.write_text(SECRET)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_a_lock_that_is_a_symlink_is_refused_and_its_target_keeps_every_byte(
    tmp_path: Path, victim: Path
) -> None:
    lock = tmp_path / "history.sqlite.lock"
    lock.symlink_to(victim)
    with pytest.raises(UnsafeFile, match="symbolic link"), hold(lock):
        pytest.fail("the lock was taken through a link")
    assert victim.read_text() == SECRET
    assert lock.is_symlink()  # left as it is


def test_a_dangling_link_as_lock_creates_nothing_at_its_target(tmp_path: Path) -> None:
    lock = tmp_path / "history.sqlite.lock"
    target = tmp_path / "cron.d" / "evil"
    target.parent.mkdir()
    lock.symlink_to(target)
    with pytest.raises(UnsafeFile), hold(lock):
        pass
    assert not target.exists()


def test_a_lock_with_another_hard_link_is_refused_untouched(tmp_path: Path, victim: Path) -> None:
    lock = tmp_path / "history.sqlite.lock"
    os.link(victim, lock)
    with pytest.raises(UnsafeFile, match="2 hard links"), hold(lock):
        pass
    assert victim.read_text() == SECRET


def test_a_lock_that_is_a_fifo_or_socket_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "a.lock"
    os.mkfifo(fifo)
    began = time.monotonic()
    with pytest.raises(UnsafeFile, match="a FIFO"), hold(fifo):
        pass
    assert time.monotonic() - began < 2  # no open() that waits for a writer
    sock = tmp_path / "b.lock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock))
        with pytest.raises(UnsafeFile, match="a socket"), hold(sock):
            pass


def test_a_lock_that_is_a_device_is_refused(tmp_path: Path) -> None:
    device = tmp_path / "null.lock"
    if os.geteuid() != 0:
        pytest.skip("mknod of a character device needs root")
    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with pytest.raises(UnsafeFile, match="a device"), hold(device):
        pass


def test_the_lock_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    lock = tmp_path / "h.sqlite.lock"
    with umask(0), hold(lock):
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_a_history_that_is_a_symlink_is_refused_and_its_target_untouched(
    tmp_path: Path, victim: Path
) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for target in (victim, empty, tmp_path / "nowhere.sqlite"):
        link = tmp_path / "h.sqlite"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        with pytest.raises(HistoryError, match="symbolic link"):
            HistoryStore(link)
    assert victim.read_text() == SECRET and empty.read_bytes() == b""
    assert not (tmp_path / "nowhere.sqlite").exists()  # a dangling link makes no database


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_journal_planted_as_a_link_is_refused_before_sqlite_opens_it(
    tmp_path: Path, victim: Path, suffix: str
) -> None:
    history = tmp_path / "h.sqlite"
    HistoryStore(history).close()
    for leftover in (tmp_path / "h.sqlite-wal", tmp_path / "h.sqlite-shm"):
        leftover.unlink(missing_ok=True)
    (tmp_path / f"h.sqlite{suffix}").symlink_to(victim)
    before = _digest(history)
    with pytest.raises(HistoryError, match=r"the history.s journal .* is a symbolic link"):
        HistoryStore(history)
    assert victim.read_text() == SECRET and _digest(history) == before


def test_a_database_that_only_looks_like_a_history_is_refused_before_any_write(
    tmp_path: Path,
) -> None:
    """Tables named runs and services with a user_version, as another program could
    have: no WAL switch, no column added, no application id (issue: all three, then 4)."""
    path = tmp_path / "app.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, started TEXT, note TEXT)")
        db.execute("CREATE TABLE services (name TEXT, port INTEGER)")
        db.execute("INSERT INTO runs (started, note) VALUES ('today', 'mine')")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    before, files = _digest(path), sorted(tmp_path.iterdir())
    with pytest.raises(HistoryError, match="another application's SQLite database"):
        HistoryStore(path)
    assert _digest(path) == before and sorted(tmp_path.iterdir()) == files
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_open_regular_creates_with_the_mode_given(tmp_path: Path) -> None:
    with umask(0):
        fd = open_regular(tmp_path / "x", os.O_RDWR | os.O_CREAT, "x", 0o640)
    os.close(fd)
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("text", "why"),
    [("a\x00b", "NUL byte"), ("a/" + "b" * 300, "part of the path"), ("/x" * 2100, "longer")],
)
def test_paths_the_kernel_cannot_take_are_refused_by_name(text: str, why: str) -> None:
    with pytest.raises(Exception, match=why):
        check_path_text(text, "history")


def test_config_check_and_run_refuse_a_planted_lock_before_anything(
    tmp_path: Path, victim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "conf.toml"
    config.write_text(
        'history = "h.sqlite"\n[[target]]\nhost = "198.18.0.1"\nservices = ["tcp/443"]\n'
    )
    (tmp_path / "h.sqlite.lock").symlink_to(victim)
    for args in (["config", "check", str(config)], ["run", "--config", str(config)]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "the lock" in err and "symbolic link" in err and err.count("\n") == 1, err
    assert victim.read_text() == SECRET


@pytest.mark.parametrize(
    ("value", "why"), [("h\\u0000.sqlite", "NUL byte"), ("x" * 300, "longer than 255")]
)
def test_config_check_refuses_paths_no_file_can_have(
    tmp_path: Path, value: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "conf.toml"
    config.write_text(f'history = "{value}"\n[[target]]\nhost = "198.18.0.1"\n')
    assert main(["config", "check", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:1: history: " in err and why in err, err
