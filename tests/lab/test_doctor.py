"""`reachtest doctor` (issue 29) in namespaces of its own (``unshare --net``: it only
looks, and nothing could leave anyway): as root, as uid 65534 with ping sockets closed
and opened, without IPv6 and with it. What it says about trace agrees with what trace
does as the same user (on the namespace's loopback)."""

from __future__ import annotations

import subprocess

import pytest

from tests.lab.conftest import reachtest_cmd

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--bounding-set=-all",
          "--inh-caps=-all"]  # fmt: skip


def isolated(setup: str, *argv: str, nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """``argv`` in a new network namespace after the shell commands ``setup`` (as root)."""
    command = " ".join(f"'{a}'" for a in [*(NOBODY if nobody else []), *argv])
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", f"ip link set lo up; {setup}\nexec {command}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def doctor(lab_ready: None) -> list[str]:
    return [*reachtest_cmd(), "doctor", "--no-tools"]


def test_as_root_raw_sockets_and_the_lab(doctor: list[str]) -> None:
    done = isolated("", *doctor)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  ok  raw sockets: allowed" in done.stdout
    assert "  ok  the lab" in done.stdout
    assert done.stdout.rstrip().endswith(
        "trace can run with raw sockets (every check of the trace)"
    )


def test_an_ordinary_user_without_ping_sockets_cannot_trace_and_is_told_why(
    doctor: list[str],
) -> None:
    closed = 'sysctl -qw net.ipv4.ping_group_range="1 0"'
    done = isolated(closed, *doctor, nobody=True)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "  --  raw sockets: refused" in done.stdout and "never setcap" in done.stdout
    assert "  --  ping sockets (ICMPv4 echo without root): refused to gid 65534" in done.stdout
    assert 'sysctl -w net.ipv4.ping_group_range="0 2147483647"' in done.stdout
    assert "  --  the lab (reachtest lab, demo; the tests): not root" in done.stdout
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        "reachtest: error: trace cannot run as this user as it should: no raw sockets and no "
        "ping sockets, so no icmp flow"
    )
    # What trace itself does as that user: the icmp flow refused (exit 3 when it is all
    # there is to trace), the services traced without it.
    trace = isolated(closed, *reachtest_cmd(), "trace", "127.0.0.1", "-c", "1", "--report",
                     nobody=True)  # fmt: skip
    assert trace.returncode == 3, trace.stdout + trace.stderr
    assert "ping_group_range" in trace.stderr
    services = isolated(closed, *reachtest_cmd(), "trace", "127.0.0.1", "-p", "tcp/9", "-c",
                        "1", "--report", nobody=True)  # fmt: skip
    assert services.returncode == 1, services.stdout + services.stderr  # tcp/9 is closed
    assert "without icmp" in services.stderr


def test_an_ordinary_user_with_ping_sockets_traces_on_ordinary_sockets(doctor: list[str]) -> None:
    opened = 'sysctl -qw net.ipv4.ping_group_range="0 2147483647"'
    done = isolated(opened, *doctor, nobody=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  ok  ping sockets (ICMPv4 echo without root): allowed" in done.stdout
    assert "trace can run with ordinary sockets (no root)" in done.stdout
    trace = isolated(opened, *reachtest_cmd(), "trace", "127.0.0.1", "-c", "1", "--report",
                     nobody=True)  # fmt: skip
    assert trace.returncode == 0, trace.stdout + trace.stderr


def test_without_ipv6_and_with_it(doctor: list[str]) -> None:
    off = isolated("sysctl -qw net.ipv6.conf.all.disable_ipv6=1", *doctor)
    assert "  --  IPv6: disabled (net.ipv6.conf.all.disable_ipv6 = 1)" in off.stdout, off.stdout
    assert "IPv6 targets (-6, AAAA names) cannot be traced from here" in off.stdout
    assert off.returncode == 0  # trace still runs (IPv4)
    address = (
        "ip link add v0 type veth peer name v1; ip link set v0 up; ip link set v1 up; "
        "ip addr add 2001:db8::1/64 dev v0 nodad"
    )
    on = isolated(address, *doctor)
    assert "  ok  IPv6: enabled, 1 global address" in on.stdout, on.stdout
