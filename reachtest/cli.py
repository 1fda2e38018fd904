"""The command line: parse, wire the layers together, write output, decide the exit code.

Imports of the heavy layers happen inside the commands, so ``reachtest --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reachtest import __version__
from reachtest.errors import (
    EXIT_ENVIRONMENT,
    EXIT_INTERNAL,
    EXIT_NOT_REACHED,
    EXIT_OK,
    EXIT_USAGE,
    LabError,
    ReachtestError,
    UsageError,
)
from reachtest.interrupts import terminate_as_interrupt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console

    from reachtest.engine.transport import RawTransport
    from reachtest.model import Outcome, TraceParams

EXIT_CODES_HELP = """\b
Exit codes:
  0  success (every traced service answered)
  1  a service or host was not reached
  2  usage or input error
  3  permission or environment error (not root, no netns, no nft, lab not up)
  4  internal error (a bug: please report it)
"""


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        _console(stderr=True).print(f"[dim]… {message}[/dim]")


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "-V", "--version", prog_name="reachtest")
def cli() -> None:
    """reachtest: where, and how, are my packets to that port dying?

    Traces ICMP next to TCP and UDP probes to chosen ports, hop by hop, and says
    where a service is blocked while the host still pings.
    """


# -- lab ----------------------------------------------------------------------------


class LabNotHealthy(ReachtestError):
    """``lab status`` found the lab missing or broken (exit 3, after printing it)."""

    exit_code = EXIT_ENVIRONMENT


@cli.group(epilog=EXIT_CODES_HELP)
def lab() -> None:
    """A network-namespace lab: client -- routers -- server, with scenarios.

    Needs root. Every link is addressed from 198.18.0.0/15 and 2001:db8::/32; the
    client has no default route, so nothing run inside the lab leaves it.
    """


def _ports(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError:
        raise UsageError(f"--tcp-ports takes numbers separated by commas, not {text!r}") from None


@lab.command("up", epilog=EXIT_CODES_HELP)
@click.argument("scenario")
@click.option(
    "--hops",
    type=int,
    default=5,
    show_default=True,
    help="Routers between client and server (1-20).",
)
@click.option(
    "--targets",
    type=int,
    default=0,
    show_default=True,
    help="Extra server addresses from 198.19.0.0/16 and 2001:db8:ff::/64.",
)
@click.option(
    "--name", "lab_id", default="lab", show_default=True, help="Lab instance id (a-z, 0-9)."
)
@click.option("--tcp-ports", default=None, help="TCP ports the server listens on [22,80,443,8080].")
@click.option(
    "--rule",
    "rules",
    multiple=True,
    metavar="SPEC",
    help="Add a rule (repeatable): r2:drop:tcp/22, r3:port-unreachable:udp/123, "
    "server:admin-prohibited:icmp, r4:tcp-reset:tcp/80, r1:silent, r2:ratelimit[:MS], "
    "r3:loss:10. The ground truth does not cover added rules.",
)
def lab_up(
    scenario: str,
    hops: int,
    targets: int,
    lab_id: str,
    tcp_ports: str | None,
    rules: tuple[str, ...],
) -> None:
    """Bring up SCENARIO (see `reachtest lab list`); an old lab of that name goes first."""
    from reachtest.lab import manager

    started = time.monotonic()
    plan = manager.up(
        scenario,
        lab_id=lab_id,
        hops=hops,
        targets=targets,
        tcp_ports=_ports(tcp_ports),
        rules=rules,
        progress=_progress,
    )
    elapsed = time.monotonic() - started
    topo, sc = plan.topology, plan.scenario
    out = _console()
    out.print(
        f"[bold]Lab {topo.lab_id!r} is up[/bold]: scenario [bold]{sc.name}[/bold]: {sc.description}"
    )
    added = sc.rules[len(sc.rules) - len(sc.extra_rules) :]
    for spec, rule in zip(sc.extra_rules, added, strict=True):
        out.print(f"  added rule {spec}: {rule.describe()}")
    routers = " → ".join(
        "|".join(n.name for n in topo.routers_at(h)) for h in range(1, topo.hops + 1)
    )
    out.print(
        f"  client {topo.client_address()} → {routers} → server "
        f"{topo.server_address()} {topo.server_address(v6=True)}"
    )
    if targets:
        v4, v6 = topo.extra_targets()
        out.print(
            f"  {targets} extra targets on the server: {v4[0]} … {v4[-1]}, {v6[0]} … {v6[-1]}"
        )
    svc = plan.services
    tcp_list = " ".join(f"tcp/{p}" for p in svc.tcp_ports)
    out.print(f"  services: {tcp_list} udp/{svc.dns_port} (DNS) udp/{svc.ntp_port} (NTP)")
    flag = "" if topo.lab_id == "lab" else f" --name {topo.lab_id}"
    out.print(f"  up in {elapsed:.2f} s. Try: reachtest lab exec{flag} -- ping -c1 server")
    out.print(f"  See it: reachtest lab status{flag}   Remove it: reachtest lab down{flag}")


@lab.command("down", epilog=EXIT_CODES_HELP)
@click.option("--name", "lab_id", default=None, help="Lab instance id [the only lab, or 'lab'].")
@click.option(
    "--all", "everything", is_flag=True, help="Remove every reachtest lab on this machine."
)
def lab_down(lab_id: str | None, everything: bool) -> None:
    """Remove a lab: its processes, namespaces and files (also after a failed `up`)."""
    from reachtest.lab import manager
    from reachtest.lab.netns import require_lab_privileges

    if everything and lab_id:
        raise UsageError("give --name or --all, not both")
    require_lab_privileges()
    ids = manager.lab_ids() if everything else [manager.resolve_lab(lab_id)]
    out = _console()
    if not ids:
        out.print("No reachtest lab on this machine: nothing to remove.")
    for one in ids:
        removed = manager.down(one, progress=_progress)
        if not removed:
            out.print(f"No lab {one!r} here: nothing to remove.")
            continue
        spaces = sum(1 for r in removed if r.startswith("namespace"))
        procs = sum(1 for r in removed if r.startswith("process"))
        out.print(f"Lab {one!r} is down: removed {spaces} namespaces and {procs} processes.")


@lab.command("list")
@click.option(
    "--hops", type=int, default=5, show_default=True, help="Describe scenarios for this many hops."
)
def lab_list(hops: int) -> None:
    """The built-in scenarios, one line each."""
    from rich.table import Table

    from reachtest.lab.scenarios import SCENARIOS, scenario
    from reachtest.lab.topology import MAX_HOPS, MIN_HOPS

    if not MIN_HOPS <= hops <= MAX_HOPS:
        raise UsageError(f"--hops must be from {MIN_HOPS} to {MAX_HOPS}, not {hops}")

    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("scenario")
    table.add_column(f"what it does (with --hops {hops})")
    for name in SCENARIOS:
        try:
            table.add_row(name, scenario(name, hops).description)
        except ReachtestError as exc:
            table.add_row(name, f"[dim]({exc})[/dim]")
    _console().print(table)


@lab.command("status", epilog=EXIT_CODES_HELP)
@click.option("--name", "lab_id", default=None, help="Lab instance id [the only lab, or 'lab'].")
def lab_status(lab_id: str | None) -> None:
    """Nodes, addresses, rules, services and the scenario's ground truth."""
    from reachtest.lab import manager
    from reachtest.lab.render import render_status

    one = manager.resolve_lab(lab_id)
    state = manager.status(one)
    if state.plan is None and state.namespaces:
        raise LabNotHealthy(
            f"lab {one!r} is broken: its namespaces exist but no state was recorded; "
            f"remove it with: reachtest lab down --name {one}"
        )
    if state.plan is None:
        raise LabNotHealthy(f"lab {one!r} is not up (start it: reachtest lab up SCENARIO)")
    render_status(state, _console())
    if state.missing or not all(state.alive.values()):
        raise LabNotHealthy(f"lab {one!r} is not fully up: see above")


