"""User spellings of flows and targets: ``tcp/443``, ``udp/53``, ``443``, ``https``, lists,
ranges, ``icmp``; host names, addresses and host files."""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Iterable

from reachtest.errors import UsageError
from reachtest.model import ICMP_FLOW, FlowSpec, Protocol

#: At most this many flows per run: a range is for a handful of ports, not a port scan.
MAX_FLOWS = 64

#: Well-known service names with their usual protocol, so ``dns`` means ``udp/53`` and a
#: machine without /etc/services still knows them. Other names go to getservbyname.
SERVICES: dict[str, tuple[Protocol, int]] = {
    "ftp": (Protocol.TCP, 21),
    "ssh": (Protocol.TCP, 22),
    "telnet": (Protocol.TCP, 23),
    "smtp": (Protocol.TCP, 25),
    "dns": (Protocol.UDP, 53),
    "domain": (Protocol.UDP, 53),
    "http": (Protocol.TCP, 80),
    "kerberos": (Protocol.UDP, 88),
    "pop3": (Protocol.TCP, 110),
    "ntp": (Protocol.UDP, 123),
    "imap": (Protocol.TCP, 143),
    "snmp": (Protocol.UDP, 161),
    "bgp": (Protocol.TCP, 179),
    "ldap": (Protocol.TCP, 389),
    "https": (Protocol.TCP, 443),
    "smb": (Protocol.TCP, 445),
    "ike": (Protocol.UDP, 500),
    "syslog": (Protocol.UDP, 514),
    "submission": (Protocol.TCP, 587),
    "ldaps": (Protocol.TCP, 636),
    "dot": (Protocol.TCP, 853),
    "imaps": (Protocol.TCP, 993),
    "pop3s": (Protocol.TCP, 995),
    "openvpn": (Protocol.UDP, 1194),
    "mysql": (Protocol.TCP, 3306),
    "rdp": (Protocol.TCP, 3389),
    "sip": (Protocol.UDP, 5060),
    "postgres": (Protocol.TCP, 5432),
    "postgresql": (Protocol.TCP, 5432),
    "redis": (Protocol.TCP, 6379),
    "http-alt": (Protocol.TCP, 8080),
    "wireguard": (Protocol.UDP, 51820),
}


def _port(word: str, protocol: Protocol | None, spelling: str) -> tuple[Protocol, int]:
    """(protocol, port) for a number or a service name; ``protocol`` None: the name's own."""
    if word.isdigit():
        port = int(word)
        if not 1 <= port <= 65535:
            raise UsageError(f"bad port {spelling!r}: a port is 1..65535, not {port}")
        return protocol or Protocol.TCP, port
    known = SERVICES.get(word)
    if known is not None:
        return protocol or known[0], known[1]
    try:
        port = socket.getservbyname(word, str(protocol or Protocol.TCP))
    except OSError:
        raise UsageError(
            f"bad port {spelling!r}: {word!r} is neither a port number nor a service name "
            "(e.g. https, dns, ssh)"
        ) from None
    return protocol or Protocol.TCP, port


def _one(word: str, protocol: Protocol | None, spelling: str) -> list[FlowSpec]:
    """The flows of one list element: a port, a service name or a range ``LOW-HIGH``."""
    low_text, dash, high_text = word.partition("-")
    if dash and low_text.isdigit() and high_text.isdigit():
        proto, low = _port(low_text, protocol, spelling)
        high = _port(high_text, protocol, spelling)[1]
        if high < low:
            raise UsageError(f"bad port range {spelling!r}: {low} is above {high}")
        if high - low + 1 > MAX_FLOWS:
            raise UsageError(
                f"bad port range {spelling!r}: {high - low + 1} ports, at most {MAX_FLOWS} per run"
            )
        return [FlowSpec(protocol=proto, port=p) for p in range(low, high + 1)]
    proto, port = _port(word, protocol, spelling)
    return [FlowSpec(protocol=proto, port=port)]


