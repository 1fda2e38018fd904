"""The CLI property, run by tests/unit/test_cli_property.py inside ``unshare --net`` (so
a generated trace or run can send nothing anywhere): any arguments to any command end in
exit 0-3 or 130, never 4 (an internal error), never a traceback.

Usage: python -m tests.unit.cli_fuzz FOLDER EXAMPLES  (FOLDER: a scratch folder, the cwd)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sqlite3
import sys
from pathlib import Path

import click
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reachtest.cli import cli, main

#: Commands left out: they change the machine (namespaces, /etc) or run for long.
SKIP = {("lab", "up"), ("lab", "down"), ("lab", "exec"), ("demo",)}
#: Put before the generated arguments so that a valid trace is short (later ones win).
QUICK = {("trace",): ["-c", "1", "-i", "0.01", "--timeout", "0.1", "-m", "3", "-n", "--report"],
         ("probe",): ["-c", "1", "-i", "0.01", "--timeout", "0.1", "-m", "3"],
         ("schedule", "install"): ["--dest", "units"]}  # fmt: skip
#: A valid invocation of each command, which generated arguments then extend or spoil.
BASE = {("trace",): ["198.18.0.1", "-p", "tcp/443"], ("probe",): ["198.18.0.1"],
        ("show",): ["rec.json"], ("diff",): ["rec.json", "rec.json"],
        ("history",): ["--history", "hist.sqlite"], ("config", "check"): ["conf.toml"],
        ("run",): ["--config", "conf.toml"],
        ("schedule", "install"): ["--config", "conf.toml"]}  # fmt: skip
FILES = ["rec.json", "nan.json", "huge.json", "bad.json", "evil.json", "conf.toml",
         "bad.toml", "bom.toml", "hist.sqlite", "other.sqlite", "hosts.txt", "nul.txt",
         "folder", "new.json", "out.html", "/dev/null", "/dev/full",
         "/proc/version", "missing/x.json", "link", "deep.json", "date.json", "deep.toml",
         "linked.toml", "fifo.toml", "alike.toml", "twice.toml", "lookalike.sqlite",
         "linked.sqlite"]  # fmt: skip
#: A file outside the scratch folder's names that links point at: it must keep every byte.
VICTIM = "victim.txt"
VICTIM_TEXT = "not reachtest's: must never change\n" * 10
WORDS = ["", "-", "0", "1", "2", "-1", "nan", "inf", "-inf", "1e400", "99999999999999999999",
         "x", "tcp/443", "udp/53", "icmp", "tcp/0", "tcp/99999", "https", "tcp/1-70000",
         "198.18.0.1", "2001:db8::1", "256.1.1.1", "a" * 70 + ".example", "a\x1b[2Jb",
         "a\nb", "\x00", "7d", "12h", "99999999d", "2026-11-01", "15m", "7m", "1h",
         "root", "ops@example.org", "root\n* * * * * root x", "regression", "change",
         "0001-01-01T00:00+14:00", "1e-300", "5e-324", "tls/443", "http/80", "tls/0",
         "blocked.example", "p\u0430ypal.example",
         "\uff57\uff45\uff42.example", "a\u202eb", "x\x9b2J",
         "json", "html", "text", "csv", "markdown", "--", "-4", "-6"]  # fmt: skip


def commands() -> dict[tuple[str, ...], click.Command]:
    found: dict[tuple[str, ...], click.Command] = {}

    def walk(group: click.Group, path: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            here = (*path, name)
            if isinstance(command, click.Group):
                walk(command, here)
            elif here not in SKIP:
                found[here] = command

    walk(cli, ())
    return found


COMMANDS = commands()


def options(command: click.Command) -> list[tuple[str, bool]]:
    """(option, takes a value) for each spelling of each option."""
    return [
        (opt, not (p.is_flag or p.count))
        for p in command.params
        if isinstance(p, click.Option)
        for opt in p.opts
    ]


def make_files(folder: Path) -> None:
    from tests.unit.report.conftest import sim_record

    record = sim_record()
    (folder / "rec.json").write_text(json.dumps(record))
    nan = json.loads(json.dumps(record))
    nan["targets"][0]["flows"][0]["hops"][0]["samples"][0]["rtt_ms"] = float("nan")
    (folder / "nan.json").write_text(json.dumps(nan))
    (folder / "huge.json").write_text(
        json.dumps(record).replace('"snt": 5', '"snt": 1' + "0" * 400)
    )
    (folder / "bad.json").write_text('{"schema_version": 1')
    evil = json.loads(json.dumps(record))
    evil["targets"][0]["host"] = "\x1b]0;PWNED\x07=cmd"
    (folder / "evil.json").write_text(json.dumps(evil))
    config = 'history = "hist.sqlite"\n[[target]]\nhost = "198.18.0.1"\nservices = ["tcp/443"]\n'
    (folder / "conf.toml").write_text(config + "rounds = 1\ninterval = 0.01\ntimeout = 0.1\n")
    (folder / "bad.toml").write_text("[target]\nhost = 1\n")
    (folder / "bom.toml").write_text("\ufeff" + config)
    from reachtest.history.store import HistoryStore

    with HistoryStore(folder / "hist.sqlite") as store:
        store.add_run(record)
        store.add_run(nan_free_changed(record))
    with contextlib.closing(sqlite3.connect(folder / "other.sqlite")) as db:
        db.execute("CREATE TABLE notes (x)")
        db.commit()
    (folder / "hosts.txt").write_text("198.18.0.1 # a host\n256.1.1.1\n")
    (folder / "nul.txt").write_bytes(b"198.18\x000.1\n")
    (folder / "folder").mkdir()
    # Issue 30: links and FIFOs where a run keeps its lock and history, a look-alike of a
    # history, deep nesting, dates that do not exist, two spellings of one host.
    (folder / VICTIM).write_text(VICTIM_TEXT)
    for name, history in (("linked", "linked.sqlite"), ("fifo", "fifo.sqlite")):
        (folder / f"{name}.toml").write_text(config.replace("hist.sqlite", history))
    (folder / "linked.sqlite.lock").symlink_to(folder / VICTIM)
    (folder / "linked.sqlite").symlink_to(folder / VICTIM)
    os.mkfifo(folder / "fifo.sqlite.lock")
    (folder / "alike.toml").write_text(config.replace("198.18.0.1", "p\u0430ypal.example"))
    (folder / "twice.toml").write_text(config + '[[target]]\nhost = "198.18.0.1"\nname = "b"\n')
    with contextlib.closing(sqlite3.connect(folder / "lookalike.sqlite")) as db:
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, x)")
        db.execute("CREATE TABLE services (y)")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    (folder / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    (folder / "deep.toml").write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    dated = json.loads(json.dumps(record))
    dated["started"] = "2026-13-45T25:61:00.000000Z"
    (folder / "date.json").write_text(json.dumps(dated))
    # No FIFO: reading one blocks until a writer comes, as `cat` does (and as process
    # substitution needs); outputs that are FIFOs or devices are tested in test_cli.py.
    (folder / "link").symlink_to(folder / "rec.json")


def nan_free_changed(record: dict[str, object]) -> dict[str, object]:
    """The record a minute later, its first hop's answers a millisecond slower."""
    later = json.loads(json.dumps(record))
    later["started"] = later["started"].replace(":00", ":01", 1)
    for sample in later["targets"][0]["flows"][0]["hops"][0]["samples"]:
        if sample["rtt_ms"] is not None:
            sample["rtt_ms"] += 1.0
    return later


