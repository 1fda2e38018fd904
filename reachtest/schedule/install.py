"""What runs `reachtest run` on a schedule: a cron.d line, or a systemd service and timer.

Texts only; the CLI writes them. The interval is given as ``15m`` or ``2h``, and must
divide the hour or the day, so both cron and systemd can say it exactly.
"""

from __future__ import annotations

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


def unit_name(config: Path) -> str:
    """``reachtest-<config stem>``, safe for a file and a unit name."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", config.stem).strip("-") or "config"
    return f"reachtest-{stem}"


def _command(executable: str, config: Path) -> str:
    return shlex.join([executable, "run", "--config", str(config)])


def cron_file(executable: str, config: Path, interval: str, mail_to: str | None) -> str:
    """An /etc/cron.d file: cron mails what the run prints, which is only trouble."""
    amount, unit = every(interval)
    if unit == "m":
        when = f"*/{amount} * * * *" if amount > 1 else "* * * * *"
    else:
        when = "0 0 * * *" if amount == 24 else f"0 */{amount} * * *"
    mail = f"MAILTO={mail_to}\n" if mail_to else ""
    return (
        f"# reachtest: scheduled run of {config} every {interval.strip()}\n"
        f"SHELL=/bin/sh\n{mail}"
        f"{when} root {_command(executable, config)}\n"
    )


def systemd_units(executable: str, config: Path, interval: str) -> dict[str, str]:
    """``name.service`` and ``name.timer`` for /etc/systemd/system."""
    amount, unit = every(interval)
    hourly = "daily" if amount == 24 else f"0/{amount}:00"
    calendar = f"*:0/{amount}" if unit == "m" else hourly
    name = unit_name(config)
    service = (
        "[Unit]\n"
        f"Description=reachtest scheduled run of {config}\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\nType=oneshot\n"
        f"ExecStart={_command(executable, config)}\n"
        "# exit 1 means an expectation failed: the unit shows as failed, on purpose.\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=reachtest every {interval.strip()} ({config})\n\n"
        "[Timer]\n"
        f"OnCalendar={calendar}\nPersistent=true\nRandomizedDelaySec=20\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}
