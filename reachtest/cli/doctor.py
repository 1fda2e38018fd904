"""`reachtest doctor`: what this machine lets reachtest do (``reachtest.doctor``), said
check by check with what each missing piece costs and its recipe; exit 3 when trace
cannot run."""

from __future__ import annotations

import os
import platform

import click

from reachtest.cli.base import EXIT_CODES_HELP, cli
from reachtest.errors import PrivilegeError

GROUPS = (
    ("trace", ("trace", "trace+")),
    ("the lab", ("lab",)),
    ("the tests' programs", ("tests",)),
)


@cli.command("doctor", epilog=EXIT_CODES_HELP)
@click.option("--no-tools", is_flag=True, help="Leave out the programs the tests use.")
def doctor_command(no_tools: bool) -> None:
    """What this machine lets reachtest do: raw or ping sockets, IPv6, DNS, the lab's
    programs, the tests' peers; what each missing piece costs and how to get it. It only
    looks (opens and closes sockets, reads /proc): nothing is sent. Exit 0 when trace
    can run, 3 when not."""
    from reachtest.doctor import examine, trace_can_run

    checks = examine(tools=not no_tools)
    lines = [
        f"reachtest doctor: uid {os.getuid()}, gid {os.getgid()}, "
        f"{platform.system()} {platform.release()}"
    ]
    for title, kinds in GROUPS:
        shown = [c for c in checks if c.needed_for in kinds]
        if not shown:
            continue
        lines.append(f"{title}:")
        for c in shown:
            lines.append(f"  {'ok' if c.ok else '--'}  {c.name}: {c.found}")
            if not c.ok:
                lines.append(f"        without it: {c.cost}")
                lines.append(f"        to get it: {c.fix}")
    can, how = trace_can_run(checks)
    lines.append(f"trace can run {how}" if can else f"trace cannot run {how}")
    click.echo("\n".join(lines))
    if not can:
        raise PrivilegeError(f"trace cannot run {how}")