@lab.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog=EXIT_CODES_HELP,
)
@click.option("--name", "lab_id", default=None, help="Lab instance id [the only lab, or 'lab'].")
@click.option("--node", default="client", show_default=True, help="Run in this node instead.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def lab_exec(lab_id: str | None, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside the lab's client (e.g. `reachtest lab exec -- ping -c1 server`).

    The command's own exit code is returned.
    """
    from reachtest.lab import manager

    argv = manager.exec_argv(manager.resolve_lab(lab_id), node, list(command))
    sys.stdout.flush()
    os.execv(argv[0], argv)


# -- entry point ------------------------------------------------------------------------


def _say(message: str, kind: str = "error: ") -> None:
    """The one error line (or, with ``kind=""``, a notice): whatever it quotes (a host, a
    record's value) is shown, its control characters and newlines written out, never sent
    to the terminal."""
    from reachtest.report.escape import for_terminal

    click.echo(f"reachtest: {kind}{for_terminal(message)}", err=True)


def _tell(message: str) -> None:
    """A notice on stderr (not an error), escaped as ``_say`` escapes."""
    _say(message, kind="")


def _family(ipv4: bool, ipv6: bool) -> int | None:
    """-4 and -6 together are a contradiction, not "the last one wins"."""
    if ipv4 and ipv6:
        raise UsageError("give -4 or -6, not both")
    return 4 if ipv4 else 6 if ipv6 else None


# -- probe ------------------------------------------------------------------------


def _payload(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"--payload must be hex digits, not {text!r}") from None


def _params(**values: Any) -> TraceParams:
    """TraceParams from options, checked: a bad value is a usage error."""
    from reachtest.engine.tracer import validate
    from reachtest.model import TraceParams

    params = TraceParams(**values)
    try:
        validate(params)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return params


def _least_privilege(transport: RawTransport, addresses: Sequence[str]) -> None:
    """With the sockets open, become the invoking user without capabilities, before the
    first reply (or reverse-DNS answer) is parsed."""
    from reachtest.privileges import drop_privileges

    transport.open_senders(6 if ":" in a else 4 for a in addresses)
    drop_privileges()


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    rtt = outcome.rtt_ns
    return {
        "target": outcome.target,
        "flow": outcome.flow.label,
        "ttl": outcome.ttl,
        "round": outcome.round,
        "probe_id": outcome.probe_id,
        "sent_ns": outcome.sent_ns,
        "kind": str(outcome.kind),
        "responder": outcome.responder,
        "rtt_ms": None if rtt is None else round(rtt / 1e6, 4),
        "reply_ttl": outcome.reply_ttl,
        "icmp_type": outcome.icmp_type,
        "icmp_code": outcome.icmp_code,
        "tcp_flags": outcome.tcp_flags,
        "quote_ttl": outcome.quote_ttl,
        "quote_changed": list(outcome.quote_changed),
        "quote_src": outcome.quote_src,
        "quote_port": outcome.quote_port,
        "mpls": [
            {"label": m.label, "tc": m.tc, "bottom": m.bottom, "ttl": m.ttl} for m in outcome.mpls
        ],
        "exact": outcome.exact,
        "extra": None if outcome.extra is None else str(outcome.extra),
    }


@cli.command("probe", epilog=EXIT_CODES_HELP)
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "-p",
    "--port",
    "ports",
    multiple=True,
    metavar="FLOW",
    help="A flow: tcp/443, udp/53, 443 (tcp), icmp; repeat or comma-separate.",
)
@click.option("--no-icmp", is_flag=True, help="Do not trace ICMP echo alongside the services.")
@click.option("-f", "--first-ttl", type=int, default=1, show_default=True)
@click.option("-m", "--max-ttl", type=int, default=30, show_default=True)
@click.option("-c", "--rounds", type=int, default=None, help="Rounds [10; 1 with --fast].")
@click.option(
    "-i", "--interval", type=float, default=1.0, show_default=True, help="Seconds per round."
)
@click.option(
    "--timeout", type=float, default=2.0, show_default=True, help="Seconds to wait for a reply."
)
@click.option(
    "--rate", type=float, default=5000.0, show_default=True, help="Packets/s cap (0: none)."
)
@click.option("--max-in-flight", type=int, default=4096, show_default=True)
@click.option(
    "--gap-limit", type=int, default=5, show_default=True, help="Silent TTLs before giving up."
)
@click.option("--fast", is_flag=True, help="Every TTL of every flow at once, one round.")
@click.option(
    "--payload", default="", metavar="HEX", help="UDP payload for ports without a known protocol."
)
@click.option(
    "--analyse",
    "analyse_run",
    is_flag=True,
    help="Print verdicts and findings in plain text instead of JSON lines.",
)
@click.option("-4", "ipv4", is_flag=True, help="IPv4 only.")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 only.")
def probe_command(
    targets: tuple[str, ...],
    ports: tuple[str, ...],
    no_icmp: bool,
    first_ttl: int,
    max_ttl: int,
    rounds: int | None,
    interval: float,
    timeout: float,
    rate: float,
    max_in_flight: int,
    gap_limit: int,
    fast: bool,
    payload: str,
    analyse_run: bool,
    ipv4: bool,
    ipv6: bool,
) -> int:
    """Send probes to TARGETS and print every outcome as a JSON line (a debug view).

    Strays (replies that answer no probe) and totals go to stderr at the end. Needs
    root or CAP_NET_RAW.
    """
    import json

    family = _family(ipv4, ipv6)

    from reachtest.engine.tracer import Tracer
    from reachtest.engine.transport import RawTransport
    from reachtest.spec import flow_list, resolve_target

    flows = flow_list(ports, not no_icmp)
    udp_payload = _payload(payload)
    params = _params(
        first_ttl=first_ttl,
        max_ttl=max_ttl,
        rounds=rounds if rounds is not None else (1 if fast else 10),
        interval_s=interval,
        timeout_s=timeout,
        rate_pps=rate,
        max_in_flight=max_in_flight,
        gap_limit=gap_limit,
        fast=fast,
    )
    addresses = [resolve_target(t, family) for t in targets]
    out = sys.stdout

    def emit(outcome: Outcome) -> None:
        if not analyse_run:
            out.write(json.dumps(_outcome_json(outcome)) + "\n")

    transport = RawTransport()
    try:
        _least_privilege(transport, addresses)
        tracer = Tracer(
            transport, addresses, flows, params, udp_payload=udp_payload, on_outcome=emit
        )
        try:
            result = tracer.run()
        except KeyboardInterrupt:
            tracer.stop()
            raise
    finally:
        transport.close()
    for extra in result.extras:
        emit(extra)
    if analyse_run:
        from reachtest.analysis.analyse import analyse
        from reachtest.analysis.summary import render_text

        out.write(render_text(analyse(result.outcomes, result.params, result.budgets)))
    strays = ", ".join(f"{n} {reason}" for reason, n in result.stray_counts) or "none"
    answered = sum(1 for o in result.outcomes if o.responder is not None)
    click.echo(
        f"reachtest: sent {result.sent} probes, {answered} answered, "
        f"{len(result.extras)} duplicate or late, strays: {strays}",
        err=True,
    )
    return EXIT_OK


# -- trace and show --------------------------------------------------------------------

TRACE_EXIT_HELP = """\b
Exit codes:
  0  every target answered and every traced service is open
  1  a service is not open (closed, filtered, open|filtered) or a host was not reached
  2  usage or input error (bad host, port, option, unwritable output)
  3  permission or environment error (not root / no CAP_NET_RAW)
  4  internal error (a bug: please report it)
"""


def exit_code(record: dict[str, Any]) -> int:
    """The exit code a finished run gives (errors map to theirs in ``main``)."""
    from reachtest.errors import EXIT_NOT_REACHED
    from reachtest.report.record import run_ok

    return EXIT_OK if run_ok(record) else EXIT_NOT_REACHED


def _one_stdout(**paths: str | None) -> None:
    """At most one output may go to stdout (``-``)."""
    taken = [f"--{name} -" for name, path in paths.items() if path == "-"]
    if len(taken) > 1:
        raise UsageError(f"{' and '.join(taken)} cannot both write to stdout")


def check_output(path: str | None, what: str) -> None:
    """Fail before any probe is sent when ``path`` cannot be written."""
    if path is None or path == "-":
        return
    if not path.strip():
        raise UsageError(f"cannot write {what} to {path!r}: give a file name (or - for stdout)")
    if "\x00" in path:
        raise UsageError(f"cannot write {what}: the file name holds a NUL byte")
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write {what} to {path}: it is a directory")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        kind = "a symbolic link" if target.is_symlink() else "not a regular file"
        raise UsageError(f"cannot write {what} to {path}: it is {kind}, left as it is")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"cannot write {what} to {path}: no directory {str(folder)!r}")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"cannot write {what} to {path}: permission denied")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links and bind mounts too
    except OSError:
        return a.resolve() == b.resolve()


def check_distinct(outputs: dict[str, str | None], inputs: dict[str, str | Path | None]) -> None:
    """No two outputs the same file, and no output that is an input (a record, the
    history, the configuration): one of them would be lost. Keys say what each is."""
    named = [(what, Path(p)) for what, p in outputs.items() if p is not None and p != "-"]
    for i, (what, path) in enumerate(named):
        for other, other_path in named[i + 1 :]:
            if _same(path, other_path):
                raise UsageError(f"{what} and {other} would be the same file {path}")
        for source, source_path in inputs.items():
            if source_path is None or str(source_path) == "-":
                continue
            if _same(path, Path(source_path)):
                raise UsageError(f"cannot write {what} to {path}: it is {source}")


WHAT = {
    "text": "the report",
    "json": "the JSON record",
    "csv": "the CSV file",
    "markdown": "the Markdown report",
    "html": "the HTML report",
}


def check_outputs(outputs: dict[str, str | None]) -> None:
    """Every output path writable, and at most one on stdout, before any work is done."""
    _one_stdout(**outputs)
    for name, path in outputs.items():
        check_output(path, WHAT[name])


def check_out_dir(path: str | None, what: str = "--out-dir") -> None:
    """Fail before any work when the folder ``path`` (named ``what`` in the message: the
    option or the config key the user gave) cannot take new files."""
    if path is None:
        return
    folder = Path(path)
    if folder.is_symlink() and not folder.exists():
        raise UsageError(f"{what} {path}: a symbolic link to nothing")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what} {path}: not a directory")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{what} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{what} {path}: permission denied")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_file(path: Path, text: str | bytes, *, exclusive: bool = False) -> Path:
    """Write ``text`` (or bytes) to ``path`` whole or not at all (a temporary file renamed
    into place).
    ``exclusive``: never replace an existing file; add -2, -3, ... to the name instead."""
    import tempfile

    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"cannot write {path}: it is not a regular file, left as it is")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # a folder that takes no new file (/proc), a full disk, ...
        raise UsageError(
            f"cannot write {path}: its folder {str(path.parent)!r} takes no new file "
            f"({exc.strerror or exc})"
        ) from None
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(text.encode() if isinstance(text, str) else text)
        os.chmod(temporary, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
        if not exclusive:
            os.replace(temporary, path)
            return path
        final, n = path, 1
        while True:
            try:
                os.link(temporary, final)
                return final
            except FileExistsError:
                n += 1
                final = path.with_name(f"{path.stem}-{n}{path.suffix}")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _safe(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-._" else "_" for c in text)
    return keep.strip("._")[:60] or "target"


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def print_report(record: dict[str, Any]) -> None:
    """The report on stdout: coloured and fitted to the terminal, plain text otherwise."""
    from reachtest.report.terminal import render, render_text
    from reachtest.report.view import build_view

    view = build_view(record)
    if _stdout_is_terminal():
        from rich.console import Console

        console = Console(highlight=False)  # wraps words, unlike the soft-wrapping one
        console.print(render(view, console.width))
    else:
        sys.stdout.write(render_text(view))
        sys.stdout.flush()


def _markdown(record: dict[str, Any]) -> str:
    from reachtest.report.markdown import render_markdown
    from reachtest.report.view import build_view

    return render_markdown(build_view(record))


def _html(record: dict[str, Any]) -> str:
    from reachtest.report.html import render_html
    from reachtest.report.view import build_view

    return render_html(build_view(record))


def _text(record: dict[str, Any]) -> str:
    from reachtest.report.terminal import render_text
    from reachtest.report.view import build_view

    return render_text(build_view(record))


def _json(record: dict[str, Any]) -> str:
    from reachtest.report.record import dumps

    return dumps(record)


def _csv(record: dict[str, Any]) -> str:
    from reachtest.report.csvfile import render_csv

    return render_csv(record)


#: What ``--format`` and the output options can write, by name.
RENDER = {"text": _text, "json": _json, "csv": _csv, "markdown": _markdown, "html": _html}
#: What ``--save`` writes into the output folder, by file suffix.
SAVED = ((".json", _json), (".html", _html), (".md", _markdown))
DEFAULT_OUT_DIR = "reports"


def saved_stem(record: dict[str, Any]) -> str:
    """``<UTC start>_<first target>[+N]``: the name of a saved report, without suffix."""
    stamp = record["started"].replace("-", "").replace(":", "")[:15] + "Z"
    hosts = [t["host"] for t in record["targets"]]
    return f"{stamp}_{_safe(hosts[0]) if hosts else 'none'}" + (
        f"+{len(hosts) - 1}" if len(hosts) > 1 else ""
    )


def save_reports(record: dict[str, Any], out_dir: str) -> list[Path]:
    """JSON, HTML and Markdown of ``record`` in ``out_dir``, under one new name: an
    earlier report of the same second and target is never replaced (-2, -3, ... added)."""
    stem = saved_stem(record)
    (suffix, render), *rest = SAVED
    first = write_file(Path(out_dir) / f"{stem}{suffix}", render(record), exclusive=True)
    return [first] + [write_file(first.with_suffix(s), r(record), exclusive=True) for s, r in rest]


def write_outputs(record: dict[str, Any], outputs: dict[str, str | None]) -> list[Path]:
    """Each format in ``outputs`` (name -> FILE, or ``-`` for stdout) written where asked.
    Returns the files written."""
    written = []
    for name, path in outputs.items():
        if path is None:
            continue
        text = RENDER[name](record)
        if path == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            written.append(write_file(Path(path), text))
    return written


@cli.command("trace", epilog=TRACE_EXIT_HELP)
@click.argument("hosts", nargs=-1)
@click.option(
    "-p",
    "--port",
    "ports",
    multiple=True,
    metavar="PORTS",
    help="Services to trace: tcp/443, udp/53, 443 (tcp), https, dns, tcp/80,443, "
    "tcp/8000-8010. Repeatable.",
)
@click.option("--no-icmp", is_flag=True, help="Do not trace ICMP echo next to the services.")
@click.option(
    "-F",
    "--filename",
    "host_file",
    metavar="FILE",
    help="Read hosts from FILE (one or more per line, # comments; - is stdin).",
)
@click.option(
    "-c", "--report-cycles", "rounds", type=int, default=None, help="Rounds [10; 1 with --fast]."
)
@click.option(
    "-i", "--interval", type=float, default=1.0, show_default=True, help="Seconds per round."
)
@click.option("-f", "--first-ttl", type=int, default=1, show_default=True)
@click.option("-m", "--max-ttl", type=int, default=30, show_default=True)
@click.option(
    "--timeout", type=float, default=2.0, show_default=True, help="Seconds to wait for a reply."
)
@click.option(
    "--rate", type=float, default=5000.0, show_default=True, help="Packets/s cap (0: none)."
)
@click.option("--fast", is_flag=True, help="Every TTL of every flow at once, one round.")
@click.option("-4", "ipv4", is_flag=True, help="IPv4 only.")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 only.")
@click.option("-n", "--no-dns", is_flag=True, help="Do not look up names of the hops.")
@click.option(
    "-r",
    "--report",
    is_flag=True,
    help="Run all rounds, then print the report once (automatic when stdout is no terminal).",
)
@click.option("--json", "json_path", metavar="FILE|-", help="Write the run record (JSON).")
@click.option("--csv", "csv_path", metavar="FILE|-", help="Write hop statistics (CSV).")
@click.option("--markdown", "markdown_path", metavar="FILE|-", help="Write the report as Markdown.")
@click.option(
    "--html", "html_path", metavar="FILE|-", help="Write the report as a self-contained HTML page."
)
@click.option(
    "--pcap",
    "pcap_path",
    metavar="FILE",
    help="Write every probe sent and every reply to it, with kernel timestamps (pcap).",
)
@click.option(
    "--save",
    is_flag=True,
    help="Save <UTC time>_<target>.json, .html and .md in the output folder (never overwrites).",
)
@click.option(
    "--out-dir",
    metavar="DIR",
    help=f"The output folder of --save [{DEFAULT_OUT_DIR}]; giving it implies --save.",
)
@click.option(
    "--payload", default="", metavar="HEX", help="UDP payload for ports without a known protocol."
)
@click.pass_context
def trace_command(
    ctx: click.Context,
    hosts: tuple[str, ...],
    ports: tuple[str, ...],
    no_icmp: bool,
    host_file: str | None,
    rounds: int | None,
    interval: float,
    first_ttl: int,
    max_ttl: int,
    timeout: float,
    rate: float,
    fast: bool,
    ipv4: bool,
    ipv6: bool,
    no_dns: bool,
    report: bool,
    json_path: str | None,
    csv_path: str | None,
    markdown_path: str | None,
    html_path: str | None,
    pcap_path: str | None,
    save: bool,
    out_dir: str | None,
    payload: str,
) -> int:
    """Trace HOSTS with ICMP next to TCP/UDP probes to the given ports, hop by hop: where,
    and how, does each service stop while the host still pings?

    \b
    On a terminal: a live view, redrawn as answers come in (q or Ctrl-C stops
    and prints the report). With --report, or when stdout is not a terminal: the
    report once, after -c rounds. Needs root or CAP_NET_RAW.
    \b
    Example: reachtest trace example.net -p https -p dns -c 5 --report
    """
    from datetime import UTC, datetime

    from reachtest.analysis.analyse import analyse
    from reachtest.engine.tracer import Tracer
    from reachtest.engine.transport import RawTransport
    from reachtest.report.record import RunMeta, build_record
    from reachtest.spec import flow_list, read_host_file, resolve_target

    family = _family(ipv4, ipv6)
    everything = list(hosts) + (read_host_file(host_file) if host_file else [])
    if not everything:
        raise UsageError("no host to trace: give HOST ... or -F FILE")
    flows = flow_list(ports, not no_icmp)
    udp_payload = _payload(payload)
    params = _params(
        first_ttl=first_ttl,
        max_ttl=max_ttl,
        rounds=rounds if rounds is not None else (1 if fast else 10),
        interval_s=interval,
        timeout_s=timeout,
        rate_pps=rate,
        fast=fast,
    )
    outputs = {"json": json_path, "csv": csv_path, "markdown": markdown_path, "html": html_path}
    check_outputs(outputs)
    if pcap_path == "-":
        raise UsageError("--pcap needs a FILE (a pcap is no text for stdout)")
    check_output(pcap_path, "the pcap file")
    check_distinct(
        {**{WHAT[k]: v for k, v in outputs.items()}, "the pcap file": pcap_path},
        {"the host file": host_file},
    )
    if save or out_dir is not None:
        out_dir = out_dir or DEFAULT_OUT_DIR
    check_out_dir(out_dir)
    typed: dict[str, str] = {}
    for host in everything:
        typed.setdefault(resolve_target(host, family), host)
    addresses = list(typed)

    from reachtest.session import TraceSession

    stdout_taken = "-" in outputs.values()
    live = not report and not stdout_taken and _stdout_is_terminal()
    packets: list[tuple[int, bytes]] = []
    capture = pcap_path is not None

    def captured(packet: bytes, ns: int) -> None:
        packets.append((ns, packet))

    # Fails here without the privilege, before any look-up.
    transport = RawTransport(on_sent=captured if capture else None)
    try:
        _least_privilege(transport, addresses)
    except BaseException:
        transport.close()
        raise
    names = None
    if not no_dns:
        from reachtest.names import ReverseNames

        names = ReverseNames()
        for address in addresses:
            names.submit(address)
    try:
        tracer = Tracer(
            transport,
            addresses,
            flows,
            params,
            udp_payload=udp_payload,
            on_reply=captured if capture else None,
        )
        session = TraceSession(tracer, names=names)
        started = datetime.now(UTC)

        def meta(finished: datetime, found: dict[str, str]) -> RunMeta:
            return RunMeta(
                command=("reachtest", *(ctx.obj or {}).get("argv", ())),
                started=started,
                finished=finished,
                hosts=typed,
                names=found,
                family=family,
                dns=not no_dns,
                udp_payload_hex=udp_payload.hex(),
            )

        if live:
            console = _console()

            def draw(s: TraceSession) -> Any:
                return _live_frame(s, console.width, meta(datetime.now(UTC), _names(names)))

            result = session.run_live(console, draw)
        else:
            result = _run_with_progress(session)
    finally:
        transport.close()
    finished = datetime.now(UTC)
    found = names.settle(1.0) if names is not None else {}
    if names is not None:
        names.close()
    record = build_record(
        result, analyse(result.outcomes, result.params, result.budgets), meta(finished, found)
    )
    written = write_outputs(record, outputs)
    if pcap_path is not None:
        from reachtest.report.pcap import render_pcap

        offset = time.time_ns() - time.monotonic_ns()
        written.append(write_file(Path(pcap_path), render_pcap(packets, offset)))
    if out_dir is not None:
        written += save_reports(record, out_dir)
    if not stdout_taken:
        print_report(record)
    for path in written:
        click.echo(f"reachtest: wrote {path}", err=True)
    return exit_code(record)


def _names(names: Any) -> dict[str, str]:
    return {} if names is None else dict(names.names())


def _run_with_progress(session: Any) -> Any:
    """Run a session without the live view; a transient progress line on a terminal."""
    if not sys.stderr.isatty():
        return session.run_quiet()
    console = _console(stderr=True)
    rounds = 1 if session.tracer.params.fast else session.tracer.params.rounds
    with console.status("starting", spinner="dots") as status:

        def tick() -> None:
            status.update(
                f"round {session.tracer.rounds_started}/{rounds} · "
                f"{session.tracer.sent} probes · {session.elapsed_s():.1f} s (Ctrl-C stops)"
            )

        return session.run_quiet(on_tick=tick)


def _live_frame(session: Any, width: int, meta: Any) -> Any:
    """One frame of the live view: the report so far, and the progress line."""
    from rich.text import Text

    from reachtest.analysis.analyse import analyse
    from reachtest.report.record import build_record
    from reachtest.report.terminal import Progress, render
    from reachtest.report.view import build_view

    snapshot = session.snapshot()
    params = snapshot.params
    progress = Progress(
        round=session.tracer.rounds_started,
        rounds=1 if params.fast else params.rounds,
        elapsed_s=session.elapsed_s(),
    )
    if not snapshot.outcomes:
        return Text(
            f"waiting for the first answers · round {progress.round}/{progress.rounds} · "
            f"{progress.elapsed_s:.1f} s · press q to stop",
            style="bold",
        )
    record = build_record(snapshot, analyse(snapshot.outcomes, params, snapshot.budgets), meta)
    return render(build_view(record), width, progress)


@cli.command("show", epilog=TRACE_EXIT_HELP)
@click.argument("record_file", metavar="RUN.json")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(RENDER)),
    default="text",
    show_default=True,
    help="What to print (or write with -o).",
)
@click.option("-o", "--output", metavar="FILE", help="Write the --format output to FILE.")
@click.option("--csv", "csv_path", metavar="FILE|-", help="Also write hop statistics (CSV).")
@click.option(
    "--markdown", "markdown_path", metavar="FILE|-", help="Also write the report as Markdown."
)
@click.option("--html", "html_path", metavar="FILE|-", help="Also write the report as HTML.")
def show_command(
    record_file: str,
    fmt: str,
    output: str | None,
    csv_path: str | None,
    markdown_path: str | None,
    html_path: str | None,
) -> int:
    """Print the report of a saved run record (from `trace --json` or `--save`), without
    the network: as text (the same as the trace printed), or --format html, markdown,
    csv or json.

    The exit code is the one the run gave.
    """
    from reachtest.report.record import load_record

    if output == "-":
        output = None
    extra = {"csv": csv_path, "markdown": markdown_path, "html": html_path}
    check_outputs(extra)
    check_output(output, WHAT[fmt])
    check_distinct(
        {f"-o ({WHAT[fmt]})": output, **{WHAT[k]: v for k, v in extra.items()}},
        {"the run record read": record_file},
    )
    extra_on_stdout = "-" in extra.values()
    if output is None and fmt != "text" and extra_on_stdout:
        raise UsageError(f"--format {fmt} already writes to stdout: give it -o FILE")
    record = load_record(record_file)
    written = write_outputs(record, extra)
    if output is not None:
        written += write_outputs(record, {fmt: output})
    elif fmt != "text":
        write_outputs(record, {fmt: "-"})
    elif not extra_on_stdout:
        print_report(record)
    for path in written:
        click.echo(f"reachtest: wrote {path}", err=True)
    return exit_code(record)


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
        flows = " ".join(f.label for f in t.flows)
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
    where = str(config.path)
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
    with interrupts() as guard, hold(lock_path(config.history, config.path), wait):
        history = None
        if config.history is not None:
            from reachtest.history.store import HistoryStore

            history = HistoryStore(config.history, on_wait=_tell)
        try:
            try:
                with _run_progress() as progress:
                    batch = run_batch(
                        config, history=history, progress=progress, resolve=resolve_target
                    )
            except KeyboardInterrupt:
                raise Interrupted(
                    "interrupted before the run was stored: nothing written"
                ) from None
            # From here on the run's results are written whole: an interrupt waits.
            with guard.held():
                batch = store_batch(batch, config, history, save_reports)
                if config.prometheus is not None:
                    write_file(config.prometheus, metrics.render(batch))
        finally:
            if history is not None:
                history.close()
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
    from reachtest.report.record import load_record

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
            before, after = store.record(ids[-1]), store.record(ids[0])
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
                loaded.append(store.record(int(one)))
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
        click.echo(f"reachtest: wrote {write_file(Path(output), text)}", err=True)
    if fail_on == "regression" and diff.regressions:
        return EXIT_NOT_REACHED
    if fail_on == "change" and diff.changed:
        return EXIT_NOT_REACHED
    return EXIT_OK


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
        raise UsageError(f"no runs {what}in the history" + (f" since {moment}" if moment else ""))
    table, changed = availability(runs), changes(runs)
    if html_path is not None:
        from reachtest.report.timeline import render_history_html

        page = render_history_html(runs, changed, table)
        if html_path == "-":
            sys.stdout.write(page)
            return EXIT_OK
        click.echo(f"reachtest: wrote {write_file(Path(html_path), page)}", err=True)
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
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
def schedule_install(
    config_file: str,
    interval: str,
    systemd: bool,
    mail_to: str | None,
    dest: str | None,
    show: bool,
) -> int:
    """Write a cron.d file or a systemd service + timer that runs the configuration.

    The configuration is checked first. With --systemd, enable it afterwards with:
    systemctl daemon-reload && systemctl enable --now reachtest-NAME.timer
    """
    from reachtest.schedule.config import load_config
    from reachtest.schedule.install import (
        SERVICE_USER,
        cron_file,
        mail_address,
        systemd_units,
        unit_name,
    )

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
    executable = (
        str(Path(sys.argv[0]).resolve())
        if Path(sys.argv[0]).name == "reachtest"
        else (shlex.join([sys.executable, "-m", "reachtest"]))
    )
    name = unit_name(config)
    if systemd:
        files = systemd_units(executable, config, interval, writes)
        folder = Path(dest or "/etc/systemd/system")
    else:
        files = {name: cron_file(executable, config, interval, mail_to)}
        folder = Path(dest or "/etc/cron.d")
    if show:
        for file_name, text in files.items():
            click.echo(f"# {folder / file_name}\n{text}")
        return EXIT_OK
    check_out_dir(str(folder), "--dest")
    for file_name in files:  # replace only what an earlier install of this config wrote
        target = folder / file_name
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise UsageError(f"{target} exists and is not a regular file: left as it is")
        if target.exists() and not _written_by_install(target):
            raise UsageError(f"{target} exists and is not reachtest's: left as it is")
    for file_name, text in files.items():
        click.echo(f"reachtest: wrote {write_file(folder / file_name, text)}", err=True)
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


def _written_by_install(path: Path) -> bool:
    """Does ``path`` start as `schedule install` starts its files?"""
    try:
        with path.open("rb") as stream:
            head = stream.read(64)
    except OSError:
        return False
    return head.startswith((b"# reachtest: ", b"[Unit]\nDescription=reachtest "))


DEMO_LAB = "demo"


def _demo_summary(record: dict[str, Any]) -> list[str]:
    """Per target: the headline, each service's verdict, and the findings, one line each."""
    from reachtest.report.view import build_view

    lines = []
    for t in build_view(record).targets:
        lines.append(f"{t.host} ({t.address}): {t.headline}")
        for v in t.verdicts:
            lines.append(f"  {v.flow:<9} {v.state:<12} {v.detail}")
        lines += [f"  [{f.severity}] {f.summary}" for f in t.findings]
    return lines


@cli.command("demo", epilog=EXIT_CODES_HELP)
@click.option(
    "--out-dir",
    default=DEFAULT_OUT_DIR,
    show_default=True,
    metavar="DIR",
    help="Where the reports go (never overwrites).",
)
@click.option("-c", "--report-cycles", "rounds", type=int, default=5, show_default=True)
@click.option("-i", "--interval", type=float, default=0.5, show_default=True)
def demo_command(out_dir: str, rounds: int, interval: float) -> int:
    """Show what reachtest does, on a lab of its own: bring up the `combo` scenario (one
    router rejects DNS, one drops HTTPS, one forges RSTs for tcp/8080; ping, SSH and
    HTTP pass), trace every service from the lab's client, save the run as JSON, HTML
    and Markdown, print the findings, and tear the lab down (also on Ctrl-C).

    Needs root (network namespaces). Nothing leaves this machine: the lab's client has no
    default route and every address is from 198.18.0.0/15 and 2001:db8::/32.
    """
    import signal
    import subprocess

    from reachtest.lab import manager
    from reachtest.lab.netns import require_lab_privileges
    from reachtest.report.record import parse_record

    check_out_dir(out_dir)
    _params(rounds=rounds, interval_s=interval)
    require_lab_privileges()
    out = _console()
    try:
        plan = manager.up("combo", lab_id=DEMO_LAB, progress=_progress)
        out.print(f"[bold]Lab up[/bold]: {plan.scenario.description}")
        ports = ",".join(str(p) for p in plan.services.tcp_ports)
        command = [
            sys.executable, "-m", "reachtest", "trace", "server", "-4",
            "-p", f"tcp/{ports}", "-p", f"udp/{plan.services.dns_port}",
            "-c", str(rounds), "-i", str(interval), "--json", "-",
        ]  # fmt: skip
        out.print(f"Tracing from the lab's client: reachtest {shlex.join(command[3:])}")
        child = subprocess.Popen(
            manager.exec_argv(DEMO_LAB, "client", command),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with _console(stderr=True).status(
                f"tracing {rounds} rounds of {interval} s", spinner="dots"
            ):
                record_text, errors = child.communicate()
        except KeyboardInterrupt:
            child.wait(timeout=30)  # it got the Ctrl-C too: it stops and writes its record
            raise
        if child.returncode not in (EXIT_OK, 1):
            sys.stderr.write(errors)
            raise LabError(f"the trace in the lab failed (exit {child.returncode})")
        record = parse_record(record_text, "the demo's trace")
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # tear down whatever comes
        try:
            manager.down(DEMO_LAB, progress=_progress)
        finally:
            signal.signal(signal.SIGINT, previous)
    written = save_reports(record, out_dir)
    out.print("Lab removed. What the trace found:", style="bold")
    for line in _demo_summary(record):
        out.print(line, highlight=False, markup=False)
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    html = next(p for p in written if p.suffix == ".html")
    out.print(f"[bold]Open the HTML report:[/bold] {html.resolve().as_uri()}", highlight=False)
    return EXIT_OK


#: Errors of writing to standard output or error that are the user's, not a bug: a full
#: device (> /dev/full), a closed stream (>&-), a reader gone (| head), an I/O error.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EPIPE, errno.EBADF, errno.EIO})


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; the one place that turns errors into one line and an exit code."""
    if sys.stdout is None or sys.stderr is None:  # started with stdout or stderr closed
        if sys.stderr is not None:
            sys.stderr.write("reachtest: error: standard output is closed (>&-)\n")
        return EXIT_USAGE
    with contextlib.suppress(ValueError):  # not in the main thread (an embedding program)
        terminate_as_interrupt()
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        if any("\x00" in arg for arg in args):  # only a program can pass one, not a shell
            raise UsageError("an argument holds a NUL byte")
        # Not cli.main(): it would catch Ctrl-C itself and print an empty line first.
        with cli.make_context("reachtest", args, obj={"argv": tuple(args)}) as ctx:
            result: Any = cli.invoke(ctx)
        sys.stdout.flush()  # a full or closed output fails here, where it is reported
    except ReachtestError as exc:
        _say(str(exc))
        return exc.exit_code
    except click.exceptions.Abort:
        _say("interrupted")
        return 130
    except click.exceptions.Exit as exc:  # --help, --version
        sys.stdout.flush()
        return int(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare `reachtest` (or `lab`)
        if exc.ctx is not None:
            click.echo(exc.ctx.get_help())
        return EXIT_USAGE
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _say(exc.format_message() + hint)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS:
            with contextlib.suppress(OSError):
                _say(f"cannot write the output: {exc.strerror or exc}")
            return EXIT_USAGE
        if os.environ.get("REACHTEST_DEBUG"):
            raise
        _say(f"internal error: {type(exc).__name__}: {exc} (REACHTEST_DEBUG=1 shows a traceback)")
        return EXIT_INTERNAL
    return result if isinstance(result, int) else EXIT_OK