def parse_flows(text: str) -> list[FlowSpec]:
    """The flows of one ``-p`` value: ``icmp``, ``tcp/443``, ``udp/53``, ``443`` (TCP),
    ``https`` or ``dns`` (the service's usual protocol), ``tcp/8000-8010``, and lists
    ``tcp/80,443,udp/53,123`` where a bare element keeps the protocol before it."""
    flows: list[FlowSpec] = []
    protocol: Protocol | None = None
    for element in text.split(","):
        word = element.strip().lower()
        if not word:
            continue
        if word == "icmp":
            flows.append(ICMP_FLOW)
            continue
        prefix, slash, rest = word.partition("/")
        if slash:
            if prefix not in ("tcp", "udp"):
                raise UsageError(f"bad flow {element.strip()!r}: the protocol is icmp, tcp or udp")
            protocol, word = Protocol(prefix), rest.strip()
            if not word:
                raise UsageError(f"bad flow {element.strip()!r}: a port is missing after {prefix}/")
        flows += _one(word, protocol, element.strip())
    if not flows:
        raise UsageError(f"bad flow {text!r}: no port in it")
    return flows


def parse_flow(text: str) -> FlowSpec:
    """Exactly one flow (see ``parse_flows``)."""
    flows = parse_flows(text)
    if len(flows) != 1:
        raise UsageError(f"bad flow {text!r}: one flow expected, not {len(flows)}")
    return flows[0]


def flow_list(specs: Iterable[str], icmp: bool = True) -> tuple[FlowSpec, ...]:
    """Every flow of the ``-p`` values, ICMP first unless left out, each once, capped."""
    flows = [flow for spec in specs for flow in parse_flows(spec)]
    if ICMP_FLOW in flows or icmp:  # ICMP first: the reference the others are read against
        flows = [ICMP_FLOW, *(f for f in flows if f != ICMP_FLOW)]
    unique = tuple(dict.fromkeys(flows))
    if not unique:
        raise UsageError("nothing to trace: give -p tcp/PORT or udp/PORT, or drop --no-icmp")
    if len(unique) > MAX_FLOWS:
        raise UsageError(f"too many flows ({len(unique)}): at most {MAX_FLOWS} per run")
    return unique


def read_host_file(path: str) -> list[str]:
    """Host names from a file like mtr's ``-F``: whitespace-separated, ``#`` starts a
    comment; ``-`` reads standard input."""
    from reachtest.inputs import MIB, read_text

    text = read_text(path, "host file", 64 * MIB)
    if "\x00" in text:
        raise UsageError(f"host file {path!r} holds a NUL byte: is it a text file of names?")
    hosts = [w for line in text.splitlines() for w in line.partition("#")[0].split()]
    if not hosts:
        raise UsageError(f"host file {path!r} names no host")
    return hosts


_LOOKS_NUMERIC = re.compile(r"[0-9.]+|.*:.*")
_LABEL = re.compile(r"[\w-]+")


def normal_host(text: str) -> str:
    """``text`` as one host is spelled once: NFKC (fullwidth and other compatibility
    forms become the plain letters IDNA would map them to), without surrounding space."""
    return unicodedata.normalize("NFKC", text).strip()


def host_key(text: str) -> str:
    """What two spellings of one host have in common: an address in its canonical form,
    a name normalised (NFKC), case-folded, without the root's dot."""
    normal = normal_host(text)
    try:
        return str(ipaddress.ip_address(normal.strip("[]")))
    except ValueError:
        return normal.casefold().rstrip(".")


def _scripts(label: str) -> list[str]:
    """The scripts of the letters in ``label`` (LATIN, CYRILLIC, ...), in order met."""
    found: dict[str, None] = {}
    for char in label:
        if char.isalpha():
            found[unicodedata.name(char, "UNKNOWN").split(" ")[0]] = None
    return list(found)


