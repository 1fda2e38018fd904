"""The exporter against a hostile network, on loopback (the server of `reachtest
exporter`, cheroot hardened by serve/http.py, probing a simulated network): idle TLS
connections, slowloris, oversized headers, ambiguous framing, malformed queries, bad
logins, and a stop with probes running and queued. Each case failed before the fix
(issue: 30 s stalls per idle TLS connection, /metrics unanswered, 120 MB kept, ...)."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from reachtest.schedule.install import EXPORTER_ENVIRONMENT
from reachtest.serve import http
from reachtest.serve.http import make_server
from reachtest.serve.webconfig import BasicAuth, WebConfig, ssl_context
from tests.unit.serve.test_exporter_http import SERVER, Factory, exporter
from tests.unit.serve.test_webconfig import certificate

#: A scrape must answer within this while the attack goes on (Prometheus' default 10 s).
SCRAPE_TIMEOUT_S = 5.0


@contextlib.contextmanager
def serving(
    app: Any, tls: tuple[Path, Path] | None = None, read_s: float = 2.0
) -> Iterator[tuple[str, int, http.Watchdog]]:
    context = None
    if tls is not None:
        context = ssl_context(WebConfig(cert_file=tls[0], key_file=tls[1]))
    server, watchdog = make_server(
        ("127.0.0.1", 0), app, threads=8, tls_context=context,
        cert_file=str(tls[0]) if tls else None, key_file=str(tls[1]) if tls else None,
        request_read_s=read_s,
    )  # fmt: skip
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.bind_addr[1], watchdog
    finally:
        began = time.monotonic()
        server.stop()
        thread.join(10)
        watchdog.close()
        assert time.monotonic() - began < 8, "the server took long to stop"


def request(
    port: int,
    raw: bytes,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = SCRAPE_TIMEOUT_S,
) -> bytes:
    """Send ``raw`` on a new connection; everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as plain:
        sock: Any = tls.wrap_socket(plain, server_hostname="127.0.0.1") if tls else plain
        with contextlib.suppress(ConnectionError):  # the server may close before all is sent
            sock.sendall(raw)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def get(port: int, target: str, tls: ssl.SSLContext | None = None, extra: str = "") -> bytes:
    return request(
        port,
        f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode(),
        tls,
    )


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def timed(call: Any) -> tuple[Any, float]:
    began = time.monotonic()
    return call(), time.monotonic() - began


