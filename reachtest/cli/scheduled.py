"""`reachtest config`, `run`, `history`, `diff` and `schedule`: scheduled runs and their history."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reachtest.cli.base import EXIT_CODES_HELP, _console, _tell, cli
from reachtest.cli.output import (
    _same,
    _stdout_is_terminal,
    check_distinct,
    check_out_dir,
    check_output,
    save_reports,
    write_file,
)
from reachtest.errors import (
    EXIT_NOT_REACHED,
    EXIT_OK,
    UsageError,
)

if TYPE_CHECKING:
    pass


@cli.group("config", epilog=EXIT_CODES_HELP)
def config_group() -> None:
    """The TOML configuration of scheduled runs (`reachtest run --config FILE`)."""


@config_group.command("check", epilog=EXIT_CODES_HELP)
@click.argument("config_file", metavar="FILE")
def config_check(config_file: str) -> int:
    """Check FILE and show what each run would trace and expect; a problem is one line
    with the file, line and key (exit 2). Sends nothing."""
    from reachtest.report.escape import for_terminal
    from reachtest.schedule.config import load_config

    config = load_config(config_file)
    check_config_paths(config)
    out = _console()
    count = len(config.targets)
    out.print(
        for_terminal(f"{config_file}: OK, {count} target{'s' if count != 1 else ''}"),
        highlight=False,
        markup=False,
    )
    for t in config.targets:
        flows = " ".join(t.labels_of_flows)
        expect = ", ".join(f"{k} {v}" for k, v in t.expect.items()) or "nothing"
        head = t.name if t.name == t.host else f"{t.name} ({t.host})"
        out.print(
            f"  {head}: {flows}; expects {expect}; {t.rounds} rounds of {t.interval_s:g} s, "
            f"policy {t.policy}",
            highlight=False,
            markup=False,
        )
    for what, path in (("reports", config.reports), ("history", config.history),
                       ("prometheus", config.prometheus)):  # fmt: skip
        if path is not None:
            out.print(for_terminal(f"  {what}: {path}"), highlight=False, markup=False)
    return EXIT_OK


def check_config_paths(config: Any) -> None:
    """Every path a run of ``config`` writes, checked before anything is sent; a problem
    names the config key."""
    from reachtest.files import refuse_unsafe
    from reachtest.history.store import refuse_links
    from reachtest.schedule.lock import lock_path

    where = str(config.path)
    refuse_unsafe(lock_path(config.history, config.path), f"{where}: the lock")
    if config.reports is not None:
        check_out_dir(str(config.reports), f"{where}: reports")
    if config.history is not None:
        history = config.history
        if history.is_dir():
            raise UsageError(f"{where}: history {history}: it is a directory")
        if not history.parent.is_dir():
            raise UsageError(f"{where}: history {history}: no directory {str(history.parent)!r}")
        if not history.exists() and not os.access(history.parent, os.W_OK):
            raise UsageError(f"{where}: history {history}: permission denied")
        if history.exists() and _same(history, Path(config.path)):
            raise UsageError(f"{where}: history {history}: it is the configuration itself")
        try:
            refuse_links(history)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
    if config.prometheus is not None:
        check_output(str(config.prometheus), f"the metrics ({where}: prometheus)")
        check_distinct(
            {f"prometheus {config.prometheus}": str(config.prometheus)},
            {"the history": config.history, "the configuration": config.path},
        )


RUN_EXIT_HELP = """\b
Exit codes:
  0  every expectation of every target holds
  1  an expectation does not hold (the summary says which, and where it stops)
  2  configuration or input error (one line: file, line, key)
  3  permission or environment error (not root / no CAP_NET_RAW; another run holds the lock)
  4  internal error (a bug: please report it)
