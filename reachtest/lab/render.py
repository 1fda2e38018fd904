"""Render ``reachtest lab status`` for the terminal with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reachtest.lab.topology import Role

if TYPE_CHECKING:
    from rich.console import Console

    from reachtest.lab.manager import LabStatus


def render_status(status: LabStatus, out: Console) -> None:
    """Print nodes, addresses, rules, services and ground truth of one lab."""
    from rich.table import Table

    if status.plan is None or status.state is None:
        raise ValueError("render_status needs a lab with a recorded state")
    plan, state = status.plan, status.state
    topo, sc = plan.topology, plan.scenario
    health = (
        "[green]up[/green]" if state.complete and not status.missing else "[red]incomplete[/red]"
    )
    out.print(
        f"[bold]Lab {topo.lab_id!r}[/bold] {health} since {state.created_utc}: "
        f"scenario [bold]{sc.name}[/bold], {topo.hops} hops, {topo.targets} extra targets"
    )
    out.print(f"  {sc.description}")
    if status.missing:
        out.print(f"  [red]missing namespaces: {', '.join(status.missing)}[/red]")

    nodes = Table(title="nodes", title_justify="left", box=None, header_style="bold")
    for col in ("node", "hop", "namespace", "interface", "IPv4", "IPv6"):
        nodes.add_column(col)
    for node in topo.nodes:
        for i, end in enumerate(topo.interfaces(node.name)):
            first = i == 0
            nodes.add_row(
                node.name if first else "",
                str(node.hop) if first else "",
                topo.netns(node.name) if first else "",
                end.name,
                str(end.ipv4),
                str(end.ipv6),
            )
    out.print(nodes)
    if topo.targets:
        v4, v6 = topo.extra_targets()
        out.print(f"  server extra targets: {v4[0]} … {v4[-1]}  {v6[0]} … {v6[-1]}")

    out.print("[bold]rules[/bold]")
    if not sc.rules and topo.ecmp_hop is None:
        out.print("  none: routers forward everything and answer every expiring probe")
    for rule in sc.rules:
        out.print(f"  {rule.describe()}")
    if topo.ecmp_hop is not None:
        names = ", ".join(n.name for n in topo.routers_at(topo.ecmp_hop))
        longer = [n.name for n in topo.nodes if n.name.endswith("x")] if topo.ecmp_long else []
        more = f"; {names.split(', ')[-1]}'s branch goes on through {longer[0]}" if longer else ""
        out.print(
            f"  ECMP at hop {topo.ecmp_hop}: {names} (L4 hash on the way to the server){more}"
        )
    lifted = [n.node for n in plan.nodes if ("net.ipv4.icmp_ratelimit", "0") in n.sysctls]
    kept = [n.node for n in plan.nodes if n.role is not Role.CLIENT and n.node not in lifted]
    out.print(
        "  ICMP rate limits lifted on every node" + (f" but {', '.join(kept)}" if kept else "")
    )

    out.print("[bold]services[/bold]")
    for name, pid in state.pids.items():
        alive = status.alive.get(name, False)
        mark = "[green]running[/green]" if alive else "[red]not running[/red]"
        delays = {f"delay-{d.node}": d for d in plan.delays}
        if name == "server":
            what = (
                f"tcp {','.join(map(str, plan.services.tcp_ports))}, udp "
                f"{plan.services.dns_port} (DNS), udp {plan.services.ntp_port} (NTP)"
            )
        elif name in delays:
            d = delays[name]
            what = f"forwards the link into {d.node} {d.ms:g} ms later ({d.netns})"
        elif name.startswith("inject-"):
            what = f"the on-path injector in {name.removeprefix('inject-')}"
        else:
            what = "DNS for lab names on 127.0.0.1:53"
        out.print(f"  {name}: pid {pid} {mark}: {what}")

    truth = Table(
        title="ground truth (what a correct trace concludes)",
        title_justify="left",
        box=None,
        header_style="bold",
    )
    for col in ("flow", "state", "reason", "by hop", "last hop", "answer at TTL", "reached"):
        truth.add_column(col)
    for flow in sc.truth.flows:
        truth.add_row(
            flow.flow.label,
            str(flow.state) if flow.state else "-",
            str(flow.reason),
            "-" if flow.reason_hop is None else str(flow.reason_hop),
            str(flow.last_hop),
            "-" if flow.answer_ttl is None else str(flow.answer_ttl),
            "yes" if flow.reached else "no",
        )
    out.print(truth)
    if sc.extra_rules:
        out.print(
            f"  [yellow]the ground truth is the scenario's alone: it does not cover the added "
            f"rules {', '.join(sc.extra_rules)}[/yellow]"
        )
    notes = []
    t = sc.truth
    if t.silent_hops:
        notes.append(f"silent hops (no time-exceeded for any flow): {t.silent_hops}")
    if t.ratelimited_hops:
        notes.append(f"rate-limited hops (answers lost in bursts): {t.ratelimited_hops}")
    if t.lossy_from_hop is not None:
        notes.append(f"forwarding loss of {t.loss_pct}% from hop {t.lossy_from_hop} on")
    if t.ecmp_hop is not None:
        notes.append(
            f"two responders at hop {t.ecmp_hop} across flows, and at hop {t.ecmp_hop + 1}, "
            "which answers from the interface (branch) a probe came in on"
        )
    for request in t.requests:
        what = "TLS ClientHello with SNI" if request.kind == "sni" else "HTTP request with Host"
        where = "in-path" if request.in_path else "on-path"
        late = "" if request.in_path else " (the server answers it too, after the reset)"
        notes.append(
            f"after the handshake, a {what} {request.name} (tcp/{request.port}) is "
            f"{request.reason} {where} at hop {request.hop}{late}: probes with TTL "
            f"{request.hop} or less expire before it, from TTL {(request.hop or 0) + 1} on "
            f"they meet it; with {request.control} the server answers"
        )
    for note in notes:
        out.print(f"  {note}")