@st.composite
def invocation(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(sorted(COMMANDS)))
    opts = options(COMMANDS[path])
    value = st.sampled_from(FILES + WORDS)
    args: list[str] = [*path, *QUICK.get(path, [])]
    if draw(st.booleans()):
        args += BASE.get(path, [])
    positional = any(isinstance(p, click.Argument) for p in COMMANDS[path].params)
    for _ in range(draw(st.integers(0, 4))):
        if opts and (not positional or draw(st.integers(0, 3))):
            opt, takes = draw(st.sampled_from(opts))
            args += [opt, draw(value)] if takes else [opt]
        else:
            args.append(draw(value))
    return args


#: Seconds one invocation may take: more is a hang, reported with its arguments.
SLOW_S = 30


class Slow(BaseException):
    """An invocation ran past SLOW_S (a BaseException: main() does not turn it into 4)."""


def _slow(_signum: int, _frame: object) -> None:
    raise Slow


def run(args: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _slow)
    signal.alarm(SLOW_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        signal.alarm(0)
    return code, err.getvalue()


def check(examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(invocation())
    def property_holds(args: list[str]) -> None:
        code, err = run(args)
        assert code in (0, 1, 2, 3, 130), (args, code, err)
        assert "Traceback" not in err and "internal error" not in err, (args, err)
        if code in (2, 3):
            assert err.count("reachtest: error:") <= 1, (args, err)

    property_holds()


if __name__ == "__main__":
    # A generated size that makes reachtest build something huge fails as MemoryError
    # (exit 4: the property fails, naming the arguments), not by the OOM killer.
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))
    folder = Path(sys.argv[1])
    os.chdir(folder)
    make_files(folder)
    check(int(sys.argv[2]))
    victim = (folder / VICTIM).read_text()
    assert victim == VICTIM_TEXT, f"a file behind a link was changed: {victim[:80]!r}"
    print("ok")
