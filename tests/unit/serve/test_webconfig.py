"""Prometheus' web configuration: what is supported works (TLS over a real handshake,
bcrypt users), what is not is refused by name."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from reachtest.errors import UsageError
from reachtest.serve.http import make_server
from reachtest.serve.webconfig import load_web_config, ssl_context


def certificate(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is missing (scripts/setup installs it)"
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_tls_from_the_web_configuration_serves_https(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  min_version: TLS13\n"
    )
    config = load_web_config(web)
    assert config.tls and config.cert_file == cert

    def app(environ: object, start_response: object) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"hello\n"]

    server, watchdog = make_server(
        ("127.0.0.1", 0), app, threads=4, tls_context=ssl_context(config),
        cert_file=str(cert), key_file=str(key),
    )  # fmt: skip
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.bind_addr[1]}/"
        trusting = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(url, context=trusting, timeout=10) as answer:
            assert answer.read() == b"hello\n"
        old = ssl.create_default_context(cafile=str(cert))
        old.maximum_version = ssl.TLSVersion.TLSv1_2  # below min_version: refused
        with pytest.raises(OSError, match=r"(?i)version|alert"):
            urllib.request.urlopen(url, context=old, timeout=10)
    finally:
        server.stop()
        thread.join(5)
        watchdog.close()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "basic_auth_users:\n  prom: hunter2\n",
            "must be a bcrypt hash ($2b$...), never a password",
        ),
        ("tls_server_config:\n  cert_file: server.crt\n", "give both cert_file and key_file"),
        (
            "tls_server_config:\n  cipher_suites: [x]\n",
            "tls_server_config.cipher_suites: not supported",
        ),
        ("http_server_config:\n  http2: false\n", "http_server_config: not supported"),
        ("tls_server_confg: {}\n", "tls_server_confg: unknown key"),
        ("basic_auth_users: [\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_an_unsupported_or_broken_web_configuration_is_refused(
    tmp_path: Path, text: str, words: str
) -> None:
    (tmp_path / "server.crt").write_text("x")
    web = tmp_path / "web.yml"
    web.write_text(text)
    with pytest.raises(UsageError) as caught:
        load_web_config(web)
    assert words in str(caught.value) and "\n" not in str(caught.value)