"""


@cli.command("run", epilog=RUN_EXIT_HELP)
@click.option("--config", "config_file", required=True, metavar="FILE", help="The TOML file.")
@click.option(
    "--wait",
    type=float,
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for a run still holding the lock (then give up, exit 3).",
)
@click.option("-v", "--verbose", is_flag=True, help="Print the summary even when all is well.")
def run_command(config_file: str, wait: float, verbose: bool) -> int:
    """One scheduled pass (for cron or a systemd timer): a fast check of every target
    (ICMP echo with icmplib; TCP/UDP at full TTL), full hop-by-hop traces where the
    policy asks (always, on-change, on-failure), expectations judged, history, reports
    and metrics written.

    Quiet when every expectation holds (cron mails only trouble); otherwise a short
    summary naming each service that is not as expected and the hop where it stops.
    Needs root or CAP_NET_RAW.
    """
    from reachtest.engine.transport import require_raw_capability
    from reachtest.interrupts import Interrupted, interrupts
    from reachtest.report.escape import for_terminal
    from reachtest.schedule import metrics
    from reachtest.schedule.config import load_config
    from reachtest.schedule.lock import hold, lock_path
    from reachtest.schedule.run import run_batch, store_batch, summary
    from reachtest.spec import resolve_target

    if not 0 <= wait <= 86_400:  # NaN fails this too
        raise UsageError(f"--wait must be 0 to 86400 seconds, not {wait:g}")
    config = load_config(config_file)
    check_config_paths(config)
    require_raw_capability()
    with (
        interrupts() as guard,
        hold(lock_path(config.history, config.path), wait),
        contextlib.ExitStack() as stack,
    ):
        history = None
        if config.history is not None:
            from reachtest.history.store import HistoryStore

            history = stack.enter_context(HistoryStore(config.history, on_wait=_tell))
        try:
            with _run_progress() as progress:
                batch = run_batch(
                    config, history=history, progress=progress, resolve=resolve_target
                )
            # The history's write lock first (a wait that Ctrl-C ends, exit 3 after
            # 30 s): no report is written unless the batch can be stored with it.
            writer = stack.enter_context(history.writing()) if history is not None else None
        except KeyboardInterrupt:
            raise Interrupted("interrupted before the run was stored: nothing written") from None
        # From here on the run's results are written whole: an interrupt waits.
        with guard.held():
            batch = store_batch(batch, config, writer, save_reports)
            if config.prometheus is not None:
                write_file(config.prometheus, metrics.render(batch))
        stored = f"run {batch.run_id} in {config.history}" if batch.run_id else "nothing"
        wrote = "metrics written" if config.prometheus else "no metrics"
        guard.raise_pending(
            f"the run was stored ({stored}; {len(batch.reports)} report files, {wrote})"
        )
    if verbose or not batch.ok or _stdout_is_terminal():
        lines = summary(batch, None if config.history is None else str(config.history))
        shown = lines if verbose or not batch.ok else lines[:1]
        click.echo("\n".join(for_terminal(line) for line in shown))
    return EXIT_OK if batch.ok else EXIT_NOT_REACHED


@contextlib.contextmanager
def _run_progress() -> Any:
    """A progress bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        yield lambda done, total, what: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=_console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=1)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        yield update


def _history_file(history: str | None, config_file: str | None) -> Path:
    """The history named by --history, or by the configuration's ``history``."""
    if history is not None and config_file is not None:
        raise UsageError("give --history or --config, not both")
    if history is not None:
        path = Path(history)
    elif config_file is not None:
        from reachtest.schedule.config import load_config

        found = load_config(config_file).history
        if found is None:
            raise UsageError(f"{config_file} names no history file (history = ...)")
        path = found
    else:
        raise UsageError("which history? give --history FILE or --config FILE")
    if not path.is_file():
        raise UsageError(f"no history at {path} (reachtest run writes it)")
    return path


def _open_history(history: str | None, config_file: str | None) -> Any:
    from reachtest.history.store import HistoryStore

    return HistoryStore(_history_file(history, config_file))


DIFF_EXIT_HELP = """\b
Exit codes:
  0  compared (and, with --fail-on, nothing got worse or changed)
  1  --fail-on regression: a service got worse (it got through before, now it does not);
     --fail-on change: anything changed
  2  usage or input error (a file or run that is not there, bad options)
  4  internal error (a bug: please report it)
"""


