"""The history store on real SQLite files: runs in and out, queries with pandas, WAL and
schema versions, two writers at once, and a writer killed with SIGKILL mid-way."""

from __future__ import annotations

import copy
import hashlib
import multiprocessing
import os
import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from reachtest.history.store import APPLICATION_ID, SCHEMA_VERSION, HistoryError, HistoryStore
from tests.unit.report.conftest import router, sim_record

DROP = {"special": {3: router(3, drop=frozenset({"tcp/443"}))}}


def at(record: dict[str, Any], started: str) -> dict[str, Any]:
    moved = copy.deepcopy(record)
    moved["started"] = moved["finished"] = started
    return moved


@pytest.fixture(scope="module")
def records() -> tuple[dict[str, Any], dict[str, Any]]:
    return sim_record(), sim_record(**DROP)  # type: ignore[arg-type]


def test_runs_go_in_whole_and_come_back_as_tables(
    tmp_path: Path, records: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    clean, drop = records
    with HistoryStore(tmp_path / "h.sqlite") as store:
        first = store.add_run(at(clean, "2026-11-20T10:00:00.000000Z"))
        second = store.add_run(at(drop, "2026-11-21T10:00:00.000000Z"))
        assert store.record(second) == at(drop, "2026-11-21T10:00:00.000000Z")
        frame = store.services()
        assert list(frame["run_id"].unique()) == [first, second]
        https = frame[frame["flow"] == "tcp/443"].set_index("run_id")
        assert list(https["state"]) == ["open", "filtered"]
        assert list(https["reached"]) == [True, False] and https.loc[second, "last_hop"] == 3
        assert frame[frame["flow"] == "icmp"]["state"].isna().all()
        assert len(store.services(since="2026-11-21")) == 4  # the second run's four flows
        assert store.services(target="elsewhere").empty
        assert store.integrity() == "ok"


def test_the_file_is_wal_and_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    HistoryStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(HistoryError, match="schema version 99, newer than this reachtest"):
        HistoryStore(path)


def test_a_file_that_is_no_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(HistoryError) as caught:
        HistoryStore(path)
    message = str(caught.value)
    assert message.startswith(f"history {path} is not a SQLite database") and "\n" not in message
    assert path.read_text() == "these are my notes, not a database\n" * 100  # untouched


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_applications_database_is_refused_byte_for_byte_untouched(
    tmp_path: Path,
) -> None:
    tables = tmp_path / "app.sqlite"
    with closing(sqlite3.connect(tables)) as db, db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        db.executemany("INSERT INTO notes (text) VALUES (?)", [("a",), ("b",)])
    marked = tmp_path / "marked.sqlite"
    with closing(sqlite3.connect(marked)) as db:
        db.execute("PRAGMA application_id = 1234")
        db.execute("CREATE TABLE runs (x)")
        db.commit()
    for path, why in ((tables, "it has tables notes"), (marked, "application_id 0x000004d2")):
        before, files = _digest(path), sorted(tmp_path.iterdir())
        with pytest.raises(HistoryError) as caught:
            HistoryStore(path)
        assert "another application's SQLite database" in str(caught.value)
        assert why in str(caught.value) and "\n" not in str(caught.value)
        assert _digest(path) == before and sorted(tmp_path.iterdir()) == files  # no -wal either


def test_a_history_is_marked_as_ours_and_an_older_one_is_adopted(
    tmp_path: Path, records: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    path = tmp_path / "h.sqlite"
    with HistoryStore(path) as store:
        first = store.add_run(records[0])
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        db.execute("PRAGMA application_id = 0")  # as reachtest before the mark wrote it
        db.commit()
    with HistoryStore(path) as store:
        assert store.latest() == [first]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_damaged_history_is_refused_with_how_to_move_it_aside(
    tmp_path: Path, records: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    path = tmp_path / "h.sqlite"
    with HistoryStore(path) as store:
        for _ in range(40):
            store.add_run(records[1])
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    assert len(data) > 4 * page
    data[2 * page : 3 * page] = b"\xa5" * page  # a page of garbage in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(HistoryError) as caught:
        HistoryStore(path)
    message = str(caught.value)
    assert "is damaged" in message and f"mv {path} {path}.damaged" in message
    assert "\n" not in message and len(message) < 400


def _writer(path: str, record: dict[str, Any], count: int) -> None:
    with HistoryStore(path) as store:
        for _ in range(count):
            store.add_run(record)


def test_two_writers_at_once_both_finish_and_the_file_is_sound(
    tmp_path: Path, records: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    path = str(tmp_path / "h.sqlite")
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(path, r, 40)) for r in records]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    with HistoryStore(path) as store:
        assert store.integrity() == "ok"
        assert store.services()["run_id"].nunique() == 80


def test_a_writer_killed_mid_way_loses_only_its_own_run(
    tmp_path: Path, records: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    path = str(tmp_path / "h.sqlite")
    with HistoryStore(path) as store:
        kept = store.add_run(records[0])
    context = multiprocessing.get_context("spawn")
    writer = context.Process(target=_writer, args=(path, records[1], 10_000))
    writer.start()
    time.sleep(2.0)  # spawn, import, then busy writing
    assert writer.pid is not None and writer.is_alive()
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(30)
    with HistoryStore(path) as store:
        assert store.integrity() == "ok"
        assert store.record(kept) == records[0]
        runs = store.services()["run_id"].nunique()
        assert runs >= 2  # the first run and whatever the killed one committed
        every = store.services()
        assert (every.groupby("run_id").size() == 4).all()  # no half-written run
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == runs  # none bare


def test_a_batch_goes_in_whole_and_latest_prefers_its_trace(
    tmp_path: Path, records: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    clean, drop = records
    with HistoryStore(tmp_path / "h.sqlite") as store:
        old = store.add_batch([("check", at(clean, "2026-11-20T10:00:00.000000Z"))])
        check, trace = store.add_batch(
            [
                ("check", at(drop, "2026-11-21T10:00:00.000000Z")),
                ("trace", at(drop, "2026-11-21T10:00:05.000000Z")),
            ]
        )
        frame = store.services()
        assert set(frame[frame["run_id"] == trace]["batch"]) == {check}
        assert set(frame[frame["run_id"] == check]["kind"]) == {"check"}
        host = clean["targets"][0]["host"]
        assert store.latest(host, 2) == [trace, old[0]]
        assert store.latest("elsewhere", 2) == []
        with pytest.raises(ValueError, match="kind"):
            store.add_batch([("check", clean), ("nonsense", clean)])
        assert len(store.services()) == len(frame)  # the failed batch left nothing


def test_a_version_1_file_is_migrated_and_keeps_its_runs(
    tmp_path: Path, records: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    from reachtest.history import store as module

    path = tmp_path / "h.sqlite"
    with sqlite3.connect(path) as db:
        for statement in module.MIGRATIONS[0]:
            db.execute(statement)
        db.execute(
            "INSERT INTO runs (started, finished, tool_version, record) VALUES (?, ?, ?, ?)",
            ("2026-11-20T10:00:00Z", "2026-11-20T10:00:01Z", "0.1.0", "{}"),
        )
        db.execute("PRAGMA user_version = 1")
    with HistoryStore(path) as store:
        assert store.version == SCHEMA_VERSION
        row = store._db.execute("SELECT id, batch, kind FROM runs").fetchall()
        assert row == [(1, 1, "trace")]


def test_last_services_reads_the_newest_batch_of_each_target(
    tmp_path: Path, records: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    clean, drop = records
    other = copy.deepcopy(clean)
    other["targets"][0]["host"] = "other"
    host = clean["targets"][0]["host"]
    with HistoryStore(tmp_path / "h.sqlite") as store:
        assert store.last_services([host]) == {}
        store.add_batch([("check", other)])
        store.add_batch([("check", clean), ("trace", drop)])  # the trace's rows win
        got = store.last_services([host, "other", "never"])
        assert sorted(got) == sorted([host, "other"])
        assert got[host]["tcp/443"] == ("filtered", False)
        assert got[host]["icmp"] == (None, True)
        assert got["other"]["tcp/443"] == ("open", True)  # from an older batch


def _hold_write_lock(path: Path, seconds: float, ready: Any) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        db.execute("ROLLBACK")


def test_a_writer_waiting_for_the_lock_says_so_and_gives_up_as_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reachtest.history import store as module

    path = tmp_path / "h.sqlite"
    said: list[str] = []
    with HistoryStore(path, on_wait=said.append) as history:
        history.add_run(sim_record())
        assert said == []  # no one else: no word
        ready = multiprocessing.Event()
        holder = multiprocessing.Process(target=_hold_write_lock, args=(path, 2.0, ready))
        holder.start()
        try:
            assert ready.wait(10)
            history.add_run(at(sim_record(), "2026-11-21T10:00:00Z"))  # waits ~2 s, then writes
        finally:
            holder.join(10)
        assert len(said) == 1 and "another process is writing it" in said[0]
        assert len(history.latest(count=5)) == 2
        monkeypatch.setattr(module, "BUSY_TIMEOUT_MS", 1500)
        monkeypatch.setattr(module, "QUIET_WAIT_MS", 300)
        ready = multiprocessing.Event()
        holder = multiprocessing.Process(target=_hold_write_lock, args=(path, 5.0, ready))
        holder.start()
        try:
            assert ready.wait(10)
            with pytest.raises(module.HistoryLocked, match=r"is locked by another process") as e:
                history.add_run(at(sim_record(), "2026-11-21T11:00:00Z"))
            assert e.value.exit_code == 3
        finally:
            holder.join(10)
        assert len(history.latest(count=5)) == 2  # nothing half-written
