"""The TOML configuration of scheduled runs: defaults, targets with their services and
expectations, where reports, history and metrics go.

Every problem is one ``ConfigError`` naming the file, the line and the key::

    /etc/reachtest.toml:14: target[2].expect."tcp/443": "opne" is not an expectation ...

tomllib gives no positions for keys, so ``locate`` finds the line of a key path in the
text (table headers, dotted and quoted keys, inline tables) for the message.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reachtest.errors import UsageError
from reachtest.files import check_path_text
from reachtest.model import ICMP_FLOW, FlowSpec, Protocol
from reachtest.packet.requests import QUERY_TYPES, name_problem
from reachtest.spec import (
    DEFAULT_CONTROL,
    MAX_FLOWS,
    host_key,
    host_name_problem,
    normal_host,
    parse_flows,
    request_flow,
    request_name,
)

#: What a service (TCP/UDP) may be expected to be; ``blocked`` is anything but open.
SERVICE_WORDS = (
    "open", "closed", "filtered", "open|filtered", "partially-filtered", "blocked",
)  # fmt: skip
#: What the host (ICMP echo) may be expected to be.
ICMP_WORDS = ("reachable", "unreachable")
POLICIES = ("always", "on-change", "on-failure")
#: Keys a target may set, with those [defaults] may set for every target.
RUN_KEYS = (
    "rounds", "interval", "timeout", "max_ttl", "policy", "family", "icmp", "sni",
    "host_header", "qname", "qtype", "control_name", "mtu", "mda",
)  # fmt: skip
#: What a request flow (tls/PORT, http/PORT, dns/PORT) may be expected to be: answered,
#: or not.
REQUEST_WORDS = ("open", "blocked")
TARGET_KEYS = ("host", "name", "services", "expect", "labels", *RUN_KEYS)
DEFAULT_KEYS = ("services", "labels", *RUN_KEYS)
TOP_KEYS = ("defaults", "target", "reports", "history", "prometheus")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Label names reachtest's metrics set themselves.
OWN_LABELS = ("target", "protocol", "port", "expected")
#: A target's name: it is printed, stored, and part of report file names and metrics.
_NAME = re.compile(r"[^\W_.-][\w.:@+-]{0,252}")
#: A host name (any script: IDNA) or an address, as the resolver takes it.
_HOST = re.compile(r"[\w.:%\[\]-]{1,253}")


def _shown(text: str) -> str:
    """``text`` quoted, its control characters written out: safe in a one-line message."""
    return repr(text)


class ConfigError(UsageError):
    """A configuration problem: exit 2, one line with file, line and key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetConfig:
    """One target of the configuration, defaults applied."""

    host: str
    name: str
    flows: tuple[FlowSpec, ...]
    expect: Mapping[str, str]  # flow label -> expected word
    rounds: int = 5
    interval_s: float = 0.5
    timeout_s: float = 2.0
    max_ttl: int = 30
    policy: str = "on-change"
    family: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Request flows (``tls/443``, ``http/80``, ``dns/53``): (kind, port), with the name
    #: each asks for and the control name; their port's SYN flow (DNS: its UDP flow) is in
    #: ``flows`` too.
    requests: tuple[tuple[str, int], ...] = ()
    request_names: Mapping[str, str] = field(default_factory=dict)  # kind -> name
    #: The names set in the configuration (sni, host_header, qname): the exporter asks
    #: for the scraped target's name where none is set.
    request_given: Mapping[str, str] = field(default_factory=dict)
    control_name: str = DEFAULT_CONTROL
    query_type: str = "A"  # dns/PORT's query type
    #: Path MTU: None, not measured; 0, measured (a traced target's flows); N, measured and
    #: expected to be N bytes at least, with no black hole (``mtu = 1400``).
    mtu: int | None = None
    #: Multipath (``mda = true``, or the confidence in percent, ``mda = 99``): each flow
    #: spread over many flow hashes, judged per branch; None: not measured. A fraction.
    mda: float | None = None

    @property
    def labels_of_flows(self) -> tuple[str, ...]:
        """Every flow's label, the request flows' after the others."""
        return (*(f.label for f in self.flows), *(f"{k}/{p}" for k, p in self.requests))


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    path: Path
    targets: tuple[TargetConfig, ...]
    reports: Path | None
    history: Path | None
    prometheus: Path | None