@cli.command("diff", epilog=DIFF_EXIT_HELP)
@click.argument("runs", nargs=-1, metavar="[BEFORE AFTER]")
@click.option(
    "--last",
    nargs=2,
    type=(int, str),
    default=None,
    metavar="N TARGET",
    help="Compare the oldest and newest of TARGET's last N runs in the history (N >= 2).",
)
@click.option("--history", metavar="FILE", help="The history file (for run ids and --last).")
@click.option("--config", "config_file", metavar="FILE", help="Take the history from FILE.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "html"]),
    default="text",
    show_default=True,
)
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of stdout.")
@click.option(
    "--fail-on",
    type=click.Choice(["never", "regression", "change"]),
    default="never",
    show_default=True,
    help="Exit 1 when a service got worse (regression) or anything changed (change).",
)
def diff_command(
    runs: tuple[str, ...],
    last: tuple[int, str] | None,
    history: str | None,
    config_file: str | None,
    fmt: str,
    output: str | None,
    fail_on: str,
) -> int:
    """Compare two runs, before and after a firewall change: each service's state and
    where it stops, each hop's responders, and latency (Mann-Whitney U) and loss
    (Fisher's exact) per hop, reported only when significant (p < 0.01).

    \b
    BEFORE and AFTER are run records (JSON from trace --json or --save) or run ids
    in the history (with --history or --config). Or: --last 2 TARGET.
    Example: reachtest diff --last 2 web --config /etc/reachtest.toml
    """
    from reachtest.analysis.diff import diff_runs
    from reachtest.report.diffview import RENDER as DIFF_RENDER
    from reachtest.report.record import load_record, upgrade_record

    check_output(output, "the diff")
    sources: dict[str, str | Path | None] = {
        f"the run record {r}": r for r in runs if not r.isdigit()
    }
    sources |= {"the configuration": config_file, "the history": history}
    if config_file is not None and history is None and output is not None:
        with contextlib.suppress(UsageError):
            sources["the history"] = _history_file(None, config_file)
    check_distinct({"the diff": output}, sources)
    target = None
    if last is not None:
        if runs:
            raise UsageError("give BEFORE AFTER or --last N TARGET, not both")
        count, target = last
        if count < 2:
            raise UsageError(f"--last needs at least 2 runs, not {count}")
        with _open_history(history, config_file) as store:
            ids = store.latest(target, count)
            if len(ids) < 2:
                raise UsageError(
                    f"the history holds {len(ids)} run of {target!r}: two are needed to compare"
                )
            before, after = (
                upgrade_record(store.record(ids[-1])),
                upgrade_record(store.record(ids[0])),
            )
        names = [f"run {ids[-1]}", f"run {ids[0]}"]
    elif len(runs) == 2:
        loaded, names = [], []
        store = None
        try:
            for one in runs:
                if one == "-" or not one.isdigit() or Path(one).exists():
                    loaded.append(load_record(one))
                    names.append(one)
                    continue
                if store is None:
                    store = _open_history(history, config_file)
                loaded.append(upgrade_record(store.record(int(one))))
                names.append(f"run {one}")
        finally:
            if store is not None:
                store.close()
        before, after = loaded
    else:
        raise UsageError("give two runs to compare (BEFORE AFTER) or --last N TARGET")
    # Records come from files and the network: their strings are shown, never sent.
    from reachtest.report.escape import clean, for_terminal

    before, after = (clean(r, skip=frozenset({"samples"})) for r in (before, after))
    names = [for_terminal(n) for n in names]
    diff = diff_runs(before, after, before_name=names[0], after_name=names[1], target=target)
    text = DIFF_RENDER[fmt](diff)
    if output is None:
        sys.stdout.write(text)
    else:
        _tell(f"wrote {write_file(Path(output), text)}")
    if fail_on == "regression" and diff.regressions:
        return EXIT_NOT_REACHED
    if fail_on == "change" and diff.changed:
        return EXIT_NOT_REACHED
    return EXIT_OK


def _where_said(store: Any, changed: Any) -> dict[tuple[int, str, str], str]:
    """(run id, target, flow) -> where the flow stops in the words of its run's reports
    (``analysis.where``), for each change of state found by a trace that did not get
    through; read from the stored run records."""
    from reachtest.analysis.where import of_flow, of_request

    said: dict[tuple[int, str, str], str] = {}
    records: dict[int, Any] = {}
    for c in changed.to_dict("records"):
        if c["kind"] != "trace" or c["word"] in ("open", "reachable"):
            continue
        run_id = int(c["run_id"])
        if run_id not in records:
            records[run_id] = store.record(run_id)
        for t in records[run_id]["targets"]:
            if t["host"] != c["target"]:
                continue
            for f in t["flows"]:
                stopped = of_flow(f) if f["flow"] == c["flow"] else None
                if stopped is not None and not stopped.through:
                    said[(run_id, c["target"], c["flow"])] = stopped.words()
            for r in t.get("requests", ()):
                if r["flow"] == c["flow"] and r["state"] != "answered":
                    said[(run_id, c["target"], c["flow"])] = of_request(r).words()
    return said


