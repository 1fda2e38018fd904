"""`reachtest lab`: bring labs up and down, list scenarios, show status, run commands inside."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import click
import click.shell_completion

from reachtest.cli.base import EXIT_CODES_HELP, _console, _progress, cli
from reachtest.errors import (
    EXIT_ENVIRONMENT,
    ReachtestError,
    UsageError,
)

if TYPE_CHECKING:
    pass


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


def _scenario_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Shell completion of ``lab up SCENARIO``: the built-in scenarios' names."""
    from reachtest.lab.scenarios import SCENARIOS

    return [
        click.shell_completion.CompletionItem(name)
        for name in SCENARIOS
        if name.startswith(incomplete)
    ]


@lab.command("up", epilog=EXIT_CODES_HELP)
@click.argument("scenario", shell_complete=_scenario_names)
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
    # A longer branch's extra router is drawn inside its branch: r3a|r3b→r3bx.
    from reachtest.lab.topology import LONG_LINK_BASE

    extra = {
        link.right.node
        for link in topo.links
        if topo.ecmp_long and link.number == LONG_LINK_BASE + (topo.ecmp_hop or 0)
    }
    routers = " → ".join(
        "|".join(
            n.name + "".join(f"→{x}" for x in sorted(extra) if x.startswith(n.name))
            for n in topo.routers_at(h)
            if n.name not in extra
        )
        for h in range(1, topo.hops + 1)
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
