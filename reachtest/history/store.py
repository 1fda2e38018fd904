"""The history of runs in SQLite: the only code that knows its schema.

* WAL mode and a busy timeout, so a reader never blocks a writer and two writers wait
  for each other instead of failing at once.
* The schema is versioned (``PRAGMA user_version``) and moved forward by the numbered
  migrations below, each in its own transaction; a file from a newer reachtest is refused.
* It is marked as reachtest's (``PRAGMA application_id``); another application's SQLite
  file, or any other file, is refused without a byte changed, and a damaged history
  (``PRAGMA quick_check``) is refused with how to move it aside.
* A run is stored in one transaction: the whole run record (JSON) and one row per target
  and flow for queries. A process killed mid-way loses only the run it was writing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reachtest.errors import EnvironmentProblem, UsageError
from reachtest.files import refuse_unsafe
from reachtest.model import UNRESOLVED

if TYPE_CHECKING:
    import pandas as pd

#: Migration n takes the schema from version n to n + 1: its statements, in order.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started TEXT NOT NULL,          -- UTC, ISO 8601 with Z (as in the record)
            finished TEXT NOT NULL,
            tool_version TEXT NOT NULL,
            record TEXT NOT NULL            -- the whole run record, JSON
        )""",
        "CREATE INDEX runs_started ON runs (started)",
        """CREATE TABLE services (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            target TEXT NOT NULL,           -- the host as configured or typed
            address TEXT NOT NULL,
            flow TEXT NOT NULL,             -- icmp, tcp/443, ...
            state TEXT,                     -- open, closed, filtered, open|filtered (icmp: NULL)
            reached INTEGER NOT NULL,
            reason TEXT,
            reason_hop INTEGER,
            last_hop INTEGER,
            PRIMARY KEY (run_id, target, address, flow)
        )""",
        "CREATE INDEX services_target ON services (target, flow)",
    ),
    (
        # A batch is what one `reachtest run` stored: its check and its traces, together.
        "ALTER TABLE runs ADD COLUMN batch INTEGER",
        "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'trace'",  # check | trace
        "UPDATE runs SET batch = id",
        "CREATE INDEX runs_batch ON runs (batch)",
    ),
)
#: What a stored run is: a fast end-to-end check (full TTL only) or a full trace.
KINDS = ("check", "trace")
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_MS = 30_000
#: ``PRAGMA application_id`` of a reachtest history ("RTHS"): another application's
#: SQLite file is refused untouched.
APPLICATION_ID = 0x52544853
SQLITE_MAGIC = b"SQLite format 3\x00"


class HistoryError(UsageError):
    """The history file cannot be used (exit 2 with one line)."""


class HistoryLocked(EnvironmentProblem):
    """Another process holds the history's write lock longer than the busy timeout (3)."""


#: The first wait for a locked history, before saying so (then up to the busy timeout).
QUIET_WAIT_MS = 1_000
#: SQLite waits for the lock this long at a time, Python between (signals are handled).
POLL_MS = 100


