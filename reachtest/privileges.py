"""Least privilege: once the sockets are open, and before the first packet from the network
is parsed, become the invoking user and give up every capability for good.

``sudo reachtest trace ...`` opens its raw sockets as root, then runs as the user who
typed it (``SUDO_UID``/``SUDO_GID``), with no supplementary groups, no capabilities in
any set, and ``no_new_privs``: the parsers, pandas, jinja2 and matplotlib never run as
root, and the reports in the user's folder are the user's. Run by root itself (cron,
a root shell), it stays uid 0 but without capabilities, which is what makes root
dangerous. Open sockets keep working: the kernel checked the privilege when they were
made.

After the switch the process may no longer read the files it was started from (an
interpreter or virtual environment in root's home): then the modules a run needs later
are imported before it (about 1-2 s); otherwise they load when needed, as usual.

Python has no capset(2); it is called through libc (ctypes), with the kernel's v3
structures. python-prctl would do it but needs libcap headers to build.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from reachtest.errors import EnvironmentProblem

PR_CAPBSET_DROP = 24
CAP_SETPCAP = 8
PR_SET_NO_NEW_PRIVS = 38
PR_SET_KEEPCAPS = 8
CAP_NET_RAW = 13
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
#: Capabilities the running kernel knows (its last one, from /proc; 40 on 6.x kernels).
_CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"

#: What a trace loads after probing (analysis, the text report, reverse DNS): imported
#: before the switch when the user could not read them afterwards.
TRACE_MODULES = (
    "csv",
    "encodings.idna",
    "zoneinfo",
    "numpy",
    "scipy.stats",
    "jsonschema",
    "rich.console",
    "rich.live",
    "rich.table",
    "rich.text",
    "dns.resolver",
    "dns.reversename",
    "reachtest.analysis.analyse",
    "reachtest.report.record",
    "reachtest.report.view",
    "reachtest.report.terminal",
    "reachtest.report.markdown",
    "reachtest.report.csvfile",
    "reachtest.session",
    "reachtest.names",
)
#: ... and for an HTML report (charts), and for a pcap.
HTML_MODULES = (
    "html",
    "encodings.unicode_escape",  # jinja2 compiles its templates with it
    "jinja2",
    "matplotlib",
    "matplotlib.figure",
    "matplotlib.backends.backend_svg",
    "matplotlib.patches",
    "reachtest.report.html",
    "reachtest.report.charts",
)
PCAP_MODULES = ("scapy.utils", "reachtest.report.pcap")


@dataclass(frozen=True, slots=True)
class Dropped:
    """What the process is now: its user and group, and whether it changed user."""

    uid: int
    gid: int
    switched: bool


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg: int = 0, arg3: int = 0) -> int:
    result: int = libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), 0, 0)
    return result


def invoking_user() -> tuple[int, int] | None:
    """The user who ran ``sudo`` (``SUDO_UID``/``SUDO_GID``), when root runs on their
    behalf; None otherwise (root itself, or not root)."""
    if os.geteuid() != 0:
        return None
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if not (uid.isdigit() and gid.isdigit()) or int(uid) == 0:
        return None
    return int(uid), int(gid)


def _code_paths() -> list[str]:
    """Where Python loads code from: the interpreter's own library and the import path."""
    import sys

    return [p for p in {sys.prefix, sys.base_prefix, *sys.path} if p and os.path.isdir(p)]


def _reachable(path: str, uid: int, gid: int) -> bool:
    """Can ``uid``/``gid`` (no other groups) list and read ``path`` and pass every folder
    above it? (Mode bits only; when in doubt, no: then the modules are loaded first.)"""
    path = os.path.realpath(path)
    while True:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if st.st_uid == uid:
            bits = st.st_mode >> 6
        elif st.st_gid == gid:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        if bits & 0o5 != 0o5:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _status() -> dict[str, str]:
    with open("/proc/self/status", encoding="ascii") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def drop_privileges(
    modules: Iterable[str] = TRACE_MODULES, *, keep_net_raw: bool = False
) -> Dropped:
    """Import ``modules``, then become the invoking user (or stay uid 0), drop every
    capability and set no_new_privs. Raises EnvironmentProblem when the kernel refuses
    any step: a run that cannot shed its privileges does not go on with them.

    With ``keep_net_raw`` (a service that opens raw sockets per probe: the exporter),
    CAP_NET_RAW alone stays, in the effective and permitted sets and nowhere else, as
    systemd's ``AmbientCapabilities=CAP_NET_RAW`` with ``User=`` would leave it."""
    target = invoking_user()
    kept = 1 << CAP_NET_RAW if keep_net_raw else 0
    if target is not None and not all(_reachable(p, *target) for p in _code_paths()):
        for name in modules:
            importlib.import_module(name)
    libc = _libc()
    try:
        # The bounding set first (that needs CAP_SETPCAP), the user next (CAP_SETUID and
        # CAP_SETGID; leaving uid 0 also empties the sets), every other set last.
        if os.geteuid() == 0:
            _drop_bounding_set(libc, kept)
        if _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
        if target is not None:
            uid, gid = target
            if kept and _prctl(libc, PR_SET_KEEPCAPS, 1) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        data[0].effective = data[0].permitted = kept  # capabilities 0-31 (CAP_NET_RAW: 13)
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
        if _prctl(libc, PR_SET_NO_NEW_PRIVS, 1) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        status = _status()
    except OSError as exc:
        raise EnvironmentProblem(f"cannot give up privileges: {exc}") from exc
    left = {k: status.get(k, "?") for k in ("CapEff", "CapPrm", "CapAmb", "CapInh")}
    want = {"CapEff": kept, "CapPrm": kept, "CapAmb": 0, "CapInh": 0}
    if any(_hex(v) != want[k] for k, v in left.items()) or status.get("NoNewPrivs") != "1":
        raise EnvironmentProblem(f"cannot give up privileges: still {left}")
    return Dropped(uid=os.getuid(), gid=os.getgid(), switched=target is not None)


def _hex(value: str) -> int | None:
    try:
        return int(value, 16)
    except ValueError:
        return None


def _drop_bounding_set(libc: ctypes.CDLL, kept: int = 0) -> None:
    """Remove every capability from the bounding set: nothing executed later regains one.
    That needs CAP_SETPCAP; root started without it (``setpriv --bounding-set=-all``)
    keeps the set it was given, and no_new_privs (set below) bars every gain on exec."""
    if not int(_status().get("CapEff", "0"), 16) >> CAP_SETPCAP & 1:
        return
    try:
        with open(_CAP_LAST_CAP, encoding="ascii") as last:
            top = int(last.read())
    except (OSError, ValueError):
        top = 63
    for cap in range(top + 1):
        if kept >> cap & 1:
            continue
        if _prctl(libc, PR_CAPBSET_DROP, cap) != 0 and ctypes.get_errno() != 22:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")