def _key(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part + 1}]"
    return f".{part}" if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'."{part}"'


def key_path(path: Sequence[str | int]) -> str:
    """``target[2].expect."tcp/443"`` (array items counted from 1, as people count)."""
    return "".join(_key(p) for p in path).lstrip(".")


def _key_pattern(key: str) -> str:
    bare = re.escape(key)
    return rf"(?:{bare}|\"{bare}\"|'{bare}')"


def _section_end(lines: list[str], start: int) -> int:
    """The index of the first table header after line ``start`` (or the end)."""
    return next(
        (i for i in range(start + 1, len(lines)) if re.match(r"\s*\[", lines[i])), len(lines)
    )


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line where the key ``path`` is written, or the nearest enclosing one."""
    lines = text.splitlines()
    parts = list(path)
    start, found = -1, None  # the top level: from the first line to the first header
    if parts and parts[0] in ("target", "defaults"):
        header = r"\[\[\s*target\s*\]\]" if parts[0] == "target" else r"\[\s*defaults\s*\]"
        headers = [i for i, line in enumerate(lines) if re.match(rf"\s*{header}", line)]
        if parts[0] == "target" and len(parts) == 1:  # `target = ...` or a `[target]`
            found = next(
                (i + 1 for i, line in enumerate(lines) if re.match(r"\s*\[\s*target\s*\]", line)),
                None,
            )
            return found or _top_key(lines, "target")
        index, parts = (parts[1], parts[2:]) if parts[0] == "target" else (0, parts[1:])
        if not headers:
            return None
        if not isinstance(index, int) or index >= len(headers):
            return headers[0] + 1
        start, found = headers[index], headers[index] + 1
    end = _section_end(lines, start)
    for part in (p for p in parts if isinstance(p, str)):
        pattern = re.compile(rf"(?:^\s*|[{{,]\s*){_key_pattern(part)}\s*=")
        for i in range(max(start, 0), end):
            if pattern.search(lines[i]):
                start, found = i, i + 1
                break
    return found


def _top_key(lines: list[str], key: str) -> int | None:
    pattern = re.compile(rf"^\s*{_key_pattern(key)}\s*=")
    end = _section_end(lines, -1)
    return next((i + 1 for i in range(end) if pattern.search(lines[i])), None)


def _fail(where: str, text: str, path: Sequence[str | int], message: str) -> ConfigError:
    line = locate(text, path)
    place = f"{where}:{line}" if line else where
    return ConfigError(f"{place}: {key_path(path)}: {message}")


def _contrast(request: tuple[str, int]) -> FlowSpec:
    """The flow a request flow is contrasted with (``spec.contrast_flow``)."""
    protocol = Protocol.UDP if request[0] == "dns" else Protocol.TCP
    return FlowSpec(protocol=protocol, port=request[1])


def _words(words: Sequence[str]) -> str:
    return ", ".join(words)


def read_config_text(path: str | Path) -> str:
    """The text of the configuration file at ``path`` (a BOM some editors add taken off);
    ConfigError when it cannot be read."""
    from reachtest.inputs import MIB, read_text

    if not Path(path).exists():
        raise ConfigError(f"{path}: no such file")
    try:
        text = read_text(path, "configuration", 4 * MIB)
    except UsageError as exc:
        raise ConfigError(str(exc)) from None
    return text.removeprefix("\ufeff")


def toml_data(text: str, where: str) -> dict[str, Any]:
    """``text`` parsed as TOML; ConfigError naming the line and column otherwise."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply (tables or arrays)") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if found:
            message = message[: found.start()].strip()
            raise ConfigError(
                f"{where}:{found.group(1)}: not valid TOML: {message} (column {found.group(2)})"
            ) from None
        raise ConfigError(f"{where}: not valid TOML: {message}") from None


