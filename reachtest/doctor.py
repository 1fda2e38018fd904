"""`reachtest doctor`: what this machine lets reachtest do, and what each missing piece costs.

Every check only looks: it opens a socket and closes it, reads ``/proc`` and
``/etc/resolv.conf``, looks programs up on ``PATH``. Nothing is sent, no name is
resolved. Each check says what it found, what is lost without it and the recipe to get
it (never ``setcap`` on a shared interpreter: every script it runs would get the
capability).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Capability bits (linux/capability.h).
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
PROC = Path("/proc")
RESOLV_CONF = Path("/etc/resolv.conf")
#: The first kernel whose error queue reports a time-exceeded for a connecting TCP socket.
TCP_RECVERR_KERNEL = (5, 8)


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One thing reachtest may use: found or not, and what that means."""

    name: str
    ok: bool
    found: str  # what was found, in words
    needed_for: str  # "trace" (it cannot run without), "trace+" (it runs, less well), ...
    cost: str = ""  # what is lost without it (said when not ok)
    fix: str = ""  # how to get it (said when not ok)


def _capabilities() -> int:
    """The effective capability set of this process (0 when it cannot be read)."""
    with contextlib.suppress(OSError, ValueError):
        for line in (PROC / "self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _opens(family: int, kind: int, proto: int) -> str | None:
    """None when such a socket can be opened (it is closed at once: nothing is sent),
    else why not."""
    try:
        socket.socket(family, kind, proto).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _sysctl(name: str) -> str | None:
    with contextlib.suppress(OSError):
        return (PROC / "sys" / name.replace(".", "/")).read_text().strip()
    return None


def raw_sockets() -> Check:
    why = _opens(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    return Check(
        name="raw sockets",
        ok=why is None,
        found="allowed (root or CAP_NET_RAW)" if why is None else f"refused ({why})",
        needed_for="trace+",
        cost="traces run on ordinary sockets: no reply TTL for TCP answers (a forged RST is "
        "judged by its hop only), no MPLS labels, no header-rewrite checks, a TCP probe "
        "may leave from another source port while its flow's last one still connects",
        fix="run reachtest with sudo, or as a service with AmbientCapabilities=CAP_NET_RAW "
        "(systemd) on its own virtualenv; never setcap a shared python",
    )


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def ping_sockets(v6: bool = False, *, raw: bool = False) -> Check:
    family, proto = (socket.AF_INET6, 58) if v6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    why = _opens(family, socket.SOCK_DGRAM, proto)
    groups = _sysctl("net.ipv4.ping_group_range") or "?"
    found = (
        f"allowed (net.ipv4.ping_group_range = {' '.join(groups.split())}, gid {os.getgid()})"
        if why is None
        else f"refused to gid {os.getgid()} (net.ipv4.ping_group_range = "
        f"{' '.join(groups.split())}: {why})"
    )
    return Check(
        name=f"ping sockets (ICMPv{6 if v6 else 4} echo without root)",
        ok=why is None,
        found=found,
        needed_for="trace" if not v6 else "trace+",
        cost=("nothing while raw sockets are allowed; " if raw else "")
        + "without root, the icmp flow (the host's reachability), --mtu and --mda for icmp "
        + ("cannot run to IPv6 targets" if v6 else "cannot run"),
        fix='sudo sysctl -w net.ipv4.ping_group_range="0 2147483647" (keep it in '
        "/etc/sysctl.d/), or run with sudo",
    )


def tcp_errors() -> Check:
    release = platform.release()
    try:
        version = tuple(int(p) for p in release.split("-")[0].split(".")[:2])
    except ValueError:
        version = (0, 0)
    ok = version >= TCP_RECVERR_KERNEL
    return Check(
        name="time-exceeded for TCP connects (ordinary sockets)",
        ok=ok,
        found=f"kernel {release}",
        needed_for="trace+",
        cost="without root, TCP flows show no hops (Linux reports a router's time-exceeded "
        "to a connecting socket from 5.8 on)",
        fix="a kernel 5.8 or later, or run with sudo",
    )


def ipv6() -> Check:
    disabled = _sysctl("net.ipv6.conf.all.disable_ipv6")
    addresses = []
    with contextlib.suppress(OSError):
        for line in (PROC / "net/if_inet6").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[3] == "00":  # global scope (not link-local)
                addresses.append(fields[0])
    if disabled is None or _opens(socket.AF_INET6, socket.SOCK_DGRAM, 0) is not None:
        ok, found = False, "no IPv6 in this kernel or namespace"
    elif disabled == "1":
        ok, found = False, "disabled (net.ipv6.conf.all.disable_ipv6 = 1)"
    elif not addresses:
        ok, found = False, "enabled, but no global address (link-local and loopback only)"
    else:
        many = _plural(len(addresses), "global address", "global addresses")
        ok, found = True, f"enabled, {many}"
    return Check(
        name="IPv6",
        ok=ok,
        found=found,
        needed_for="trace+",
        cost="IPv6 targets (-6, AAAA names) cannot be traced from here",
        fix="enable IPv6 (sysctl net.ipv6.conf.all.disable_ipv6=0) and give the host an "
        "IPv6 address and route",
    )


def dns() -> Check:
    servers = []
    with contextlib.suppress(OSError):
        for line in RESOLV_CONF.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                servers.append(parts[1])
    return Check(
        name="DNS resolver (names, reverse DNS, -z)",
        ok=bool(servers),
        found=f"{_plural(len(servers), 'nameserver', 'nameservers')} in {RESOLV_CONF}"
        if servers
        else f"no nameserver in {RESOLV_CONF}",
        needed_for="trace+",
        cost="targets must be given as addresses; hops stay unnamed (-n) and -z needs --as-file",
        fix=f"a nameserver line in {RESOLV_CONF}",
    )


def _programs(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def lab() -> Check:
    needed = (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
    root = _capabilities() & needed == needed
    missing = _programs(("ip", "nft", "iptables", "ping"))
    problems = ([] if root else ["not root"]) + [f"no {m}" for m in missing]
    return Check(
        name="the lab (reachtest lab, demo; the tests)",
        ok=not problems,
        found="root, ip, nft, iptables and ping present" if not problems else ", ".join(problems),
        needed_for="lab",
        cost="reachtest lab and reachtest demo cannot run, nor the lab tests",
        fix="run them with sudo; apt install iproute2 nftables iptables iputils-ping "
        "(bash scripts/setup installs all)",
    )


#: Programs the tests use beside the lab, and what each one's absence costs.
TEST_PROGRAMS = (
    (("chromium", "chromium-browser"), "the HTML report's test in a real browser"),
    (("promtool",), "the exporter's and metrics' promtool checks"),
    (("prometheus",), "the exporter's test with a real Prometheus"),
    (("mtr",), "the differential tests against mtr"),
    (("traceroute",), "the differential tests against traceroute"),
    (("nmap",), "the differential tests against nmap"),
    (("tracepath",), "bench_mtu's comparison with tracepath"),
    (("scamper",), "bench_mtu's and bench_mda's comparison with scamper"),
    (("tshark",), "the pcap test"),
)


def test_tools() -> list[Check]:
    out = []
    for names, use in TEST_PROGRAMS:
        found = next((shutil.which(n) for n in names if shutil.which(n)), None)
        out.append(
            Check(
                name=names[0],
                ok=found is not None,
                found=found or "not installed",
                needed_for="tests",
                cost=f"{use} cannot run (skipped; in CI, a failure)",
                fix="bash scripts/setup (installs the Debian packages)",
            )
        )
    return out


CHECKS: tuple[Callable[[], Check], ...] = (tcp_errors, ipv6, dns, lab)


def examine(*, tools: bool = True) -> list[Check]:
    """Every check, in the order shown (the tests' programs last, with ``tools``)."""
    raw = raw_sockets()
    found = [raw, ping_sockets(raw=raw.ok), ping_sockets(v6=True, raw=raw.ok)]
    found += [check() for check in CHECKS]
    return found + (test_tools() if tools else [])


def trace_can_run(checks: list[Check]) -> tuple[bool, str]:
    """Can ``reachtest trace`` run here, and how (in words)?"""
    by = {c.name: c for c in checks}
    if by["raw sockets"].ok:
        return True, "with raw sockets (every check of the trace)"
    if by["ping sockets (ICMPv4 echo without root)"].ok:
        return True, "with ordinary sockets (no root): see what that costs above"
    return False, (
        "as this user as it should: no raw sockets and no ping sockets, so no icmp flow "
        "(the host's reachability, which the services are contrasted with); it traces the "
        "services alone"
    )
