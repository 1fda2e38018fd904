"""Thin wrappers over the kernel and iproute2: namespaces, batches of ip commands, sysctls."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from reachtest.errors import EnvironmentProblem, LabError, PrivilegeError

NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")
CLONE_NEWNET = 0x40000000
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21


def effective_capabilities() -> int:
    """The effective capability set of this process, as a bit mask."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_lab_privileges() -> None:
    """Raise PrivilegeError unless this process may create and enter namespaces."""
    needed = (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)
    if effective_capabilities() & needed != needed:
        raise PrivilegeError(
            "the lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network "
            "namespaces; run it with sudo"
        )


def require_program(name: str, package: str) -> str:
    """The path of ``name``; EnvironmentProblem naming the Debian package when missing."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path:
        return path
    raise EnvironmentProblem(f"{name} is not installed (Debian/Ubuntu: apt-get install {package})")


def run(argv: Sequence[str], *, stdin: str | None = None, what: str = "") -> str:
    """Run a command, return its stdout; LabError with the first line of stderr on failure."""
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{what or argv[0]}: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}"
        first = detail.splitlines()[0]
        raise LabError(f"{what or ' '.join(argv[:4])}: {first}")
    return done.stdout


def ip_batch(lines: Sequence[str], *, netns: str | None = None, what: str = "") -> None:
    """Run ``ip -batch`` on ``lines``, inside ``netns`` when given; ``-force`` keeps going
    past an error so that every line is tried, and the first error is reported."""
    if not lines:
        return
    ip = require_program("ip", "iproute2")
    argv = [ip] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, stdin="\n".join(lines) + "\n", what=what or f"ip in {netns or 'root namespace'}")


def list_netns() -> list[str]:
    """Names of the named network namespaces on this machine."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns: {os.strerror(err)}")


@contextmanager
def entered(netns: str) -> Iterator[None]:
    """Move the calling thread into ``netns`` for the block; sockets made there stay there."""
    try:
        target = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise LabError(f"network namespace {netns} does not exist") from exc
    except PermissionError as exc:
        raise PrivilegeError(f"cannot open namespace {netns}: run as root") from exc
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def write_sysctls(netns: str, values: Sequence[tuple[str, str]]) -> None:
    """Set ``net.*`` sysctls inside ``netns`` (dotted names, as sysctl(8) spells them)."""
    with entered(netns):
        for name, value in values:
            path = Path("/proc/sys") / name.replace(".", "/")
            try:
                path.write_text(value)
            except OSError as exc:
                raise LabError(f"sysctl {name}={value} in {netns}: {exc.strerror}") from exc


def read_sysctl(netns: str, name: str) -> str:
    with entered(netns):
        return (Path("/proc/sys") / name.replace(".", "/")).read_text().strip()


def add_netns(names: Sequence[str]) -> None:
    ip_batch([f"netns add {n}" for n in names], what="creating namespaces")


def delete_netns(name: str) -> None:
    ip = require_program("ip", "iproute2")
    run([ip, "netns", "delete", name], what=f"deleting namespace {name}")


def netns_pids(name: str) -> list[int]:
    """PIDs of processes whose network namespace is ``name``."""
    ip = require_program("ip", "iproute2")
    out = run([ip, "netns", "pids", name], what=f"listing processes in {name}")
    return [int(tok) for tok in out.split()]


def iptables_apply(netns: str, args: tuple[str, ...]) -> None:
    """One iptables rule in ``netns``, for IPv4 and IPv6 alike."""
    ip = require_program("ip", "iproute2")
    for program in ("iptables", "ip6tables"):
        binary = require_program(program, "iptables")
        run([ip, "netns", "exec", netns, binary, *args], what=f"{program} in {netns}")


def nft_apply(netns: str, ruleset: str) -> None:
    nft = require_program("nft", "nftables")
    ip = require_program("ip", "iproute2")
    run([ip, "netns", "exec", netns, nft, "-f", "-"], stdin=ruleset, what=f"nft in {netns}")