def load_config(path: str | Path) -> Config:
    """Read, parse and check the configuration file at ``path``."""
    where = str(path)
    config = parse_config(read_config_text(path), where)
    here = Path(path).parent  # relative paths in the file are relative to the file

    def beside(value: Path | None) -> Path | None:
        return None if value is None else here / value

    return replace(
        config,
        reports=beside(config.reports),
        history=beside(config.history),
        prometheus=beside(config.prometheus),
    )


def parse_config(text: str, where: str = "<config>") -> Config:
    """The configuration in ``text``; ``where`` names it in errors."""
    data = toml_data(text, where)

    def fail(path: Sequence[str | int], message: str) -> ConfigError:
        return _fail(where, text, path, message)

    def unknown(table: Mapping[str, Any], allowed: Sequence[str], path: list[str | int]) -> None:
        for key in table:
            if key not in allowed:
                raise fail([*path, key], f"unknown key (known: {_words(allowed)})")

    unknown(data, TOP_KEYS, [])
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise fail(["defaults"], "must be a table: [defaults]")
    unknown(defaults, DEFAULT_KEYS, ["defaults"])
    targets = data.get("target")
    if targets is None:
        raise ConfigError(f"{where}: no target: add one or more [[target]] tables with host = ...")
    if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
        raise fail(["target"], "must be an array of tables: [[target]]")
    checked = []
    for i, table in enumerate(targets):
        unknown(table, TARGET_KEYS, ["target", i])
        checked.append(_target(table, defaults, ["target", i], fail))
    names = [t.name.casefold() for t in checked]
    hosts = [(host_key(t.host), t.family) for t in checked]
    for i, name in enumerate(names):
        if name in names[:i]:
            key = "name" if "name" in targets[i] else "host"
            first = checked[names.index(name)].name
            raise fail(
                ["target", i, key],
                f"the name {checked[i].name!r} is used twice (as {first!r} before; set name = ...)",
            )
        if hosts[i] in hosts[:i]:
            other = checked[hosts.index(hosts[i])]
            raise fail(
                ["target", i, "host"],
                f"{checked[i].host!r} is the host of target {other.name!r} too ({other.host!r}): "
                "one address is traced once; put its services and expectations in one target",
            )
    return Config(
        path=Path(where),
        targets=tuple(checked),
        reports=_path(data, "reports", fail),
        history=_path(data, "history", fail),
        prometheus=_path(data, "prometheus", fail),
    )


#: Makes the error for a key path and a message (file and line added).
Fail = Callable[[Sequence[str | int], str], ConfigError]


def _path(data: Mapping[str, Any], key: str, fail: Fail) -> Path | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise fail([key], "must be a path (a non-empty string)")
    try:
        check_path_text(value, "the path")
    except UsageError as exc:
        raise fail([key], str(exc).removeprefix("the path: ")) from None
    return Path(value)


def _typed(value: Any, kind: type | tuple[type, ...], path: list[str | int], fail: Fail) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise fail(path, f"must be a number, not {value!r}")
    if not isinstance(value, kind):
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        wanted = " or ".join(
            names.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,))
        )
        raise fail(path, f"must be {wanted}, not {value!r}")
    return value


def _setting(
    table: Mapping[str, Any], defaults: Mapping[str, Any], key: str, path: list[str | int]
) -> tuple[Any, list[str | int]]:
    if key in table:
        return table[key], [*path, key]
    return defaults.get(key), ["defaults", key]