def test_idle_tls_connections_stall_no_scrape(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    trusting = ssl.create_default_context(cafile=str(cert))
    with serving(exporter(Factory()), tls=(cert, key), read_s=30) as (_, port, _):
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        try:
            time.sleep(0.3)
            answer, took = timed(lambda: get(port, "/metrics", trusting))
        finally:
            for sock in idle:
                sock.close()
    assert status(answer) == 200 and took < 2, (took, answer[:200])


@pytest.mark.parametrize("over_tls", [False, True])
def test_slowloris_is_cut_off_and_scrapes_still_answer(tmp_path: Path, over_tls: bool) -> None:
    """30 clients each sending a request line and then a byte a second (after a finished
    handshake, over TLS) hold no worker: scrapes answer at once, and the slow ones are
    closed when their 2 s are up."""
    cert, key = certificate(tmp_path)
    trusting = ssl.create_default_context(cafile=str(cert)) if over_tls else None
    tls = (cert, key) if over_tls else None
    with serving(exporter(Factory()), tls=tls, read_s=2.0) as (_, port, watchdog):
        slow: list[Any] = []
        for _ in range(30):
            plain = socket.create_connection(("127.0.0.1", port))
            sock = trusting.wrap_socket(plain, server_hostname="127.0.0.1") if trusting else plain
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            slow.append(sock)
        try:
            began = time.monotonic()
            closed: set[int] = set()
            while time.monotonic() - began < 6 and len(closed) < len(slow):
                for i, sock in enumerate(slow):  # one byte a second: never a whole request
                    if i in closed:
                        continue
                    try:
                        sock.sendall(b"X")
                    except OSError:
                        closed.add(i)
                answer, took = timed(lambda: get(port, "/metrics", trusting))
                assert status(answer) == 200 and took < 2, (took, answer[:200])
                time.sleep(1)
            assert watchdog.gate is not None
            assert watchdog.gate.closed == len(slow), watchdog.gate.closed  # no worker held
            assert watchdog.cut == 0
        finally:
            for sock in slow:
                sock.close()


def test_oversized_headers_and_request_lines_are_refused() -> None:
    with serving(exporter(Factory())) as (_, port, _):
        huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: " + b"a" * (20 * 2**20)
        answer = request(port, huge + b"\r\n\r\n")
        assert status(answer) in (400, 413, 431) or answer == b"", answer[:200]
        line = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n"
        assert status(request(port, line)) in (400, 413, 414, 0)
        assert status(get(port, "/metrics")) == 200


@pytest.mark.parametrize(
    "headers",
    [
        "Content-Length: 0\r\nContent-Length: 5\r\n",
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Host: y\r\n",  # a second Host
    ],
)
def test_ambiguous_framing_is_a_400(headers: str) -> None:
    with serving(exporter(Factory())) as (_, port, _):
        answer = get(port, "/metrics", extra=headers)
    assert status(answer) == 400, answer[:300]


@pytest.mark.parametrize(
    "query",
    [
        "&".join(f"a{i}=1" for i in range(30)) + f"&target={SERVER}&module=web",
        "target=198.18.6.2%00&module=web",
        "target=%1b%5b2J&module=web",
        "target=" + "a" * 5000 + "&module=web",
        "target=%ff%fe%fd&module=web",
        "module=web&target=[::1%25eth0]",
    ],
)
def test_malformed_queries_are_a_400_never_a_500(
    query: str, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(exporter(Factory())) as (_, port, _):
        answer = get(port, f"/probe?{query}")
    assert status(answer) in (200, 400, 403), answer[:300]
    assert "Traceback" not in caplog.text


def test_an_unknown_user_costs_the_bcrypt_check_of_a_known_one() -> None:
    def app(environ: object, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]

    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=11))
    auth = BasicAuth(app, {"prometheus": hashed})

    def login(user: str, password: str) -> float:
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        began = time.monotonic()
        assert not auth.check(header)
        return time.monotonic() - began

    wrong_password = sorted(login("prometheus", "guess") for _ in range(3))[1]
    unknown_user = sorted(login("nobody", "guess") for _ in range(3))[1]
    assert unknown_user > 0.6 * wrong_password, (unknown_user, wrong_password)
    header = "Basic " + base64.b64encode(b"prometheus:secret").decode()
    assert auth.check(header)


def test_bad_logins_run_at_most_two_checks_at_once() -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=10))
    auth = BasicAuth(lambda e, s: [b""], {"prometheus": hashed})
    inside = peak = 0
    lock = threading.Lock()
    real = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        try:
            return real(password, hashed_password)
        finally:
            with lock:
                inside -= 1

    header = "Basic " + base64.b64encode(b"prometheus:wrong").decode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bcrypt, "checkpw", counting)
        workers = [threading.Thread(target=auth.check, args=(header,)) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
    assert peak == 2


def test_a_stop_refuses_queued_probes_and_ends_running_ones_at_once() -> None:
    app = exporter(Factory(pause_s=0.05), concurrency=1, queue=8)  # one probe: ~10 s
    results: list[tuple[int, float]] = []

    def scrape() -> None:
        began = time.monotonic()
        answer = get(port, f"/probe?target={SERVER}&module=web")
        results.append((status(answer), time.monotonic() - began))

    with serving(app, read_s=30) as (_, port, _):
        scrapes = [threading.Thread(target=scrape) for _ in range(4)]
        for one in scrapes:
            one.start()
        time.sleep(1.0)  # one probe runs, three wait for its slot
        began = time.monotonic()
        app.stop()
        for one in scrapes:
            one.join(10)
        took = time.monotonic() - began
    assert took < 2, took
    assert sorted(code for code, _ in results) == [200, 503, 503, 503], results


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))


