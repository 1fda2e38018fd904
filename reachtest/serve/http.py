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
import logging
import socket
import ssl
import threading
import time
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

log = logging.getLogger("reachtest.exporter")

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
    (made here, without blocking, and its request read here into the connection's buffer),
    it waits in ``Gate``, at most ``REQUEST_READ_S`` from its first byte. Slowloris and
    idle clients, over HTTP or TLS, hold no worker; the watchdog bounds what is left (a
    body, a client that stops reading the answer)."""

    gate: Gate

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """cheroot's messages as one escaped log line each: the exception's type and text
        instead of a traceback (a client that hangs up while it is answered is the
        network's doing, not a bug to dump)."""
        import sys

        from reachtest.report.escape import for_terminal

        if traceback:
            kind, error, _ = sys.exc_info()
            if kind is not None:
                msg = f"{msg} ({kind.__name__}: {error})"
        log.log(level if level >= logging.WARNING else logging.INFO, "%s", for_terminal(msg))

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
            try:
                state = _head_state(conn)
            except Exception as exc:  # a connection in a state not foreseen: it goes
                log.warning("closing a connection that failed in the gate: %r", exc)
                state, ends = "wait", 0.0
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
        trimmed = time.monotonic()
        while not self._stop.wait(self.POLL_S):
            with self._lock:
                waiting = list(self._waiting)
            for conn in waiting:
                self._check(conn)
            if time.monotonic() - trimmed > TRIM_EVERY_S:
                trimmed = time.monotonic()
                _trim()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            left, self._waiting = list(self._waiting), {}
        for conn in left:
            with contextlib.suppress(OSError):
                conn.close()


#: How often the allocator is asked to give free memory back (a burst of connections,
#: each with OpenSSL's buffers, otherwise leaves the process some MB larger for good).
TRIM_EVERY_S = 10.0


def _trim() -> None:
    """glibc's ``malloc_trim(0)``: free heap pages back to the system (a C library
    without it: nothing)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _head_state(conn: Any) -> str:
    """``ready`` when a worker can read the request without waiting for the client (the
    head is in, or the connection is closed or broken); ``wait`` otherwise. Plain HTTP is
    looked at with MSG_PEEK; TLS is read here, without blocking, into cheroot's own
    read-ahead buffer of the connection (``rfile``), where the worker then finds it."""
    sock, rfile = conn.socket, conn.rfile
    if isinstance(sock, ssl.SSLSocket):
        return _tls_head_state(conn, sock, rfile)
    buffered = bytes(rfile._read_buf[rfile._read_pos :])
    if _complete(buffered):
        return "ready"
    try:
        head = sock.recv(MAX_HEADER_BYTES + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "wait"
    except OSError:
        return "ready"
    return "ready" if not head or _complete(buffered + head) else "wait"


def _complete(head: bytes) -> bool:
    """A whole request head (or more than one may be: the worker refuses it)."""
    return b"\r\n\r\n" in head or len(head) > MAX_HEADER_BYTES


def _tls_head_state(conn: Any, sock: ssl.SSLSocket, rfile: Any) -> str:
    try:
        sock.setblocking(False)
        if not getattr(conn, "handshaken", False):
            sock.do_handshake()
            conn.handshaken = True
        while True:
            buffered = bytes(rfile._read_buf[rfile._read_pos :])
            if _complete(buffered):
                return "ready"
            chunk = sock.recv(MAX_HEADER_BYTES + 1)
            if not chunk:
                return "ready"  # closed: the worker ends it
            rfile._read_buf, rfile._read_pos = buffered + chunk, 0
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return "wait"
    except (OSError, ValueError):
        return "ready"  # the worker reads the failure and closes
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(SOCKET_TIMEOUT_S)


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
