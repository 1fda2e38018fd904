"""Who owns each hop (``-z/--aslookup``): the origin AS, its prefix and its name per
address, the way ``mtr -z`` finds them: DNS TXT look-ups in Team Cymru's zones
(``origin.asn.cymru.com`` for IPv4, ``origin6.asn.cymru.com`` for IPv6, the AS name in
``asn.cymru.com``), in background threads, cached, each bounded by a timeout, so a slow
resolver never holds up a trace; or, for sites without DNS egress, from a local
prefix-to-AS file (longest prefix wins).

A prefix file has one prefix a line: ``PREFIX ASN [NAME ...]`` (``198.51.100.0/24 64500
ExampleNet``; ``AS64500`` is read too) or CAIDA's pfx2as columns (``198.51.100.0 24
64500``); ``#`` starts a comment.
"""

from __future__ import annotations

import ipaddress
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reachtest.errors import UsageError
from reachtest.names import make_resolver

ORIGIN_ZONE = "origin.asn.cymru.com"
ORIGIN6_ZONE = "origin6.asn.cymru.com"
NAME_ZONE = "asn.cymru.com"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Owner:
    """The AS an address is announced by: its number, the prefix, the AS's name (None
    when not known) and where it was found (``dns`` or ``file``)."""

    asn: int
    prefix: str | None
    name: str | None
    source: str

    def words(self) -> str:
        """``AS64500 EXAMPLENET``, as a finding names it: the AS's handle, the part of
        Team Cymru's name before " - " (the description and country stay in the record)."""
        handle = self.name.split(" - ", 1)[0].strip() if self.name else ""
        return f"AS{self.asn}" + (f" {handle}" if handle else "")

    def record(self) -> dict[str, Any]:
        return {"asn": self.asn, "prefix": self.prefix, "name": self.name, "source": self.source}


def origin_name(address: str) -> str:
    """The TXT name asked for an address: reversed octets (IPv4) or nibbles (IPv6) under
    the origin zone, as mtr and Team Cymru's documentation build it."""
    ip = ipaddress.ip_address(address)
    reverse = ip.reverse_pointer  # 4.3.2.1.in-addr.arpa / b.a.9.8....ip6.arpa
    labels = reverse.rsplit(".", 2)[0]
    return f"{labels}.{ORIGIN_ZONE if ip.version == 4 else ORIGIN6_ZONE}"


def _fields(text: str) -> list[str]:
    return [part.strip() for part in text.split("|")]


def parse_origin(text: str) -> tuple[int, str | None] | None:
    """(the first origin AS, the prefix) of an origin TXT answer such as ``"64500 |
    198.51.100.0/24 | ZZ | arin | 2001-01-01"`` (several ASes may lead: the first);
    None when it cannot be read."""
    fields = _fields(text)
    numbers = fields[0].split() if fields else []
    if not numbers or not numbers[0].isdigit():
        return None
    prefix = fields[1] if len(fields) > 1 and fields[1] else None
    return int(numbers[0]), prefix


def parse_name(text: str) -> str | None:
    """The AS's name of an ``AS64500.asn.cymru.com`` TXT answer, its last field (``"64500
    | ZZ | arin | 2001-01-01 | EXAMPLENET - Example Net, ZZ"``)."""
    fields = _fields(text)
    return fields[4] or None if len(fields) >= 5 else None