@contextlib.contextmanager
def real_exporter(folder: Path) -> Iterator[tuple[int, ssl.SSLContext, str, int]]:
    """`reachtest exporter` itself (ordinary sockets, TLS and basic auth) on loopback:
    its port, a context that trusts it, a good Authorization header, its pid. Its one
    module probes the exporter's own port (loopback only)."""
    cert, _key = certificate(folder)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=10)).decode()
    (folder / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: {hashed}\n"
    )
    (folder / "exporter.toml").write_text(
        '[exporter]\nallow = ["127.0.0.0/8"]\n[module.self]\n'
        f'services = ["tcp/{port}"]\nicmp = false\nmode = "check"\nrounds = 1\n'
        'timeout = 0.5\nexpect = { "tcp/%d" = "open" }\n' % port
    )
    log = folder / "exporter.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "reachtest", "exporter", "--config",
             str(folder / "exporter.toml"), "--listen", f"127.0.0.1:{port}", "--web-config",
             str(folder / "web.yml"), "--unprivileged"],
            stdout=subprocess.DEVNULL, stderr=stderr, text=True,
            env={**os.environ, **EXPORTER_ENVIRONMENT},  # as its systemd unit runs it
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "exporter on https://" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        trusting = ssl.create_default_context(cafile=str(cert))
        good = "Authorization: Basic " + base64.b64encode(b"prometheus:secret").decode() + "\r\n"
        yield port, trusting, good, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, log.read_text()[-3000:]  # stopped by SIGTERM, cleanly
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_everything_at_once_while_a_scrape_still_answers_in_time(tmp_path: Path) -> None:
    """Idle connections, slowloris (in the TLS handshake and after it), 20 MB of
    headers and bad logins together against the real exporter process: its scrapes
    answer within their timeout, it stops promptly, and its memory comes back within a
    few MB (issue: 50 idle connections timed Prometheus out; 20 MB of headers took it
    from 34 to 156 MB for good)."""
    bad = "Authorization: Basic " + base64.b64encode(b"admin:admin").decode() + "\r\n"
    stop = threading.Event()
    with real_exporter(tmp_path) as (port, trusting, good, pid):
        target = "/probe?target=127.0.0.1&module=self"
        headers = good + f"X-Prometheus-Scrape-Timeout-Seconds: {SCRAPE_TIMEOUT_S}\r\n"
        for _ in range(3):  # warm
            assert status(get(port, target, trusting, headers)) == 200
        before = rss_of(pid)

        def attack(kind: str) -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError, ssl.SSLError, ValueError):
                    if kind == "idle":
                        with socket.create_connection(("127.0.0.1", port)):
                            stop.wait(3)
                    elif kind == "slow-handshake":
                        with socket.create_connection(("127.0.0.1", port)) as sock:
                            for byte in b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03":
                                sock.sendall(bytes([byte]))
                                if stop.wait(0.5):
                                    break
                    elif kind == "slow-request":
                        with socket.create_connection(("127.0.0.1", port)) as sock:
                            wrapped = trusting.wrap_socket(sock, server_hostname="127.0.0.1")
                            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
                                wrapped.sendall(bytes([byte]))
                                if stop.wait(0.5):
                                    break
                    elif kind == "huge":
                        request(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20 * 2**20, trusting, 3)
                    else:
                        get(port, "/metrics", trusting, bad)

        kinds = (
            ["idle"] * 30 + ["slow-handshake"] * 20 + ["slow-request"] * 20 + ["huge"] * 2
            + ["login"] * 4
        )  # fmt: skip
        grown = []
        for _ in range(2):  # the second round must not grow it further: nothing is kept
            stop.clear()
            attackers = [threading.Thread(target=attack, args=(k,), daemon=True) for k in kinds]
            for one in attackers:
                one.start()
            try:
                time.sleep(1.5)
                for _ in range(5):
                    answer, took = timed(lambda: get(port, target, trusting, headers))
                    assert status(answer) == 200 and took < SCRAPE_TIMEOUT_S, (took, answer[:300])
                    assert b"probe_success 1" in answer, answer[-600:]
                    time.sleep(0.5)
            finally:
                stop.set()
                for one in attackers:
                    one.join(15)
            time.sleep(11)  # what is left is closed, and the allocator trimmed (every 10 s)
            for _ in range(3):
                assert status(get(port, target, trusting, headers)) == 200
            grown.append(rss_of(pid) - before)
    print(f"exporter RSS before the attacks {before} kB, grown after each by {grown} kB")
    # What the allocator keeps of an attack's 76 connections (OpenSSL's buffers, arenas
    # not yet trimmed) is a few MB, and how much of it the first round or the second keeps
    # varies from run to run (CI once saw 0.5 MB, then 2.6 MB). What must not happen is
    # that a round keeps what it was sent: one 20 MB header kept, or one attack's
    # connections kept (76 x 256 kB), would put a round above 8 MB or add 4 MB to it.
    assert max(grown) < 8 * 1024 and grown[1] - grown[0] < 4 * 1024, (before, grown)
