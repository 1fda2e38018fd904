"""What runs `reachtest run` on a schedule: a cron.d line, or a systemd service and timer.

Texts only; the CLI writes them. The interval is given as ``15m`` or ``2h``, and must
divide the hour or the day, so both cron and systemd can say it exactly.

The texts cannot be abused: the mail address is one address; a path with a control
character or a backslash is refused (a newline would start a new cron line, a backslash
is an escape to systemd); ``%`` is escaped for cron (``\\%``: cron turns a bare ``%`` into
a newline) and for systemd (``%%``: a specifier), ``$`` for systemd (``$$``: a variable).
The name of the files is unique per configuration: it carries a hash of its resolved path.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

from reachtest.errors import UsageError


def every(text: str) -> tuple[int, str]:
    """(amount, 'm' or 'h') from ``15m`` / ``2h``; a clear error otherwise."""
    found = re.fullmatch(r"\s*(\d+)\s*([mh])\s*", text)
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        if (unit == "m" and amount in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)) or (
            unit == "h" and amount in (1, 2, 3, 4, 6, 8, 12, 24)
        ):
            return amount, unit
    raise UsageError(
        f"--every takes minutes that divide the hour (5m, 15m, 30m) or hours that divide "
        f"the day (1h, 6h, 24h), not {text!r}"
    )


#: One mail address (``ops@example.org``) or a local user (``root``): nothing cron or a
#: mailer could read as more than that.
_ADDRESS = re.compile(r"[A-Za-z0-9._+-]+(@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


def mail_address(text: str) -> str:
    """``text`` when it is one address; a clear error otherwise."""
    if not _ADDRESS.fullmatch(text) or text.startswith("-"):
        shown = text.encode("unicode_escape").decode("ascii")
        raise UsageError(
            f"--mail-to takes one address (ops@example.org) or a local user (root), not '{shown}'"
        )
    return text


def safe_path(path: str | Path, what: str) -> str:
    """``path`` as text, refused when it holds a control character or a backslash."""
    text = str(path)
    if _UNSAFE.search(text):
        shown = text.encode("unicode_escape").decode("ascii")
        raise UsageError(
            f"{what} {shown}: a path with a control character or a backslash cannot be "
            "scheduled; rename it"
        )
    return text


def unit_name(config: Path) -> str:
    """``reachtest-<config stem>-<hash of its resolved path>``: safe for a cron.d file and
    a unit name, and not the same for two configurations named alike in two folders."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", config.stem).strip("-")[:40] or "config"
    digest = hashlib.sha256(str(config.resolve()).encode("utf-8", "surrogateescape"))
    return f"reachtest-{stem}-{digest.hexdigest()[:8]}"


def _command(executable: str, config: Path) -> str:
    return shlex.join(
        [safe_path(executable, "the program"), "run", "--config", safe_path(config, "config")]
    )


def _cron(text: str) -> str:
    return text.replace("%", "\\%")


def _systemd(text: str) -> str:
    return text.replace("%", "%%")


def cron_file(executable: str, config: Path, interval: str, mail_to: str | None) -> str:
    """An /etc/cron.d file: cron mails what the run prints, which is only trouble."""
    amount, unit = every(interval)
    if unit == "m":
        when = f"*/{amount} * * * *" if amount > 1 else "* * * * *"
    else:
        when = "0 0 * * *" if amount == 24 else f"0 */{amount} * * *"
    mail = f"MAILTO={mail_address(mail_to)}\n" if mail_to is not None else ""
    return (
        f"# reachtest: scheduled run of {safe_path(config, 'config')} every {amount}{unit}\n"
        f"SHELL=/bin/sh\n{mail}"
        f"{when} root {_cron(_command(executable, config))}\n"
    )


#: The system user a systemd unit runs as: never root.
SERVICE_USER = "reachtest"
#: What the service may do beyond an ordinary user: raw sockets, nothing else.
_HARDENING = """\
User={user}
Group={user}
# Raw sockets without root: this one capability, nothing else, and never more.
AmbientCapabilities=CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_RAW
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_INET AF_INET6 AF_PACKET AF_UNIX AF_NETLINK
UMask=0027
"""


def _quoted_path(path: Path) -> str:
    text = safe_path(path, "folder")
    if '"' in text:
        raise UsageError(f"folder {text}: a path with a double quote cannot be scheduled")
    return f'"-{_systemd(text)}"'  # "-": a folder not there yet is no error


def systemd_units(
    executable: str, config: Path, interval: str, writes: tuple[Path, ...] = ()
) -> dict[str, str]:
    """``name.service`` and ``name.timer`` for /etc/systemd/system. The service runs as
    the system user ``reachtest`` with CAP_NET_RAW only, the file system read-only but for
    ``writes`` (the folders of the history, the reports and the metrics)."""
    amount, unit = every(interval)
    hourly = "daily" if amount == 24 else f"0/{amount}:00"
    calendar = f"*:0/{amount}" if unit == "m" else hourly
    name = unit_name(config)
    shown = _systemd(safe_path(config, "config"))
    service = (
        "[Unit]\n"
        f"Description=reachtest scheduled run of {shown}\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\nType=oneshot\n"
        f"ExecStart={_systemd(_command(executable, config)).replace('$', '$$')}\n"
        "# exit 1 means an expectation failed: the unit shows as failed, on purpose.\n"
        + _HARDENING.format(user=SERVICE_USER)
        + "".join(f"ReadWritePaths={_quoted_path(p)}\n" for p in sorted(set(writes)))
    )
    timer = (
        "[Unit]\n"
        f"Description=reachtest every {amount}{unit} ({shown})\n\n"
        "[Timer]\n"
        f"OnCalendar={calendar}\nPersistent=true\nRandomizedDelaySec=20\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


#: The exporter's environment in its unit: glibc keeps a cache of freed blocks per thread
#: (up to 7 per size, about 0.2 MB a thread); across the exporter's pool of server threads
#: that grew its memory for hours (bench_exporter: +10 MB over 10,000 probes, still
#: rising). Without the cache its memory is flat and its CPU the same (docs/exporter.md).
EXPORTER_ENVIRONMENT = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}


def exporter_unit(
    executable: str, config: Path, listen: str, vantage: str | None
) -> dict[str, str]:
    """``name.service`` running ``reachtest exporter`` for good (restarted when it fails),
    as the system user with CAP_NET_RAW alone and the file system read-only."""
    argv = [
        safe_path(executable, "the program"), "exporter",
        "--config", safe_path(config, "config"), "--listen", safe_path(listen, "--listen"),
    ]  # fmt: skip
    if vantage is not None:
        argv += ["--vantage", safe_path(vantage, "--vantage")]
    shown = _systemd(safe_path(config, "config"))
    name = unit_name(config).replace("reachtest-", "reachtest-exporter-", 1)
    service = (
        "[Unit]\n"
        f"Description=reachtest Prometheus exporter ({shown})\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\nType=simple\n"
        + "".join(f"Environment={k}={v}\n" for k, v in EXPORTER_ENVIRONMENT.items())
        + f"ExecStart={_systemd(shlex.join(argv)).replace('$', '$$')}\n"
        "Restart=on-failure\nRestartSec=5\n"
        + _HARDENING.format(user=SERVICE_USER)
        + "\n[Install]\nWantedBy=multi-user.target\n"
    )
    return {f"{name}.service": service}