def _target(
    table: Mapping[str, Any], defaults: Mapping[str, Any], path: list[str | int], fail: Fail
) -> TargetConfig:
    if "host" not in table:
        raise fail(path, "missing key host (the name or address to trace)")
    host = normal_host(_typed(table["host"], str, [*path, "host"], fail))
    if not host:
        raise fail([*path, "host"], "must not be empty")
    if not _HOST.fullmatch(host):
        raise fail([*path, "host"], f"{_shown(host)} is not a host name or address")
    if not _is_address(host) and (problem := host_name_problem(host)):
        raise fail([*path, "host"], f"{_shown(host)} is not a host name or address: {problem}")
    name = normal_host(_typed(table.get("name", host), str, [*path, "name"], fail))
    if not _NAME.fullmatch(name) or ".." in name:
        raise fail(
            [*path, "name" if "name" in table else "host"],
            f"{_shown(name)} cannot name a target: use 1 to 253 letters, digits and . _ - : @ +"
            " (not starting with . or -; it names report files and metrics)",
        )

    flows: list[FlowSpec] = []
    requests: list[tuple[str, int]] = []
    icmp, icmp_at = _setting(table, defaults, "icmp", path)
    if icmp is None or _typed(icmp, bool, icmp_at, fail):
        flows.append(ICMP_FLOW)
    services, services_at = _setting(table, defaults, "services", path)
    if services is not None:
        if isinstance(services, str):
            services = [services]
        _typed(services, list, services_at, fail)
        for j, spec in enumerate(services):
            _typed(spec, str, [*services_at, j], fail)
            try:
                request = request_flow(spec)
                if request is not None:
                    requests.append(request)
                    flows.append(_contrast(request))
                    continue
                flows += parse_flows(spec)
            except UsageError as exc:
                raise fail(services_at, str(exc)) from None

    expect: dict[str, str] = {}
    raw_expect = table.get("expect", {})
    if not isinstance(raw_expect, dict):
        raise fail([*path, "expect"], 'must be a table: expect = { "tcp/443" = "open" }')
    for spec, word in raw_expect.items():
        at = [*path, "expect", spec]
        try:
            request = request_flow(spec)
        except UsageError as exc:
            raise fail(at, str(exc)) from None
        if request is not None:
            _typed(word, str, at, fail)
            label = f"{request[0]}/{request[1]}"
            if word not in REQUEST_WORDS:
                raise fail(
                    at, f"{word!r} is not an expectation for {label} (one of: "
                    f"{_words(REQUEST_WORDS)}: the request is answered, or not)",
                )  # fmt: skip
            if label in expect:
                raise fail(at, f"a second expectation for {label} (one per flow)")
            expect[label] = word
            if request not in requests:
                requests.append(request)
                flows.append(_contrast(request))
            continue
        try:
            flow = ICMP_FLOW if spec.strip().lower() == "icmp" else _one_flow(spec)
        except UsageError as exc:
            raise fail(at, str(exc)) from None
        _typed(word, str, at, fail)
        allowed = ICMP_WORDS if flow.protocol is Protocol.ICMP else SERVICE_WORDS
        if word not in allowed:
            raise fail(
                at, f"{word!r} is not an expectation for {flow.label} (one of: {_words(allowed)})"
            )
        if flow.label in expect:
            raise fail(at, f"a second expectation for {flow.label} (one per flow)")
        expect[flow.label] = word
        if flow not in flows:
            flows.append(flow)  # an expectation is traced even when not listed in services
    flows = list(dict.fromkeys(flows))
    if not flows:
        raise fail(path, "nothing to trace: give services = [...] or leave icmp on")
    if len(flows) > MAX_FLOWS:
        raise fail(services_at, f"too many flows ({len(flows)}): at most {MAX_FLOWS} per target")

    def number(key: str, kind: type, low: float, high: float, default: Any) -> Any:
        value, at = _setting(table, defaults, key, path)
        if value is None:
            return default
        value = _typed(value, (int, float) if kind is float else kind, at, fail)
        if not low <= value <= high:
            raise fail(at, f"{value} is out of range ({low:g} to {high:g})")
        return kind(value)

    policy, policy_at = _setting(table, defaults, "policy", path)
    if policy is not None and policy not in POLICIES:
        raise fail(policy_at, f"{policy!r} is not a policy (one of: {_words(POLICIES)})")
    family, family_at = _setting(table, defaults, "family", path)
    if family is not None and family not in (4, 6):
        raise fail(family_at, f"{family!r} is not an address family (4 or 6)")
    labels: dict[str, str] = {}
    for source, at in (
        (defaults.get("labels", {}), ["defaults", "labels"]),
        (table.get("labels", {}), [*path, "labels"]),
    ):
        if not isinstance(source, dict):
            raise fail(at, 'must be a table: labels = { site = "dc1" }')
        for key, raw in source.items():
            if not _LABEL.match(key) or key.startswith("__"):
                raise fail(
                    [*at, key],
                    "a label name is ASCII letters, digits and _ (no digit first, not __)",
                )
            if key in OWN_LABELS:
                raise fail([*at, key], f"reachtest sets the label {key} itself; pick another name")
            value = _typed(raw, str, [*at, key], fail)
            if not value.isprintable():
                raise fail([*at, key], f"{_shown(value)} holds a control character")
            labels[key] = value
    names: dict[str, str] = {}
    control, control_at = _setting(table, defaults, "control_name", path)
    control = DEFAULT_CONTROL if control is None else _typed(control, str, control_at, fail)
    if (problem := name_problem(control)) is not None:
        raise fail(control_at, f"{_shown(control)}: {problem}")
    given = {}
    for key in ("sni", "host_header", "qname"):
        value, at = _setting(table, defaults, key, path)
        if value is not None:
            _typed(value, str, at, fail)
            if (problem := name_problem(value)) is not None:
                raise fail(at, f"{_shown(value)}: {problem}")
        given[key] = (value, at)
    for kind, port in dict.fromkeys(requests):
        try:
            names[kind] = request_name(
                kind, port, host, given["sni"][0], given["host_header"][0], given["qname"][0]
            )
        except UsageError as exc:
            raise fail(services_at, str(exc)) from None
        if names[kind].lower() == control.lower():
            raise fail(control_at, f"the control name {control!r} is the name tested")
    qtype, qtype_at = _setting(table, defaults, "qtype", path)
    if qtype is not None:
        _typed(qtype, str, qtype_at, fail)
        if qtype.upper() not in QUERY_TYPES:
            raise fail(qtype_at, f"{_shown(qtype)} is not a query type (one of: "
                       f"{_words(QUERY_TYPES)})")  # fmt: skip
    mtu, mtu_at = _setting(table, defaults, "mtu", path)
    if mtu is not None:
        if mtu is True:
            mtu = 0
        elif mtu is False:
            mtu = None
        elif isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
            raise fail(
                mtu_at, f"{_shown(mtu)}: mtu = true (measure it) or the least path MTU expected,"
                " 68 to 65535 bytes",
            )  # fmt: skip
    mda, mda_at = _setting(table, defaults, "mda", path)
    if mda is not None:
        if mda is True:
            mda = 95
        elif mda is False:
            mda = None
        elif isinstance(mda, bool) or not isinstance(mda, int | float) or not 50 <= mda <= 99.9:
            raise fail(
                mda_at, f"{_shown(mda)}: mda = true (95% confidence) or the confidence in "
                "percent, 50 to 99.9",
            )  # fmt: skip
    return TargetConfig(
        mtu=mtu,
        mda=None if mda is None else float(mda) / 100,
        query_type="A" if qtype is None else qtype.upper(),
        host=host,
        name=name,
        requests=tuple(dict.fromkeys(requests)),
        request_names=names,
        request_given={k: v for k, (v, _at) in given.items() if v is not None},
        control_name=control,
        flows=tuple(flows),
        expect=expect,
        rounds=number("rounds", int, 1, 1000, 5),
        interval_s=number("interval", float, 0.01, 60, 0.5),
        timeout_s=number("timeout", float, 0.05, 30, 2.0),
        max_ttl=number("max_ttl", int, 1, 255, 30),
        policy=policy or "on-change",
        family=family,
        labels=labels,
    )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _one_flow(spec: str) -> FlowSpec:
    flows = parse_flows(spec)
    if len(flows) != 1:
        raise UsageError(f"expect takes one flow per key, not {spec!r}")
    return flows[0]
