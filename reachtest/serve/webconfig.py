"""Prometheus's web configuration file (exporter-toolkit's format) for TLS and basic auth::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: clients.crt
    basic_auth_users:
      prometheus: $2b$12$...                         # bcrypt hashes (htpasswd -nBC 12)

The keys reachtest does not implement are refused by name, never ignored: a user who
asks for a setting must not believe it is on. Paths are relative to the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reachtest.errors import UsageError

TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version")
CLIENT_AUTH = ("NoClientCert", "RequireAndVerifyClientCert")
TLS_VERSIONS = {"TLS12": "TLSv1_2", "TLS13": "TLSv1_3"}
TOP_KEYS = ("tls_server_config", "basic_auth_users", "http_server_config")
#: Verified (user, password) pairs remembered, as digests, so a scrape every few seconds
#: does not cost a bcrypt check each time (exporter-toolkit caches alike).
AUTH_CACHE = 64
#: bcrypt checks at once (each takes a core for ~0.25 s at cost 12), and how long a login
#: waits for one before it fails.
CONCURRENT_CHECKS = 2
CHECK_WAIT_S = 5.0


def _cost(hashed: bytes) -> int:
    """The cost factor of a bcrypt hash ($2b$12$...), 4 to 16 (the decoy is made at start)."""
    try:
        return min(16, max(4, int(hashed.split(b"$")[2])))
    except (IndexError, ValueError):
        return 12


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    min_version: str | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check the web configuration at ``path``; one-line errors."""
    import yaml

    from reachtest.inputs import MIB, read_text

    where = str(path)
    if not Path(path).exists():
        raise UsageError(f"{where}: no such file")
    text = read_text(path, "web configuration", MIB)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise UsageError(f"{where}{line}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{where}: must be a mapping (tls_server_config:, basic_auth_users:)")
    for key in data:
        if key not in TOP_KEYS:
            raise UsageError(f"{where}: {key}: unknown key (known: {', '.join(TOP_KEYS)})")
    if data.get("http_server_config"):
        raise UsageError(f"{where}: http_server_config: not supported by reachtest")
    here = Path(path).parent
    tls = data.get("tls_server_config") or {}
    if not isinstance(tls, dict):
        raise UsageError(f"{where}: tls_server_config: must be a mapping")
    for key in tls:
        if key not in TLS_KEYS:
            raise UsageError(
                f"{where}: tls_server_config.{key}: not supported "
                f"(supported: {', '.join(TLS_KEYS)})"
            )

    def file(key: str) -> Path | None:
        value = tls.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where}: tls_server_config.{key}: must be a file name")
        found = here / value
        if not found.is_file():
            raise UsageError(f"{where}: tls_server_config.{key}: {found}: no such file")
        return found

    cert, key = file("cert_file"), file("key_file")
    if (cert is None) != (key is None):
        raise UsageError(f"{where}: tls_server_config: give both cert_file and key_file")
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise UsageError(
            f"{where}: tls_server_config.client_auth_type: {auth!r} is not supported "
            f"(one of: {', '.join(CLIENT_AUTH)})"
        )
    ca = file("client_ca_file")
    if (auth == "RequireAndVerifyClientCert") != (ca is not None):
        raise UsageError(
            f"{where}: tls_server_config: client_auth_type RequireAndVerifyClientCert "
            "goes with client_ca_file"
        )
    version = tls.get("min_version")
    if version is not None and version not in TLS_VERSIONS:
        raise UsageError(
            f"{where}: tls_server_config.min_version: {version!r} (one of: TLS12, TLS13)"
        )
    users_raw = data.get("basic_auth_users") or {}
    if not isinstance(users_raw, dict):
        raise UsageError(f"{where}: basic_auth_users: must be a mapping of user: bcrypt hash")
    users: dict[str, bytes] = {}
    for name, hashed in users_raw.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise UsageError(f"{where}: basic_auth_users: {name!r} is not a user name")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise UsageError(
                f"{where}: basic_auth_users.{name}: must be a bcrypt hash ($2b$...), "
                "never a password"
            )
        users[name] = hashed.encode()
    return WebConfig(
        cert_file=cert, key_file=key, client_ca_file=ca, min_version=version, users=users
    )


def ssl_context(config: WebConfig) -> Any:
    """The server's ssl.SSLContext for ``config`` (which has TLS)."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = getattr(ssl.TLSVersion, TLS_VERSIONS[config.min_version or "TLS12"])
    try:
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
        if config.client_ca_file is not None:
            context.load_verify_locations(str(config.client_ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use the TLS certificate or key: {exc}") from None
    return context


StartResponse = Callable[[str, list[tuple[str, str]]], Any]
App = Callable[[Mapping[str, Any], StartResponse], Iterable[bytes]]


class BasicAuth:
    """WSGI middleware: every request needs one of ``users`` (bcrypt) or gets 401."""

    def __init__(self, app: App, users: Mapping[str, bytes]) -> None:
        import bcrypt

        self.app = app
        self.users = dict(users)
        self._ok: dict[bytes, None] = {}
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(CONCURRENT_CHECKS)
        # An unknown user is checked against this hash, of the costliest user's cost, so
        # that a wrong name takes as long as a wrong password (names cannot be told apart).
        cost = max((_cost(h) for h in self.users.values()), default=12)
        self._decoy = bcrypt.hashpw(b"decoy", bcrypt.gensalt(rounds=cost))

    def check(self, header: str) -> bool:
        import bcrypt

        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        known = self.users.get(user)
        hashed = known if known is not None else self._decoy
        digest = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()
        with self._lock:
            if any(hmac.compare_digest(digest, d) for d in self._ok):
                return True
        # At most CONCURRENT_CHECKS bcrypt checks at once: bad logins cost the CPU of that
        # many threads, never all of them; a check that cannot start in time fails.
        if not self._checks.acquire(timeout=CHECK_WAIT_S):
            return False
        try:
            good = bcrypt.checkpw(password.encode(), hashed) and known is not None
        except ValueError:
            return False
        finally:
            self._checks.release()
        if good:
            with self._lock:
                self._ok[digest] = None
                while len(self._ok) > AUTH_CACHE:
                    del self._ok[next(iter(self._ok))]
        return good

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        if self.check(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        body = b"Unauthorized\n"
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("WWW-Authenticate", 'Basic realm="reachtest"'),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]