def _locked(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


#: The files SQLite keeps beside a history (WAL, its index, the rollback journal).
SIBLINGS = ("-wal", "-shm", "-journal")


def refuse_links(path: Path) -> None:
    """The history and its journal files must each be absent or a regular file with one
    link: a link planted beside a history (in a folder others may write) would turn the
    writes of a root run into writes at its target. ``UnsafeFile`` otherwise (exit 2)."""
    try:
        refuse_unsafe(path, "history")
        for suffix in SIBLINGS:
            refuse_unsafe(path.with_name(path.name + suffix), "the history's journal")
    except UsageError as exc:
        raise HistoryError(str(exc)) from None


@cache
def schema(version: int) -> frozenset[tuple[str, str, str, str | None]]:
    """What ``sqlite_master`` holds in a reachtest history of schema ``version``: the
    migrations up to it, applied to an empty database in memory."""
    with closing(sqlite3.connect(":memory:")) as db:
        for step in MIGRATIONS[:version]:
            for statement in step:
                db.execute(statement)
        return frozenset(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def foreign(path: Path) -> str | None:
    """Why the file at ``path`` is not a history of ours to open (None: it is one, or it
    is new or empty). Looks without changing a byte: the header, then a read-only open,
    whose tables must be exactly those of a reachtest history of its schema version."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    with os.fdopen(fd, "rb") as file:
        head = file.read(100) if stat.S_ISREG(os.fstat(fd).st_mode) else b"?"
    if not head:
        return None
    if not head.startswith(SQLITE_MAGIC):
        return "is not a SQLite database (it holds something else)"
    try:
        with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
            app = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            found = frozenset(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
    except sqlite3.DatabaseError as exc:
        return f"cannot be read as SQLite ({exc})"
    if app not in (0, APPLICATION_ID):
        return f"is another application's SQLite database (application_id {app:#010x})"
    if not found and version == 0:
        return None  # new: nothing in it yet
    if app == APPLICATION_ID and version > SCHEMA_VERSION:
        return (
            f"has schema version {version}, newer than this reachtest knows "
            f"({SCHEMA_VERSION}; upgrade reachtest)"
        )
    if 1 <= version <= SCHEMA_VERSION and found == schema(version):
        return None  # ours (app 0: from before the application id)
    names = ", ".join(sorted({row[2] for row in found})[:4]) or "none"
    if app == APPLICATION_ID:
        return f"is marked as a reachtest history but its tables ({names}) are not reachtest's"
    return f"is another application's SQLite database (it has tables {names})"


#: A row of another type than this code writes (ids of the runs that hold one).
_BAD_ROWS = """
SELECT r.id FROM services s JOIN runs r ON r.id = s.run_id WHERE
    typeof(s.target) != 'text' OR typeof(s.address) != 'text' OR typeof(s.flow) != 'text'
    OR (s.state IS NOT NULL AND typeof(s.state) != 'text') OR s.reached NOT IN (0, 1)
    OR (s.reason IS NOT NULL AND typeof(s.reason) != 'text')
    OR (s.reason_hop IS NOT NULL AND typeof(s.reason_hop) != 'integer')
    OR (s.last_hop IS NOT NULL AND typeof(s.last_hop) != 'integer')
UNION ALL
SELECT id FROM runs WHERE typeof(started) != 'text' OR kind NOT IN ('check', 'trace')
    OR typeof(batch) != 'integer'
LIMIT 1
"""


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the regular file at ``path`` (not followed), None otherwise."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISREG(found.st_mode) else None


def _encodable(path: Path, target: str | None) -> None:
    """A target name SQLite can take (UTF-8): one from the command line may hold bytes
    that are no text (``surrogateescape``)."""
    if target is None:
        return
    try:
        target.encode()
    except UnicodeEncodeError:
        raise HistoryError(f"history {path}: {target!r} is not a name it can hold") from None


class Writing:
    """The open write transaction of ``HistoryStore.writing``: batches added, then one
    commit."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def add_batch(self, records: Sequence[tuple[str, Mapping[str, Any]]]) -> list[int]:
        """Add the records of one ``reachtest run`` (kind, record) as one batch; their
        ids, in order (stored at ``commit``)."""
        ids: list[int] = []
        for kind, record in records:
            if kind not in KINDS:
                raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
            ids.append(self._insert(self._db, kind, record, ids[0] if ids else None))
        return ids

    def commit(self) -> None:
        self._db.execute("COMMIT")

    @staticmethod
    def _insert(
        db: sqlite3.Connection, kind: str, record: Mapping[str, Any], batch: int | None
    ) -> int:
        cursor = db.execute(
            "INSERT INTO runs (started, finished, tool_version, record, kind) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                record["started"],
                record["finished"],
                record["tool"]["version"],
                json.dumps(record, separators=(",", ":"), allow_nan=False),
                kind,
            ),
        )
        run_id = cursor.lastrowid
        assert run_id is not None
        db.execute("UPDATE runs SET batch = ? WHERE id = ?", (batch or run_id, run_id))
        rows = [
            (
                run_id,
                target["host"],
                target["address"],
                flow["flow"],
                flow["verdict"]["state"] if flow["verdict"] else None,
                bool(flow["verdict"] and flow["verdict"]["reached"]),
                flow["verdict"]["reason"] if flow["verdict"] else None,
                flow["verdict"]["reason_hop"] if flow["verdict"] else None,
                flow["path"]["last_hop"] if flow["path"] else None,
            )
            for target in record["targets"]
            for flow in target["flows"]
        ]
        # Requests after the handshake (tls/443, http/80): "open" when answered, as an
        # expectation reads it; else their state, with the box's hop.
        rows += [
            (
                run_id, target["host"], target["address"], request["flow"],
                "open" if request["state"] == "answered" else request["state"],
                request["state"] == "answered", request["reason"] or "answered",
                request["box_hop"], request["box_hop"],
            )
            for target in record["targets"]
            for request in target.get("requests", ())
        ]  # fmt: skip
        # A target whose name did not resolve: its flows are stored as unresolved (no
        # address), so a DNS outage shows in `history` and `diff` like any other state.
        rows += [
            (run_id, gone["host"], "", label, UNRESOLVED, False, UNRESOLVED, None, None)
            for gone in record.get("unresolved", ())
            for label in gone["flows"]
        ]
        db.executemany("INSERT INTO services VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return run_id


class HistoryStore:
    """Runs kept in one SQLite file, which must be reachtest's (``PRAGMA application_id``)
    and sound (``PRAGMA quick_check``) before anything is written to it."""

    def __init__(self, path: str | Path, on_wait: Callable[[str], None] | None = None) -> None:
        """``on_wait`` is told (a sentence) when another process holds the history's
        write lock for more than a second: a run then waits up to 30 s, not silently."""
        self.path = Path(path)
        self._on_wait = on_wait
        refuse_links(self.path)
        why = foreign(self.path)
        if why is not None:
            raise HistoryError(
                f"history {self.path} {why}: refusing to change it; name another file"
            )
        before = _identity(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        except (sqlite3.DatabaseError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise HistoryError(f"history {self.path}: {reason}") from None
        try:
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(str(check).splitlines()[0])
            now = _identity(self.path)
            if now is None or (before is not None and now != before):
                raise HistoryError(
                    f"history {self.path} was replaced while it was opened: refusing to change it"
                )
            self._db.execute("PRAGMA foreign_keys = ON")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise HistoryError(f"history {self.path}: cannot use WAL mode (got {mode})")
            self._migrate()
        except HistoryError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if _locked(exc):
                raise self._held() from None
            raise HistoryError(
                f"history {self.path} is damaged ({str(exc).splitlines()[0][:120]}): "
                f"move it aside (mv {self.path} {self.path}.damaged) and run again"
            ) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _held(self) -> HistoryLocked:
        return HistoryLocked(
            f"history {self.path} is locked by another process (waited "
            f"{BUSY_TIMEOUT_MS // 1000} s); try again when it is done"
        )

    def _begin(self) -> None:
        """BEGIN IMMEDIATE: a second writer waits, first quietly, then saying so, up to
        BUSY_TIMEOUT_MS from the last commit another writer made. SQLite waits in short
        steps (``POLL_MS``) and Python between them, so Ctrl-C or SIGTERM stops the wait
        at once (KeyboardInterrupt)."""
        began = time.monotonic()
        told = False
        self._db.execute(f"PRAGMA busy_timeout = {POLL_MS}")
        seen = -1
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _locked(exc):
                        raise
                # Another writer that commits is busy, not stuck: the wait counts from
                # its last commit (SQLite's lock is not fair: a writer committing run
                # after run may take it again and again before this one).
                try:
                    version = self._db.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.OperationalError as exc:
                    if not _locked(exc):
                        raise
                    version = seen
                if version != seen:
                    seen, began = version, time.monotonic()
                waited_ms = (time.monotonic() - began) * 1000
                if waited_ms >= BUSY_TIMEOUT_MS:
                    raise self._held()
                if waited_ms >= QUIET_WAIT_MS and not told and self._on_wait is not None:
                    told = True
                    self._on_wait(
                        f"waiting for the history {self.path}: another process is writing "
                        f"it (up to {(BUSY_TIMEOUT_MS - QUIET_WAIT_MS) // 1000} s more)"
                    )
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE): a second writer waits."""
        self._begin()
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def writing(self) -> Iterator[Writing]:
        """The history's write lock, taken now (waiting as ``_begin`` does, interruptible):
        what the block adds is stored when it calls ``commit``, and is rolled back if it
        leaves without (an error, an interrupt). ``reachtest run`` takes it before it
        writes any report, so reports and the batch are written together or not at all."""
        self._begin()
        writer = Writing(self._db)
        try:
            yield writer
        finally:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    @property
    def version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    def _migrate(self) -> None:
        self._db.isolation_level = None  # transactions are ours, explicit
        if self.version > SCHEMA_VERSION:
            raise HistoryError(
                f"history {self.path} has schema version {self.version}, newer than this "
                f"reachtest knows ({SCHEMA_VERSION}): upgrade reachtest"
            )
        while self.version < SCHEMA_VERSION:
            step = self.version
            with self._transaction() as db:
                if db.execute("PRAGMA user_version").fetchone()[0] != step:
                    continue  # another process migrated meanwhile
                for statement in MIGRATIONS[step]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {step + 1}")
        if self._db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            with self._transaction() as db:  # new, or a history from before the id
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def add_run(self, record: Mapping[str, Any], kind: str = "trace") -> int:
        """Store a run record (a batch of its own); its id."""
        return self.add_batch([(kind, record)])[0]

    def add_batch(self, records: Sequence[tuple[str, Mapping[str, Any]]]) -> list[int]:
        """Store the records of one ``reachtest run`` (kind, record) as one batch, in one
        transaction: all of them or none. Their ids, in order."""
        with self.writing() as writer:
            ids = writer.add_batch(records)
            writer.commit()
        return ids

    def record(self, run_id: int) -> dict[str, Any]:
        """The run record stored as ``run_id``."""
        row = self._db.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise HistoryError(f"history {self.path}: no run {run_id}")
        try:
            loaded = json.loads(row[0])
        except (TypeError, ValueError, RecursionError):
            loaded = None
        if not isinstance(loaded, dict):
            raise HistoryError(f"history {self.path}: run {run_id} is damaged (not a record)")
        return loaded

    def _check_rows(self) -> None:
        """HistoryError when a row of ``services`` or ``runs`` is not of the types this
        code writes (a crafted or damaged history): one line, never a TypeError later."""
        bad = self._db.execute(_BAD_ROWS).fetchone()
        if bad is not None:
            raise HistoryError(
                f"history {self.path}: run {bad[0]} has a damaged row (values of the wrong "
                f"type): move the history aside (mv {self.path} {self.path}.damaged)"
            )
        for run_id, started in self._db.execute("SELECT id, started FROM runs"):
            try:
                datetime.fromisoformat(started.replace("Z", "+00:00"))
            except ValueError:
                raise HistoryError(
                    f"history {self.path}: run {run_id} has a damaged start time "
                    f"{started[:40]!r}: move the history aside"
                ) from None

    def services(self, target: str | None = None, since: str | None = None) -> pd.DataFrame:
        """One row per run, target and flow, oldest first (pandas)."""
        import pandas as pd

        self._check_rows()
        _encodable(self.path, target)

        query = (
            "SELECT r.id AS run_id, r.batch, r.kind, r.started, s.target, s.address, s.flow, "
            "s.state, "
            "s.reached, s.reason, s.reason_hop, s.last_hop "
            "FROM services s JOIN runs r ON r.id = s.run_id WHERE 1 = 1"
        )
        args: list[Any] = []
        if target is not None:
            query += " AND s.target = ?"
            args.append(target)
        if since is not None:
            query += " AND r.started >= ?"
            args.append(since)
        frame = pd.read_sql_query(query + " ORDER BY r.started, r.id", self._db, params=args)
        frame["reached"] = frame["reached"].astype(bool)
        return frame

    def latest(self, target: str | None = None, count: int = 1) -> list[int]:
        """The ids of the newest ``count`` runs (that hold ``target``), newest first; of
        each batch the trace when it holds one, else its check."""
        _encodable(self.path, target)
        query = (
            "SELECT r.batch, r.id FROM runs r WHERE (? IS NULL OR EXISTS ("
            "SELECT 1 FROM services s WHERE s.run_id = r.id AND s.target = ?)) "
            "ORDER BY r.batch DESC, r.kind = 'trace' DESC, r.id DESC"
        )
        best: dict[int, int] = {}
        for batch, run_id in self._db.execute(query, (target, target)):
            if batch not in best:
                if len(best) == count:
                    break
                best[batch] = run_id
        return list(best.values())

    def last_services(
        self, targets: Sequence[str]
    ) -> dict[str, dict[str, tuple[str | None, bool]]]:
        """target -> flow -> (state, reached) in the newest batch that holds the target
        (its trace's rows over its check's). Reads the rows, not the stored JSON: a
        scheduled run asks this for every target."""
        found: dict[str, dict[str, tuple[str | None, bool]]] = {}
        rows_of = (
            "SELECT s.target, s.flow, s.state, s.reached FROM services s "
            "JOIN runs r ON r.id = s.run_id WHERE r.batch = ? {} "
            "ORDER BY r.kind = 'trace', r.id"
        )
        newest = self._db.execute("SELECT MAX(batch) FROM runs").fetchone()[0]
        if newest is not None:
            for target, flow, state, reached in self._db.execute(rows_of.format(""), (newest,)):
                found.setdefault(target, {})[flow] = (state, bool(reached))
        for target in targets:
            if target in found:
                continue
            batch = self._db.execute(
                "SELECT MAX(r.batch) FROM services s JOIN runs r ON r.id = s.run_id "
                "WHERE s.target = ?",
                (target,),
            ).fetchone()[0]
            if batch is None:
                continue
            query = rows_of.format("AND s.target = ?")
            for _, flow, state, reached in self._db.execute(query, (batch, target)):
                found.setdefault(target, {})[flow] = (state, bool(reached))
        return {t: found[t] for t in targets if t in found}

    def integrity(self) -> str:
        """SQLite's own check: ``ok`` when the file is sound."""
        result: str = self._db.execute("PRAGMA integrity_check").fetchone()[0]
        return result