class PrefixFile:
    """A local prefix-to-AS table, read once; ``owner`` finds the longest prefix."""

    def __init__(self, entries: list[tuple[Network, int, str | None]]) -> None:
        self.entries = sorted(entries, key=lambda e: -e[0].prefixlen)

    @classmethod
    def load(cls, path: Path) -> PrefixFile:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--as-file {path}: cannot read it ({exc})") from None
        entries: list[tuple[Network, int, str | None]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            try:
                if "/" in parts[0]:
                    network = ipaddress.ip_network(parts[0], strict=False)
                    asn_text, rest = parts[1], parts[2:]
                else:  # CAIDA pfx2as: address, length, AS (or AS_AS / AS,AS sets)
                    network = ipaddress.ip_network(f"{parts[0]}/{parts[1]}", strict=False)
                    asn_text, rest = parts[2], parts[3:]
                number_text = asn_text.upper().removeprefix("AS").replace("_", ",")
                if not number_text.split(",")[0].isdigit():
                    raise ValueError(f"{asn_text!r} is no AS number")
                asn = int(number_text.split(",")[0])
                if not 0 <= asn < 2**32:
                    raise ValueError(f"AS number {asn} out of range")
            except (IndexError, ValueError) as exc:
                raise UsageError(
                    f"--as-file {path}, line {number}: want 'PREFIX ASN [NAME]' "
                    f"({str(exc) or 'missing fields'})"
                ) from None
            entries.append((network, asn, " ".join(rest) or None))
        return cls(entries)

    def owner(self, address: str) -> Owner | None:
        ip = ipaddress.ip_address(address)
        for network, asn, name in self.entries:
            if ip.version == network.version and ip in network:
                return Owner(asn=asn, prefix=str(network), name=name, source="file")
        return None


class AsLookup:
    """Look up the owners of addresses as they come in; read what has been found so far.

    As ``names.ReverseNames``: ``submit`` never blocks, ``owners`` returns the answers so
    far, ``settle`` waits a bounded time for the rest. With ``prefix_file`` the file
    answers and no DNS query is sent; else the system resolver (or ``nameservers``).
    """

    def __init__(
        self,
        *,
        timeout_s: float = 2.0,
        workers: int = 4,
        prefix_file: PrefixFile | None = None,
        nameservers: list[str] | None = None,
        port: int = 53,
    ) -> None:
        self.timeout_s = timeout_s
        self.prefix_file = prefix_file
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._futures: dict[str, Future[Owner | None]] = {}
        self._names: dict[int, Future[str | None]] = {}
        self._resolver: Any = None
        if prefix_file is None:
            try:
                self._resolver = make_resolver(timeout_s, nameservers, port)
            except Exception as exc:  # NoResolverConfiguration, an unreadable resolv.conf
                self.problem = f"AS look-ups are off: {exc}"
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asn")

    def submit(self, address: str | None) -> None:
        """Start finding the owner of ``address`` unless that was done before."""
        if address is None or (self._resolver is None and self.prefix_file is None):
            return
        with self._lock:
            if address in self._futures:
                return
            if self.prefix_file is not None:
                done: Future[Owner | None] = Future()
                done.set_result(self.prefix_file.owner(address))
                self._futures[address] = done
                return
            self._futures[address] = self._pool.submit(self._lookup, address)

    def _txt(self, name: str) -> list[str]:
        import dns.exception

        try:
            answer = self._resolver.resolve(name, "TXT", lifetime=self.timeout_s)
        except (dns.exception.DNSException, OSError, ValueError):
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    def _lookup(self, address: str) -> Owner | None:
        found = [o for text in self._txt(origin_name(address)) if (o := parse_origin(text))]
        if not found:
            return None
        asn, prefix = min(found, key=lambda f: _prefix_order(f[1]))  # the most specific
        with self._lock:
            name_future = self._names.get(asn)
            if name_future is None:
                name_future = self._names[asn] = Future()
                mine = True
            else:
                mine = False
        if mine:
            names: list[str] = []
            try:
                names = [n for t in self._txt(f"AS{asn}.{NAME_ZONE}") if (n := parse_name(t))]
            finally:
                name_future.set_result(names[0] if names else None)
        try:
            name = name_future.result(timeout=2 * self.timeout_s)
        except TimeoutError:
            name = None
        return Owner(asn=asn, prefix=prefix, name=name, source="dns")

    def owners(self) -> dict[str, Owner]:
        """Address -> owner for every look-up that has finished with an answer."""
        with self._lock:
            done = [(a, f) for a, f in self._futures.items() if f.done()]
        return {
            a: o
            for a, f in done
            if not f.cancelled() and f.exception() is None and (o := f.result()) is not None
        }

    def settle(self, timeout_s: float | None = None) -> dict[str, Owner]:
        """Wait up to ``timeout_s`` (default: two look-up timeouts, origin then name)."""
        with self._lock:
            pending = [f for f in self._futures.values() if not f.done()]
        if pending:
            wait(pending, timeout=2 * self.timeout_s if timeout_s is None else timeout_s)
        return self.owners()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _prefix_order(prefix: str | None) -> int:
    """Sort key: longer prefixes first (the most specific announcement wins)."""
    if prefix is None:
        return 0
    try:
        return -ipaddress.ip_network(prefix, strict=False).prefixlen
    except ValueError:
        return 0
