"""Bring labs up and down, remember them in a state file, and report what is running."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from reachtest.errors import LabError, UsageError
from reachtest.lab import netns
from reachtest.lab.plan import DELAY_SYSCTLS, LabPlan, build_plan
from reachtest.lab.scenarios import CLOSED_PORT, Services, scenario, with_extra_rules
from reachtest.lab.topology import NETNS_PREFIX, check_lab_id

STATE_ROOT = Path("/run/reachtest/labs")
DEFAULT_LAB = "lab"
SERVICES_MODULE = "reachtest.lab.services"
READY_TIMEOUT_S = 15.0

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class LabState:
    """What ``lab up`` recorded: enough to rebuild the plan, plus the PIDs it started."""

    lab_id: str
    scenario: str
    hops: int
    targets: int
    tcp_ports: tuple[int, ...]
    rules: tuple[str, ...]
    created_utc: str
    pids: dict[str, int]
    complete: bool

    def plan(self) -> LabPlan:
        services = Services(tcp_ports=self.tcp_ports)
        return build_plan(
            self.lab_id,
            with_extra_rules(scenario(self.scenario, self.hops, services), self.rules),
            targets=self.targets,
            services=services,
        )


def state_dir(lab_id: str) -> Path:
    return STATE_ROOT / lab_id


def _write_state(state: LabState) -> None:
    folder = state_dir(state.lab_id)
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "lab_id": state.lab_id,
        "scenario": state.scenario,
        "hops": state.hops,
        "targets": state.targets,
        "tcp_ports": list(state.tcp_ports),
        "rules": list(state.rules),
        "created_utc": state.created_utc,
        "pids": state.pids,
        "complete": state.complete,
    }
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(folder / "state.json")


def read_state(lab_id: str) -> LabState | None:
    """The recorded state of ``lab_id``, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((state_dir(lab_id) / "state.json").read_text())
        return LabState(
            lab_id=data["lab_id"],
            scenario=data["scenario"],
            hops=int(data["hops"]),
            targets=int(data["targets"]),
            tcp_ports=tuple(int(p) for p in data["tcp_ports"]),
            rules=tuple(str(r) for r in data["rules"]),
            created_utc=data["created_utc"],
            pids={k: int(v) for k, v in data["pids"].items()},
            complete=bool(data["complete"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lab_ids() -> list[str]:
    """Labs that have a state file or at least one namespace on this machine."""
    ids: set[str] = set()
    if STATE_ROOT.is_dir():
        ids.update(p.name for p in STATE_ROOT.iterdir() if p.is_dir())
    for name in netns.list_netns():
        if name.startswith(NETNS_PREFIX):
            ids.add(name[len(NETNS_PREFIX) :].split("-", 1)[0])
    return sorted(ids)


def resolve_lab(lab_id: str | None) -> str:
    """The lab a command means: the one named, else the only one up, else the default."""
    if lab_id is not None:
        return check_lab_id(lab_id)
    ids = lab_ids()
    if DEFAULT_LAB in ids or not ids:
        return DEFAULT_LAB
    if len(ids) == 1:
        return ids[0]
    raise UsageError(f"several labs are up ({', '.join(ids)}): say which with --name")


def _namespaces_of(lab_id: str) -> list[str]:
    prefix = f"{NETNS_PREFIX}{lab_id}-"
    return [n for n in netns.list_netns() if n.startswith(prefix)]


def _is_our_service(pid: int, lab_id: str) -> bool:
    """True when ``pid`` is a lab services process of ``lab_id`` (guards against PID reuse)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [a.decode(errors="replace") for a in argv]
    return SERVICES_MODULE in words and "--lab" in words and lab_id in words


def _gone(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # our child when up and down share a process
        return done != 0
    except ChildProcessError:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")  # ended, not yet reaped


def _stop(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL whatever has not ended within two seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    waiting = list(pids)
    deadline = time.monotonic() + 2.0
    while waiting and time.monotonic() < deadline:
        waiting = [pid for pid in waiting if not _gone(pid)]
        time.sleep(0.005)
    for pid in waiting:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def down(lab_id: str, progress: Progress = _quiet) -> list[str]:
    """Remove every trace of ``lab_id``: its processes, namespaces, files. Works after a
    partial or failed ``up``. Returns what it removed, for the user."""
    check_lab_id(lab_id)
    removed: list[str] = []
    state = read_state(lab_id)
    pids = set(state.pids.values()) if state else set()
    spaces = _namespaces_of(lab_id)
    for space in spaces:
        with contextlib.suppress(LabError):
            pids.update(netns.netns_pids(space))
    ours = [pid for pid in sorted(pids) if _is_our_service(pid, lab_id)]
    _stop(ours)
    removed += [f"process {pid}" for pid in ours]
    for pid in sorted(pids - set(ours)):
        if Path(f"/proc/{pid}").exists():
            progress(f"leaving process {pid} alone: it is not the lab's (it runs inside the lab)")
    for space in spaces:
        netns.delete_netns(space)
        removed.append(f"namespace {space}")
        shutil.rmtree(netns.ETC_NETNS_DIR / space, ignore_errors=True)
    if state_dir(lab_id).exists():
        shutil.rmtree(state_dir(lab_id), ignore_errors=True)
        removed.append(f"state {state_dir(lab_id)}")
    return removed


def _etc_files(plan: LabPlan) -> None:
    """resolv.conf and hosts for every lab namespace: names resolve inside the lab only."""
    topo = plan.topology
    names = plan.names()
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
    for name, addresses in names.items():
        for version in (4, 6):
            first = [a for a in addresses if ipaddress.ip_address(a).version == version][:1]
            hosts += [f"{a} {name} {plan.fqdn(name)}" for a in first]
    resolv = (
        f"# reachtest lab {topo.lab_id}: the lab's own DNS, never the machine's\n"
        f"nameserver 127.0.0.1\nsearch {topo.lab_id}.reachtest.test\n"
        "options timeout:1 attempts:1\n"
    )
    for node in topo.nodes:
        folder = netns.ETC_NETNS_DIR / topo.netns(node.name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "resolv.conf").write_text(resolv)
        (folder / "hosts").write_text("\n".join(hosts) + "\n")
    zone = {plan.fqdn(name): list(addresses) for name, addresses in names.items()}
    # The names of the application scenarios (a test name and its control) are the
    # server's: its DNS answers them as a real resolver would.
    from reachtest.lab.scenarios import CONTROL_NAME, TEST_NAME

    for name in (TEST_NAME, CONTROL_NAME):
        zone[name + "."] = list(names["server"])
    zone_file = {"names": zone, "txt": plan.as_zone()}
    (state_dir(topo.lab_id) / "zone.json").write_text(json.dumps(zone_file))


def _certificate(plan: LabPlan, folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the lab's server (its names and addresses), made
    with openssl in the lab's state folder: the server speaks real TLS on 443."""
    cert, key = folder / "server.crt", folder / "server.key"
    names = [plan.fqdn("server"), "server"]
    addresses = plan.names()["server"]
    alt = ",".join([*(f"DNS:{n}" for n in names), *(f"IP:{a}" for a in addresses)])
    openssl = netns.require_program("openssl", "openssl")
    done = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "30", "-subj", "/CN=server", "-addext", f"subjectAltName={alt}",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()
        raise LabError(f"openssl could not make the server's certificate: {tail[-1:] or '?'}")
    return cert, key


def _start_services(plan: LabPlan, state: LabState) -> None:
    topo = plan.topology
    folder = state_dir(topo.lab_id)
    zone = str(folder / "zone.json")
    ports = ",".join(str(p) for p in plan.services.tcp_ports)
    wanted = {
        "server": [
            "--tcp",
            ports,
            "--dns",
            str(plan.services.dns_port),
            "--ntp",
            str(plan.services.ntp_port),
            "--zone",
            zone,
        ],
        "client": ["--bind", "127.0.0.1", "--dns", "53", "--zone", zone],
    }
    from reachtest.lab.services import TLS_PORTS

    if any(p in TLS_PORTS for p in plan.services.tcp_ports):
        cert, key = _certificate(plan, folder)
        wanted["server"] += ["--cert", str(cert), "--key", str(key)]
    if plan.scenario.slow_tls_ms:
        wanted["server"] += ["--slow-tls-ms", f"{plan.scenario.slow_tls_ms:g}"]
    if plan.scenario.slow_http_ms:
        wanted["server"] += ["--slow-http-ms", f"{plan.scenario.slow_http_ms:g}"]
    if plan.scenario.slow_dns_ms:
        wanted["server"] += ["--slow-dns-ms", f"{plan.scenario.slow_dns_ms:g}"]
    if plan.scenario.udp_quirks:
        from reachtest.lab.scenarios import BANNER_PORT, ECHO_PORT

        wanted["server"] += ["--ntp-no-origin", "--echo", str(ECHO_PORT)]
        wanted["server"] += ["--banner", str(BANNER_PORT)]
    spaces = {node: topo.netns(node) for node in wanted}
    from reachtest.lab.scenarios import AppInjector

    for rule in plan.scenario.rules:
        if isinstance(rule, AppInjector):
            send = topo.facing_client(rule.node)
            peer = next(p for own, p in topo.peers(rule.node) if own.name == send.name)
            hop = int(rule.node[1:])
            watch = "to-server" if hop == topo.hops else f"to-r{hop + 1}"
            name = f"inject-{rule.node}"
            spaces[name] = topo.netns(rule.node)
            wanted[name] = [
                "--inject",
                f"{watch},{send.name},{send.mac},{peer.mac},{rule.port},"
                f"{rule.forges},{rule.pattern}",
            ]
    for delay in plan.delays:
        name = f"delay-{delay.node}"
        spaces[name] = delay.netns
        wanted[name] = [
            "--delay",
            f"{delay.client_side},{delay.server_side},{delay.ms:g},{delay.jitter_ms:g}",
        ]
    ip = netns.require_program("ip", "iproute2")
    started: dict[str, subprocess.Popen[bytes]] = {}
    for node, args in wanted.items():
        ready = folder / f"{node}.ready"
        ready.unlink(missing_ok=True)
        log = (folder / f"{node}.log").open("wb")
        argv = [
            ip,
            "netns",
            "exec",
            spaces[node],
            sys.executable,
            "-m",
            SERVICES_MODULE,
            "--lab",
            topo.lab_id,
            "--ready",
            str(ready),
            *args,
        ]
        started[node] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        state.pids[node] = started[node].pid
        _write_state(state)
    deadline = time.monotonic() + READY_TIMEOUT_S
    for node, proc in started.items():
        ready = folder / f"{node}.ready"
        while not ready.exists():
            if proc.poll() is not None:
                tail = (folder / f"{node}.log").read_text(errors="replace").strip().splitlines()
                raise LabError(
                    f"the {node}'s services did not start: {tail[-1] if tail else 'no output'}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"the {node}'s services did not start within {READY_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.01)


def up(
    scenario_name: str,
    *,
    lab_id: str = DEFAULT_LAB,
    hops: int = 5,
    targets: int = 0,
    tcp_ports: tuple[int, ...] | None = None,
    rules: tuple[str, ...] = (),
    progress: Progress = _quiet,
) -> LabPlan:
    """Bring up ``scenario_name`` (plus the ``--rule`` specs in ``rules``) as lab
    ``lab_id``, tearing down any lab of that name first. On any failure, or Ctrl-C,
    everything made so far is removed again."""
    services = Services(tcp_ports=tcp_ports) if tcp_ports is not None else Services()
    _check_ports(services)
    chosen = with_extra_rules(scenario(scenario_name, hops, services), rules)
    plan = build_plan(lab_id, chosen, targets=targets, services=services)
    netns.require_lab_privileges()
    netns.require_program("ip", "iproute2")
    if any(node.nft for node in plan.nodes):
        netns.require_program("nft", "nftables")
    if any(node.iptables for node in plan.nodes):
        netns.require_program("iptables", "iptables")

    down(lab_id, progress)
    state = LabState(
        lab_id=lab_id,
        scenario=scenario_name,
        hops=hops,
        targets=targets,
        tcp_ports=services.tcp_ports,
        rules=rules,
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        pids={},
        complete=False,
    )
    try:
        _write_state(state)
        _build(plan, progress)
        progress("starting services")
        _start_services(plan, state)
        _write_state(replace(state, complete=True))
    except BaseException:
        with contextlib.suppress(Exception):
            down(lab_id)
        raise
    return plan


def _check_ports(services: Services) -> None:
    if not services.tcp_ports:
        raise UsageError("give at least one TCP port for the server to listen on")
    for port in services.tcp_ports:
        if not 1 <= port <= 65535:
            raise UsageError(f"TCP port {port} is out of range (1-65535)")
        if port == CLOSED_PORT:
            raise UsageError(f"port {CLOSED_PORT} is the lab's closed port; choose another")


def _build(plan: LabPlan, progress: Progress) -> None:
    progress(f"creating {len(plan.namespaces)} namespaces")
    netns.add_netns(list(plan.namespaces))
    for node in plan.nodes:
        netns.write_sysctls(node.netns, node.sysctls)
    for delay in plan.delays:
        netns.write_sysctls(delay.netns, DELAY_SYSCTLS)
    progress(f"linking them ({len(plan.links)} veth pairs)")
    netns.ip_batch(plan.links, what="creating links")
    for node in plan.nodes:
        netns.ip_batch(node.addresses, netns=node.netns, what=f"addresses of {node.node}")
    for delay in plan.delays:
        netns.ip_batch(delay.addresses, netns=delay.netns, what=f"the link into {delay.node}")
    progress("routing")
    for node in plan.nodes:
        netns.ip_batch(node.routes, netns=node.netns, what=f"routes of {node.node}")
    for node in plan.nodes:
        if node.nft:
            progress(f"rules on {node.node}")
            netns.nft_apply(node.netns, node.nft)
        for args in node.iptables:
            netns.iptables_apply(node.netns, args)
    _etc_files(plan)


@dataclass(frozen=True, slots=True, kw_only=True)
class LabStatus:
    """A lab as it is now: the recorded plan and what of it is alive."""

    lab_id: str
    state: LabState | None
    plan: LabPlan | None
    namespaces: tuple[str, ...]
    missing: tuple[str, ...]
    alive: dict[str, bool]


def status(lab_id: str) -> LabStatus:
    """What is up of ``lab_id`` (no privileges needed to read it)."""
    check_lab_id(lab_id)
    state = read_state(lab_id)
    spaces = tuple(_namespaces_of(lab_id))
    plan = state.plan() if state else None
    expected = set(plan.namespaces) if plan else set()
    alive = {
        node: _is_our_service(pid, lab_id) for node, pid in (state.pids if state else {}).items()
    }
    return LabStatus(
        lab_id=lab_id,
        state=state,
        plan=plan,
        namespaces=spaces,
        missing=tuple(sorted(expected - set(spaces))),
        alive=alive,
    )


def exec_argv(lab_id: str, node: str, command: list[str]) -> list[str]:
    """The argv that runs ``command`` inside ``node`` of the lab; LabError when it is not up."""
    state = read_state(lab_id)
    if state is None or not state.complete:
        raise LabError(f"lab {lab_id!r} is not up (start it: reachtest lab up SCENARIO)")
    plan = state.plan()
    names = [n.node for n in plan.nodes]
    if node not in names:
        raise UsageError(f"lab {lab_id!r} has no node {node!r}; it has {', '.join(names)}")
    space = plan.topology.netns(node)
    if not netns.exists(space):
        raise LabError(f"namespace {space} is gone: bring the lab up again")
    if not command:
        raise UsageError("give a command to run, after --")
    return [netns.require_program("ip", "iproute2"), "netns", "exec", space, *command]
