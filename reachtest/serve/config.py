"""The exporter's TOML configuration: what may be probed, and the modules to probe with.

::

    [exporter]
    allow = ["198.18.0.0/15", "2001:db8::/32"]   # prefixes that may be probed
    targets = ["server.example.net"]              # names (or addresses) that may be
    labels = { site = "dc1" }                     # added to every probe's series
    concurrency = 4                               # probes at once
    queue = 16                                    # probes waiting; more get 503

    [module.web]
    services = ["tcp/443", "tcp/80"]
    expect = { "tcp/443" = "open" }
    mode = "trace"                                # or "check": end to end only
    rounds = 3

A module takes the keys of a scheduled run's ``[[target]]`` (services, expect, icmp,
rounds, interval, timeout, max_ttl, family, labels; for request flows such as tls/443 or
dns/53: sni, host_header, qname, qtype, control_name) but no host: Prometheus names the
target per scrape (and request flows ask for its name where the module sets none).
Every problem is one ``ConfigError`` naming the file, line and key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reachtest.schedule.config import (
    _HOST,
    _LABEL,
    OWN_LABELS,
    ConfigError,
    TargetConfig,
    _key_pattern,
    _section_end,
    _target,
    key_path,
    read_config_text,
    toml_data,
)

MODES = ("check", "trace")
MODULE_KEYS = (
    "services", "expect", "icmp", "rounds", "interval", "timeout", "max_ttl", "family",
    "labels", "mode", "sni", "host_header", "qname", "qtype", "control_name", "mtu", "mda",
)  # fmt: skip
EXPORTER_KEYS = ("allow", "targets", "labels", "concurrency", "queue")
TOP_KEYS = ("exporter", "module")
#: Label names the exporter's metrics set themselves (beside the flows' own).
EXPORTER_LABELS = (*OWN_LABELS, "module", "vantage", "flow", "state", "ttl", "path")
#: A label value reachtest takes from the command line (the vantage).
_LABEL_VALUE = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")
#: A module traces at most this many rounds: a scrape is answered within its timeout.
MAX_ROUNDS = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class Module:
    """One probe module: the flows, expectations and settings of a scheduled target."""

    name: str
    mode: str
    target: TargetConfig  # its host and name are the module's name (set per probe)

    def request_names(self, host: str) -> dict[str, str]:
        """The names the module's request flows ask for when ``host`` is scraped: those
        the module sets (sni, host_header, qname), else ``host``; UsageError when
        ``host`` is an address and no name is set, or a name that cannot be sent."""
        from reachtest.errors import UsageError
        from reachtest.spec import request_name

        given = self.target.request_given
        names = {
            kind: request_name(
                kind, port, host, given.get("sni"), given.get("host_header"), given.get("qname")
            )
            for kind, port in self.target.requests
        }
        for name in names.values():
            if name.lower() == self.target.control_name.lower():
                raise UsageError(f"the control name {name!r} is the name tested: set another")
        return names


@dataclass(frozen=True, slots=True, kw_only=True)
class ExporterConfig:
    path: Path
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    targets: tuple[str, ...]  # names and addresses that may be probed besides ``allow``
    labels: Mapping[str, str] = field(default_factory=dict)
    concurrency: int = 4
    queue: int = 16
    modules: Mapping[str, Module] = field(default_factory=dict)


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line of the key ``path`` (``module.web.expect."tcp/443"``), or the
    nearest enclosing table's."""
    lines = text.splitlines()
    parts = [p for p in path if isinstance(p, str)]
    if not parts:
        return None
    if parts[0] == "module" and len(parts) > 1:
        name = re.escape(parts[1])
        header = re.compile(rf"^\s*\[\s*module\s*\.\s*(?:{name}|\"{name}\"|'{name}')\s*\]")
        rest = parts[2:]
    else:
        header = re.compile(rf"^\s*\[\s*{re.escape(parts[0])}\s*\]")
        rest = parts[1:]
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return None
    found = start + 1
    end = _section_end(lines, start)
    for part in rest:
        pattern = re.compile(rf"(?:^\s*|[{{,]\s*){_key_pattern(part)}\s*=")
        for i in range(start, end):
            if pattern.search(lines[i]):
                start, found = i, i + 1
                break
    return found


def load_exporter_config(path: str | Path) -> ExporterConfig:
    """Read, parse and check the exporter's configuration file at ``path``."""
    return parse_exporter_config(read_config_text(path), str(path))