@cli.command("history", epilog=EXIT_CODES_HELP)
@click.argument("target", required=False)
@click.option("--since", metavar="WHEN", help="Only runs from WHEN on (2026-11-01, or 7d, 12h).")
@click.option("--history", metavar="FILE", help="The history file.")
@click.option("--config", "config_file", metavar="FILE", help="Take the history from FILE.")
@click.option("--html", "html_path", metavar="FILE|-", help="Write the availability timeline.")
def history_command(
    target: str | None,
    since: str | None,
    history: str | None,
    config_file: str | None,
    html_path: str | None,
) -> int:
    """How each service of TARGET (or of every target) fared over the stored runs: the
    share of runs it got through, and every change of state, with when and why."""
    from reachtest.analysis.timeline import availability, changes, per_run
    from reachtest.report.escape import for_terminal

    check_output(html_path, "the history page")
    if html_path is not None and html_path != "-":
        check_distinct(
            {"the history page": html_path},
            {"the history": _history_file(history, config_file), "the configuration": config_file},
        )
    moment = _since(since)
    with _open_history(history, config_file) as store:
        runs = per_run(store.services(target, moment))
        if runs.empty:
            what = f"of {target!r} " if target else ""
            since_ = f" since {moment}" if moment else ""
            raise UsageError(f"no runs {what}in the history{since_}")
        table, changed = availability(runs), changes(runs)
        said = _where_said(store, changed)
    if html_path is not None:
        from reachtest.report.timeline import render_history_html

        page = render_history_html(runs, changed, table)
        if html_path == "-":
            sys.stdout.write(page)
            return EXIT_OK
        _tell(f"wrote {write_file(Path(html_path), page)}")
    out = _console()
    batches = runs["batch"].nunique()
    out.print(
        for_terminal(f"{batches} runs from {runs['when'].min()} to {runs['when'].max()} UTC"),
        highlight=False,
        markup=False,
    )
    for row in table.to_dict("records"):
        out.print(
            for_terminal(
                f"{row['target']} {row['flow']}: now {row['now']}, got through in "
                f"{100 * row['through']:.0f}% of {row['runs']} runs"
            ),
            highlight=False,
            markup=False,
        )
        mine = changed[(changed["target"] == row["target"]) & (changed["flow"] == row["flow"])]
        for c in mine.to_dict("records"):
            hop, last = c["reason_hop"], c["last_hop"]
            at = "" if hop is None or math.isnan(hop) else f" at hop {int(hop)}"
            if not at and c["kind"] == "trace" and last is not None and not math.isnan(last):
                at = f", last answer at hop {int(last)}"
            words = said.get((int(c["run_id"]), c["target"], c["flow"]))
            if words:  # a trace: where it stops, as its reports say
                at = f"; {words}"
            out.print(
                for_terminal(
                    f"  {c['when']}  {c['word']:<13} {c['reason']}{at}  (run {c['run_id']})"
                ),
                highlight=False,
                markup=False,
            )
    return EXIT_OK


