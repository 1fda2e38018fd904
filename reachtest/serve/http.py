"""The exporter's HTTP server: cheroot, hardened against the network it listens on.

- Request line and headers are bounded (``MAX_HEADER_BYTES``), bodies too (GET only).
- The whole request (TLS handshake, request line, headers) must arrive within
  ``REQUEST_READ_S``: a watchdog shuts the connection down otherwise, so a client that
  sends one byte every few seconds (slowloris) holds a worker for seconds, not forever.
- The TLS handshake is made by the worker that reads the request, not by the thread
  that accepts connections (cheroot's built-in adapter makes it there, so one idle
  connection stalled every other client for the socket timeout). A new connection waits
  in cheroot's selector until it sends something: one that sends nothing holds no
  thread at all, and is closed after the socket timeout.
- Ambiguous framing is refused with 400: a header that may appear once (Content-Length,
  Transfer-Encoding, Host, Authorization) given twice, or Content-Length together with
  Transfer-Encoding (request smuggling).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

#: Request line and headers together, at most (blackbox_exporter's Go server: 1 MiB;
#: a scrape sends well under 1 KiB).
MAX_HEADER_BYTES = 16 * 1024
#: A GET carries no body; anything larger than this is refused.
MAX_BODY_BYTES = 4 * 1024
#: Seconds for the whole request to arrive (handshake included), from its first byte.
REQUEST_READ_S = 10.0
#: A blocking read or write on a connection gives up after this many seconds (whole).
SOCKET_TIMEOUT_S = 10
#: Headers a request may carry once: two of them make its framing or identity ambiguous.
SINGLE = frozenset({b"Content-Length", b"Transfer-Encoding", b"Host", b"Authorization"})


class _Once(dict[bytes, bytes]):
    """A header dict that refuses a second value for a header in ``SINGLE``."""

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if key in SINGLE and key in self:
            raise ValueError(f"{key.decode('latin-1')} given twice")
        super().__setitem__(key, value)


class StrictHeaderReader(cheroot_server.HeaderReader):
    """cheroot's header reader, refusing ambiguous framing (ValueError: cheroot answers
    400 with the message)."""

    def __call__(self, rfile: Any, hdict: dict[bytes, bytes] | None = None) -> Any:
        headers = super().__call__(rfile, _Once())
        if b"Content-Length" in headers and b"Transfer-Encoding" in headers:
            raise ValueError("both Content-Length and Transfer-Encoding")
        if hdict is None:
            return headers
        hdict.update(headers)
        return hdict


class StrictRequest(cheroot_server.HTTPRequest):
    header_reader = StrictHeaderReader()


class Watchdog:
    """Shuts down connections whose request has not arrived whole in time."""

    def __init__(self, limit_s: float = REQUEST_READ_S) -> None:
        self.limit_s = limit_s
        self._reading: dict[int, tuple[socket.socket, float]] = {}  # thread -> socket, end
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="request-watchdog", daemon=True)
        self._thread.start()
        self.cut = 0  # connections shut down, for tests and logs
        self.gate: Gate | None = None

    def reading(self, sock: socket.socket) -> None:
        """The calling worker starts reading a request from ``sock``."""
        with self._lock:
            self._reading[threading.get_ident()] = (sock, time.monotonic() + self.limit_s)

    def read(self) -> None:
        """The calling worker has the whole request (or is done with the connection)."""
        with self._lock:
            self._reading.pop(threading.get_ident(), None)

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [s for s, end in self._reading.values() if end < now]
            for sock in late:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                self.cut += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self.gate is not None:
            self.gate.close()


def _guarded(watchdog: Watchdog) -> type[cheroot_server.HTTPConnection]:
    class GuardedConnection(cheroot_server.HTTPConnection):
        RequestHandlerClass = StrictRequest

        def communicate(self) -> Any:
            watchdog.reading(self.socket)
            try:
                return super().communicate()  # type: ignore[no-untyped-call]
            finally:
                watchdog.read()

    return GuardedConnection


class Server(wsgi.Server):
    """cheroot's server, except that a connection goes to a worker only once its request
    head is in: a new connection waits in cheroot's selector until it has something to
    read (cheroot hands it to a worker at once, which then waits up to the socket timeout:
    8 idle connections held every worker); then, while its request line and headers are
    incomplete (plain HTTP: looked at with MSG_PEEK) or its TLS handshake is unfinished
    (made here, without blocking), it waits in ``Gate``, at most ``REQUEST_READ_S`` from
    its first byte. Slowloris and idle clients hold no worker; a TLS client that has
    finished its handshake and then sends slowly holds one for ``REQUEST_READ_S`` at most
    (the watchdog)."""

    gate: Gate

    def process_conn(self, conn: Any) -> None:
        if not getattr(conn, "waited", False):
            conn.waited = True
            self._connections.put(conn)  # type: ignore[attr-defined]  # waits till readable
            return
        if getattr(conn, "ready_head", False):
            conn.ready_head = False  # the next request on this connection is gated again
            super().process_conn(conn)
            return
        self.gate.admit(conn)

    def put_conn(self, conn: Any) -> None:
        conn.waited = True  # kept alive: back to the selector, then through the gate
        super().put_conn(conn)


class Gate:
    """Connections whose request head is not in yet, looked at every ``POLL_S``."""

    POLL_S = 0.05

    def __init__(self, server: Server, limit_s: float) -> None:
        self.server = server
        self.limit_s = limit_s
        self._waiting: dict[Any, float] = {}  # connection -> when its wait ends
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="request-gate", daemon=True)
        self._thread.start()
        self.closed = 0  # connections closed for being too slow (tests, logs)

    def admit(self, conn: Any) -> None:
        with self._lock:
            self._waiting.setdefault(conn, time.monotonic() + self.limit_s)
        self._check(conn)

    def _check(self, conn: Any) -> None:
        """Dispatch ``conn`` when its head is in, close it when its time is up. Under the
        lock (the selector and the poller may look at once); nothing here blocks."""
        with self._lock:
            ends = self._waiting.get(conn)
            if ends is None:
                return  # dispatched or closed meanwhile
            state = _head_state(conn)
            if state == "wait" and time.monotonic() < ends:
                return
            del self._waiting[conn]
        if state == "wait":
            self.closed += 1
            with contextlib.suppress(OSError):
                conn.close()
            return
        conn.ready_head = True  # complete, closed or broken: the worker answers or ends it
        self.server.process_conn(conn)

    def _poll(self) -> None:
        while not self._stop.wait(self.POLL_S):
            with self._lock:
                waiting = list(self._waiting)
            for conn in waiting:
                self._check(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            left, self._waiting = list(self._waiting), {}
        for conn in left:
            with contextlib.suppress(OSError):
                conn.close()


def _head_state(conn: Any) -> str:
    """``ready`` when a worker can read the request without waiting for the client (the
    head is in, or the connection is closed or broken); ``wait`` otherwise."""
    sock = conn.socket
    if conn.rfile.has_data():
        return "ready"
    if isinstance(sock, ssl.SSLSocket):
        if getattr(conn, "handshaken", False):
            return "ready"  # the watchdog bounds the rest
        sock.setblocking(False)
        try:
            sock.do_handshake()
            conn.handshaken = True
            return "ready"
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return "wait"
        except (OSError, ValueError):
            return "ready"  # the worker reads the failure and closes
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(SOCKET_TIMEOUT_S)
    try:
        head = sock.recv(MAX_HEADER_BYTES + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "wait"
    except OSError:
        return "ready"
    if not head or b"\r\n\r\n" in head or len(head) > MAX_HEADER_BYTES:
        return "ready"
    return "wait"


class LazyTLSAdapter(BuiltinSSLAdapter):
    """TLS whose handshake happens at the first read, in the worker (see the module)."""

    def wrap(self, sock: socket.socket) -> tuple[Any, dict[str, str]]:
        wrapped = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
        return wrapped, {"wsgi.url_scheme": "https", "HTTPS": "on"}


def make_server(
    bind: tuple[str, int],
    app: Any,
    *,
    threads: int,
    tls_context: Any | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    request_read_s: float = REQUEST_READ_S,
) -> tuple[wsgi.Server, Watchdog]:
    """The exporter's server for the WSGI ``app`` (and its watchdog, to close after)."""
    watchdog = Watchdog(request_read_s)

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        watchdog.read()  # the request is in: what the application takes has its own bound
        return app(environ, start_response)

    server = Server(
        bind, application, numthreads=threads, server_name="reachtest",
        request_queue_size=64, timeout=SOCKET_TIMEOUT_S, shutdown_timeout=2,
    )  # fmt: skip
    server.gate = watchdog.gate = Gate(server, request_read_s)
    server.max_request_header_size = MAX_HEADER_BYTES
    server.max_request_body_size = MAX_BODY_BYTES
    server.ConnectionClass = _guarded(watchdog)
    if tls_context is not None:
        adapter = LazyTLSAdapter(cert_file, key_file)
        adapter.context = tls_context
        server.ssl_adapter = adapter
    return server, watchdog
