"""Reverse DNS of the addresses a trace sees: dnspython look-ups in background threads,
cached, each bounded by a timeout, so a slow resolver never holds up a trace."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any


def make_resolver(timeout_s: float, nameservers: list[str] | None, port: int) -> Any:
    """A dnspython resolver bounded by ``timeout_s``: the system's configuration, or the
    given name servers (the lab's, a test's). Raises what dnspython raises when the
    system has no usable configuration."""
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=nameservers is None)
    if nameservers is not None:
        resolver.nameservers = list(nameservers)
        resolver.port = port
    resolver.lifetime = timeout_s
    resolver.timeout = timeout_s
    return resolver


class ReverseNames:
    """Look up PTR names as addresses come in; read whatever has been resolved so far.

    ``submit`` never blocks (it may be called from the engine's callback); ``names``
    returns the answers found so far; ``settle`` waits a bounded time for the rest.
    The system resolver configuration (/etc/resolv.conf) is used unless ``nameservers``
    is given. A resolver that cannot be configured gives no names, never an error.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 1.0,
        workers: int = 8,
        nameservers: list[str] | None = None,
        port: int = 53,
    ) -> None:
        self.timeout_s = timeout_s
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._futures: dict[str, Future[str | None]] = {}
        self._resolver: Any = None
        try:
            self._resolver = make_resolver(timeout_s, nameservers, port)
        except Exception as exc:  # NoResolverConfiguration, an unreadable resolv.conf
            self.problem = f"reverse DNS is off: {exc}"
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rdns")

    def submit(self, address: str | None) -> None:
        """Start looking up ``address`` unless that was done before."""
        if address is None or self._resolver is None:
            return
        with self._lock:
            if address in self._futures:
                return
            self._futures[address] = self._pool.submit(self._lookup, address)

    def _lookup(self, address: str) -> str | None:
        import dns.exception
        import dns.resolver

        try:
            answer = self._resolver.resolve_address(address, lifetime=self.timeout_s)
        except (dns.exception.DNSException, OSError, ValueError):
            return None
        for rdata in answer:
            return str(rdata.target).rstrip(".") or None
        return None

    def names(self) -> dict[str, str]:
        """Address -> name for every look-up that has finished with a name."""
        with self._lock:
            done = [(a, f) for a, f in self._futures.items() if f.done()]
        return {a: name for a, f in done if (name := f.result()) is not None}

    def settle(self, timeout_s: float | None = None) -> dict[str, str]:
        """Wait up to ``timeout_s`` (default: one look-up timeout) for pending look-ups."""
        with self._lock:
            pending = [f for f in self._futures.values() if not f.done()]
        if pending:
            wait(pending, timeout=self.timeout_s if timeout_s is None else timeout_s)
        return self.names()

    def close(self) -> None:
        """Stop: unfinished look-ups are abandoned."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ReverseNames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