def _since(text: str | None) -> str | None:
    """An ISO time from ``2026-11-01``, ``2026-11-01T10:00`` or a span back: ``7d``, ``12h``."""
    import re
    from datetime import UTC, datetime, timedelta

    if text is None:
        return None
    span = re.fullmatch(r"(\d+)\s*([dhm])", text.strip())
    if span:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[span.group(2)]
        try:
            moment = datetime.now(UTC) - timedelta(**{unit: int(span.group(1))})
        except OverflowError:
            raise UsageError(f"--since {text}: that is before the year 1") from None
        return moment.isoformat().replace("+00:00", "Z")
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since takes a date (2026-11-01) or a span (7d, 12h), not {text!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")
    except OverflowError:
        raise UsageError(f"--since {text}: out of the range of dates") from None


@cli.group("schedule", epilog=EXIT_CODES_HELP)
def schedule_group() -> None:
    """Run `reachtest run --config FILE` on a schedule (cron or a systemd timer)."""


@schedule_group.command("install", epilog=EXIT_CODES_HELP)
@click.option("--config", "config_file", required=True, metavar="FILE", help="The TOML file.")
@click.option("--every", "interval", default="15m", show_default=True, help="5m, 15m, 1h, ...")
@click.option("--systemd", is_flag=True, help="A systemd service and timer instead of cron.")
@click.option("--mail-to", metavar="ADDRESS", help="cron: who gets the summary of trouble.")
@click.option(
    "--dest",
    metavar="DIR",
    help="Where to write [/etc/cron.d, or /etc/systemd/system with --systemd].",
)
@click.option("--print", "show", is_flag=True, help="Print what would be written; write nothing.")
@click.option(
    "--exporter",
    is_flag=True,
    help="A systemd service that runs `reachtest exporter --config FILE` (an exporter "
    "configuration) for good, instead of scheduled runs.",
)
@click.option("--listen", default=None, metavar="HOST:PORT", help="--exporter: where it serves.")
@click.option("--vantage", default=None, metavar="NAME", help="--exporter: its vantage label.")
def schedule_install(
    config_file: str,
    interval: str,
    systemd: bool,
    mail_to: str | None,
    dest: str | None,
    show: bool,
    exporter: bool,
    listen: str | None,
    vantage: str | None,
) -> int:
    """Write a cron.d file or a systemd service + timer that runs the configuration.

    The configuration is checked first. With --systemd, enable it afterwards with:
    systemctl daemon-reload && systemctl enable --now reachtest-NAME.timer

    With --exporter: a systemd service for the Prometheus exporter (CAP_NET_RAW only).
    """
    from reachtest.schedule.config import load_config
    from reachtest.schedule.install import (
        SERVICE_USER,
        cron_file,
        mail_address,
        systemd_units,
        unit_name,
    )

    if exporter:
        return _install_exporter(config_file, listen, vantage, dest, show, mail_to)
    if listen is not None or vantage is not None:
        raise UsageError("--listen and --vantage go with --exporter")
    if mail_to is not None:
        if systemd:
            raise UsageError("--mail-to is for cron; a systemd unit's output goes to the journal")
        mail_address(mail_to)
    config = Path(config_file).resolve()
    loaded = load_config(config)
    writes = tuple(
        p.resolve()
        for p in (
            loaded.history.parent if loaded.history else None,
            loaded.reports,
            loaded.prometheus.parent if loaded.prometheus else None,
        )
        if p is not None
    )
    executable = _executable()
    name = unit_name(config)
    if systemd:
        files = systemd_units(executable, config, interval, writes)
        folder = Path(dest or "/etc/systemd/system")
    else:
        files = {name: cron_file(executable, config, interval, mail_to)}
        folder = Path(dest or "/etc/cron.d")
    if _write_units(folder, files, show):
        return EXIT_OK
    if systemd:
        folders = " ".join(shlex.quote(str(p)) for p in sorted(set(writes)))
        click.echo(
            f"It runs as the system user {SERVICE_USER} with CAP_NET_RAW only. Once: "
            f"useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "
            f"{SERVICE_USER}"
            + (f"; mkdir -p {folders} && chown {SERVICE_USER}: {folders}" if folders else "")
            + f"\nEnable it: systemctl daemon-reload && systemctl enable --now {name}.timer",
            err=True,
        )
    return EXIT_OK


def _write_units(folder: Path, files: dict[str, str], show: bool) -> bool:
    """Print ``files`` (with ``show``: True, nothing written) or write them into
    ``folder``, replacing only what an earlier install of the same config wrote."""
    if show:
        from reachtest.report.escape import for_terminal

        for file_name, text in files.items():
            click.echo(f"# {for_terminal(str(folder / file_name))}\n{text}")
        return True
    check_out_dir(str(folder), "--dest")
    for file_name in files:
        target = folder / file_name
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise UsageError(f"{target} exists and is not a regular file: left as it is")
        if target.exists() and not _written_by_install(target):
            raise UsageError(f"{target} exists and is not reachtest's: left as it is")
    for file_name, text in files.items():  # root's files, read by cron or systemd: 0644
        written = write_file(folder / file_name, text, mode=0o644)
        _tell(f"wrote {written}")
    return False


def _executable() -> str:
    return (
        str(Path(sys.argv[0]).resolve())
        if Path(sys.argv[0]).name == "reachtest"
        else (shlex.join([sys.executable, "-m", "reachtest"]))
    )


def _install_exporter(
    config_file: str,
    listen: str | None,
    vantage: str | None,
    dest: str | None,
    show: bool,
    mail_to: str | None,
) -> int:
    from reachtest.cli.exporter import DEFAULT_LISTEN, check_vantage, parse_listen
    from reachtest.schedule.install import SERVICE_USER, exporter_unit
    from reachtest.serve.config import load_exporter_config

    if mail_to is not None:
        raise UsageError("--mail-to is for cron; the exporter's log goes to the journal")
    parse_listen(listen or DEFAULT_LISTEN)
    if vantage is not None:
        check_vantage(vantage)
    config = Path(config_file).resolve()
    load_exporter_config(config)
    files = exporter_unit(_executable(), config, listen or DEFAULT_LISTEN, vantage)
    folder = Path(dest or "/etc/systemd/system")
    if _write_units(folder, files, show):
        return EXIT_OK
    name = next(iter(files))
    click.echo(
        f"It runs as the system user {SERVICE_USER} with CAP_NET_RAW only. Once: "
        f"useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "
        f"{SERVICE_USER}\nStart it: systemctl daemon-reload && systemctl enable --now {name}",
        err=True,
    )
    return EXIT_OK


def _written_by_install(path: Path) -> bool:
    """Does ``path`` start as `schedule install` starts its files?"""
    try:
        with path.open("rb") as stream:
            head = stream.read(64)
    except OSError:
        return False
    return head.startswith((b"# reachtest: ", b"[Unit]\nDescription=reachtest "))