def parse_exporter_config(text: str, where: str = "<config>") -> ExporterConfig:
    """The exporter configuration in ``text``; ``where`` names it in errors."""
    data = toml_data(text, where)

    def fail(path: Sequence[str | int], message: str) -> ConfigError:
        line = locate(text, path)
        place = f"{where}:{line}" if line else where
        return ConfigError(f"{place}: {key_path(path)}: {message}")

    def unknown(table: Mapping[str, Any], allowed: Sequence[str], path: list[str | int]) -> None:
        for key in table:
            if key not in allowed:
                raise fail([*path, key], f"unknown key (known: {', '.join(allowed)})")

    unknown(data, TOP_KEYS, [])
    exporter = data.get("exporter", {})
    if not isinstance(exporter, dict):
        raise fail(["exporter"], "must be a table: [exporter]")
    unknown(exporter, EXPORTER_KEYS, ["exporter"])
    allow = _allow(exporter.get("allow", []), fail)
    targets = _targets(exporter.get("targets", []), fail)
    if not allow and not targets:
        raise ConfigError(
            f"{where}: nothing may be probed: give [exporter] allow = [prefixes] or "
            "targets = [names] (an exporter that probes anything is a scanner for anyone "
            "who can reach it)"
        )
    labels = _labels(exporter.get("labels", {}), fail)

    def count(key: str, default: int, high: int) -> int:
        value = exporter.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise fail(["exporter", key], f"must be an integer from 1 to {high}, not {value!r}")
        return value

    modules_table = data.get("module")
    if not isinstance(modules_table, dict) or not modules_table:
        raise ConfigError(
            f"{where}: no module: add one or more [module.NAME] tables with services = [...]"
        )
    modules: dict[str, Module] = {}
    for name, table in modules_table.items():
        at: list[str | int] = ["module", name]
        if not _MODULE_NAME.fullmatch(name):
            raise fail(at, f"{name!r} cannot name a module: use letters, digits and _ . -")
        if not isinstance(table, dict):
            raise fail(at, f"must be a table: [module.{name}]")
        unknown(table, MODULE_KEYS, at)
        mode = table.get("mode", "trace")
        if mode not in MODES:
            raise fail([*at, "mode"], f"{mode!r} is not a mode (check or trace)")
        rounds = table.get("rounds")
        if isinstance(rounds, int) and not isinstance(rounds, bool) and rounds > MAX_ROUNDS:
            raise fail([*at, "rounds"], f"{rounds} is too many for a scrape (at most {MAX_ROUNDS})")
        settings = {k: v for k, v in table.items() if k != "mode"}
        for key in settings.get("labels", {}) if isinstance(settings.get("labels"), dict) else {}:
            if key in EXPORTER_LABELS:
                raise fail([*at, "labels", key], f"the exporter sets the label {key} itself")
        # The host of a module is the scraped target: "module" stands for it here (a name,
        # so that request flows without sni/host_header/qname pass: see request_names).
        target = _target({**settings, "host": "module", "name": name}, {}, at, fail)
        modules[name] = Module(name=name, mode=mode, target=target)
    return ExporterConfig(
        path=Path(where),
        allow=allow,
        targets=targets,
        labels=labels,
        concurrency=count("concurrency", 4, 64),
        queue=count("queue", 16, 1024),
        modules=modules,
    )


_Fail = Any  # Callable[[Sequence[str | int], str], ConfigError]


def _allow(value: Any, fail: _Fail) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise fail(["exporter", "allow"], 'must be a list of prefixes: ["198.51.100.0/24"]')
    nets = []
    for item in value:
        if not isinstance(item, str):
            raise fail(["exporter", "allow"], f"{item!r} is not a prefix (a string)")
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise fail(["exporter", "allow"], f"{item!r} is not an address prefix") from None
    return tuple(nets)


def _targets(value: Any, fail: _Fail) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise fail(["exporter", "targets"], 'must be a list of names: ["server.example.net"]')
    names = []
    for item in value:
        if not isinstance(item, str) or not _HOST.fullmatch(item.strip()):
            raise fail(["exporter", "targets"], f"{item!r} is not a host name or address")
        names.append(item.strip().lower().rstrip("."))
    return tuple(names)


def _labels(value: Any, fail: _Fail) -> dict[str, str]:
    at: list[str | int] = ["exporter", "labels"]
    if not isinstance(value, dict):
        raise fail(at, 'must be a table: labels = { site = "dc1" }')
    labels = {}
    for key, raw in value.items():
        if not _LABEL.match(key) or key.startswith("__"):
            raise fail([*at, key], "a label name is ASCII letters, digits and _ (not __)")
        if key in EXPORTER_LABELS:
            raise fail([*at, key], f"the exporter sets the label {key} itself; pick another")
        if not isinstance(raw, str) or not raw.isprintable():
            raise fail([*at, key], f"{raw!r} must be a string without control characters")
        labels[key] = raw
    return labels
