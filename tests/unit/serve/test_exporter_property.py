"""A hypothesis property over raw HTTP requests to the exporter's server (serve/http.py
with the exporter's application, on loopback, probing a simulated network): whatever the
method, path, query, headers and framing, the answer is a status the exporter means
(never a 500) or a closed connection, and nothing is logged with a traceback."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reachtest.serve.http import make_server
from tests.unit.serve.test_exporter_http import SERVER, Factory, exporter

EXAMPLES = int(os.environ.get("REACHTEST_EXPORTER_EXAMPLES", "250"))
#: What the exporter may answer: served, refused for a reason, or too large.
MEANT = {200, 400, 401, 403, 404, 405, 408, 411, 413, 414, 417, 431, 501, 503, 505}

WORDS = ["", SERVER, "198.18.7.2", "203.0.113.9", "listed.example", "server", "::1",
         "[2001:db8::1]", "web", "quick", "nope", "%00", "%ff%fe", "%1b[2J", "a" * 300,
         "<b>evil</b>", "1e309", "nan", "-1", "0.5", "300", "x=y", "&&&", "%", "+", ";",
         "\u0430", "p\u0430ypal.example"]  # fmt: skip
PATHS = ["/probe", "/metrics", "/", "/report/1", "/report/1.json", "/report/x.y", "//probe",
         "/probe/../metrics", "*", "x"]  # fmt: skip
HEADERS = [
    "Content-Length: 0", "Content-Length: 5", "Content-Length: -1", "Content-Length: x",
    "Transfer-Encoding: chunked", "Transfer-Encoding: gzip", "Host: y",
    "Authorization: Basic !!!", "Accept: application/openmetrics-text",
    "X-Prometheus-Scrape-Timeout-Seconds: {w}", "X-Junk: {w}", "Expect: 100-continue",
    " folded", "NoColon", "Connection: keep-alive", "X-Big: " + "b" * 20000,
]  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(
        st.sampled_from(["GET"] * 8 + ["HEAD", "POST", "PUT", "OPTIONS", "G\x00T", "get"])
    )
    path = draw(st.sampled_from(PATHS))
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(["target", "module", "debug", "x", ""]),
                      st.sampled_from(WORDS)),
            max_size=14,
        )
    )  # fmt: skip
    query = "&".join(f"{k}={v}" for k, v in pairs)
    version = draw(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "HTTP/9", ""]))
    headers = [
        h.format(w=draw(st.sampled_from(WORDS)))
        for h in draw(st.lists(st.sampled_from(HEADERS), max_size=3))
    ]
    line = f"{method} {path}{'?' + query if query else ''} {version}".rstrip()
    head = "\r\n".join([line, "Host: x", "Connection: close", *headers]) + "\r\n\r\n"
    body = draw(st.sampled_from([b""] * 4 + [b"hello", b"0\r\n\r\n"]))
    return head.encode("utf-8", "surrogateescape") + body


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    app = exporter(Factory(), concurrency=4, queue=16)
    server, watchdog = make_server(("127.0.0.1", 0), app, threads=8, request_read_s=3)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server.bind_addr[1]
    finally:
        server.stop()
        thread.join(10)
        watchdog.close()


def answer(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed early: the server refused what it had read
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except ConnectionError:
            pass
        return got


def test_every_request_gets_a_meant_status_and_no_traceback(
    port: int, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(requests())
    def holds(raw: bytes) -> None:
        got = answer(port, raw)
        if got:
            assert got.startswith(b"HTTP/1."), (raw[:300], got[:300])
            if got.startswith(b"HTTP/1.1 100 "):  # Expect: 100-continue, then the answer
                got = got.split(b"\r\n\r\n", 1)[1]
            code = int(got.split(b" ", 2)[1])
            assert code in MEANT, (raw[:300], got[:500])
            seen[code] = seen.get(code, 0) + 1

    seen: dict[int, int] = {}
    holds()
    assert seen.get(200, 0) and seen.get(400, 0), seen  # served and refused both reached
    logged = caplog.text + capfd.readouterr().err
    assert "Traceback" not in logged, logged[-3000:]