def host_name_problem(text: str) -> str | None:
    """Why ``text`` (no address) cannot be a host name, before asking the resolver:
    ``256.1.1.1`` and ``2001:db8::g`` are broken addresses, not names to look up; a part
    that mixes scripts (a Cyrillic letter among Latin ones) is a look-alike."""
    if _LOOKS_NUMERIC.fullmatch(text):
        return "a broken IPv4 or IPv6 address"
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return "a name is 1 to 253 characters"
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            return "letters, digits, - and _ between the dots"
        try:
            encoded = label.encode("idna")
        except UnicodeError:
            return "a part between dots is at most 63 characters (in IDNA)"
        if len(encoded) > 63:
            return "a part between dots is at most 63 characters"
        scripts = _scripts(label)
        if len(scripts) > 1:
            odd = next(c for c in label if c.isalpha() and scripts[1] in unicodedata.name(c, ""))
            return (
                f"{label!r} mixes {scripts[0].title()} and {scripts[1].title()} letters "
                f"({odd!r} is {unicodedata.name(odd, '?')}): a look-alike name?"
            )
    return None


def resolve_target(text: str, family: int | None = None) -> str:
    """An address for ``text``: itself when it is one, else the first from the resolver."""
    text = normal_host(text)
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        if family is not None and address.version != family:
            raise UsageError(f"{text} is not an IPv{family} address")
        return str(address)
    problem = host_name_problem(text)
    if problem:
        raise UsageError(f"{text!r} is not a host name or address: {problem}")
    af = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family or 0, socket.AF_UNSPEC)
    try:
        infos = socket.getaddrinfo(text, None, af, socket.SOCK_RAW)
    except socket.gaierror as exc:
        raise UsageError(f"unknown host {text!r}: {exc.strerror}") from None
    except UnicodeError as exc:  # the IDNA codec refused the name
        raise UsageError(f"{text!r} is not a host name: {exc}") from None
    if not infos:
        raise UsageError(f"unknown host {text!r}")
    return str(infos[0][4][0])


#: A request flow: ``tls/443`` or ``http/80`` (the request after the handshake), or
#: ``dns/53`` (a query).
_REQUEST_FLOW = re.compile(r"(tls|http|dns)/(\d{1,5})")
#: The control name of request flows: a name no filter has a reason to block.
DEFAULT_CONTROL = "example.com"


def request_flow(spec: str) -> tuple[str, int] | None:
    """(kind, port) of a request flow spelled ``tls/PORT``, ``http/PORT`` or ``dns/PORT``;
    None for any other flow; UsageError for a malformed one."""
    text = spec.strip().lower()
    found = _REQUEST_FLOW.fullmatch(text)
    if found is None:
        if text.startswith(("tls/", "http/", "dns/")):
            raise UsageError(
                f"{spec!r}: a request flow is tls/PORT, http/PORT or dns/PORT, one each"
            )
        return None
    port = int(found.group(2))
    if not 1 <= port <= 65535:
        raise UsageError(f"{spec!r}: the port must be 1 to 65535")
    return found.group(1), port


def contrast_flow(kind: str, port: int) -> str:
    """The flow a request flow is contrasted with: its port's SYN (``tcp/PORT``), or for
    DNS its port's UDP probe (``udp/PORT``)."""
    return f"{'udp' if kind == 'dns' else 'tcp'}/{port}"


def request_name(
    kind: str,
    port: int,
    host: str,
    sni: str | None,
    host_header: str | None,
    qname: str | None = None,
) -> str:
    """The name a request flow asks for: ``sni`` (TLS), ``host_header`` (HTTP, else
    ``sni``) or ``qname`` (DNS), else the host itself when it is a name; UsageError for
    an address without one, or a name that cannot be sent."""
    from reachtest.packet.requests import name_problem

    name = {"tls": sni, "http": host_header or sni, "dns": qname}[kind]
    if name is None:
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            name = host.rstrip(".")
        else:
            option, key = {
                "tls": ("--sni", "sni"), "http": ("--host-header", "host_header"),
                "dns": ("--qname", "qname"),
            }[kind]  # fmt: skip
            raise UsageError(
                f"{kind}/{port} to {host}: give the name to ask for ({option} NAME, or {key}"
                " in a configuration): the host is an address"
            ) from None
    problem = name_problem(name)
    if problem is not None:
        raise UsageError(f"{kind}/{port}: {name!r} cannot be asked for: {problem}")
    return name
