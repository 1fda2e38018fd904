"""`reachtest exporter`: the Prometheus exporter (blackbox_exporter's model, path-aware).

Wiring only: the configuration (``serve.config``), the transport per probe (raw sockets
with CAP_NET_RAW alone, or ordinary sockets), the WSGI application (``serve.app``) with
basic auth and TLS from the web configuration (``serve.webconfig``), served by cheroot.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from reachtest.cli.base import EXIT_CODES_HELP, _say, _tell, cli
from reachtest.errors import EnvironmentProblem, PrivilegeError, UsageError

if TYPE_CHECKING:
    from reachtest.engine.transport import Transport
    from reachtest.model import FlowSpec

#: The exporter's default port (blackbox_exporter has 9115; 9469 is free in Prometheus'
#: default port allocations list).
DEFAULT_PORT = 9469
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
#: What a probe loads after the privilege drop: imported first when it could not be read.
SERVE_MODULES = (
    "json",
    "hashlib",
    "prometheus_client",
    "prometheus_client.core",
    "prometheus_client.exposition",
    "prometheus_client.openmetrics.exposition",
    "prometheus_client.process_collector",
    "reachtest.engine.tracer",
    "reachtest.engine.bpf",
    "reachtest.engine.transport",
    "reachtest.engine.unprivileged",
    "reachtest.serve.app",
    "reachtest.serve.probe",
    "bcrypt",
)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every address) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r}: give HOST:PORT, [IPV6]:PORT or :PORT")
    host = host.strip("[]") or "::"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise UsageError(
                f"--listen {text!r}: the host must be an address (or localhost)"
            ) from None
        host = "127.0.0.1"
    return host, int(port)


def check_vantage(vantage: str) -> str:
    """``vantage`` when it can be a label value; a clear error otherwise."""
    from reachtest.serve.config import _LABEL_VALUE

    if not _LABEL_VALUE.fullmatch(vantage):
        raise UsageError(f"--vantage {vantage!r}: use 1 to 64 printable characters")
    return vantage


def _transport(unprivileged: bool) -> tuple[Any, str]:
    """The transport factory and its name; privileges given up first (CAP_NET_RAW alone
    kept for raw sockets, nothing for ordinary sockets)."""
    from reachtest.engine.transport import effective_capabilities
    from reachtest.privileges import CAP_NET_RAW, HTML_MODULES, TRACE_MODULES, drop_privileges

    modules = TRACE_MODULES + HTML_MODULES + SERVE_MODULES
    raw = not unprivileged and effective_capabilities() >> CAP_NET_RAW & 1
    if not raw:
        if not unprivileged:
            _tell("no CAP_NET_RAW: probing with ordinary sockets (--unprivileged)")
        if os.geteuid() == 0 or effective_capabilities():
            drop_privileges(modules)
        from reachtest.engine.unprivileged import UnprivilegedTransport

        def ordinary(address: str, flows: Sequence[FlowSpec]) -> Transport:
            return UnprivilegedTransport()

        return ordinary, "unprivileged"
    drop_privileges(modules, keep_net_raw=True)
    from reachtest.engine.bpf import for_run
    from reachtest.engine.transport import RawTransport

    def raw_sockets(address: str, flows: Sequence[FlowSpec]) -> Transport:
        return RawTransport(receive_filter=for_run([address], flows))

    return raw_sockets, "raw"


@cli.command("exporter", epilog=EXIT_CODES_HELP)
@click.option(
    "--config",
    "config_file",
    required=True,
    metavar="FILE",
    help="The exporter's TOML file: [exporter] allow, [module.NAME] tables.",
)
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Where to serve (:PORT: every address; only with an allow-list you mean).",
)
@click.option(
    "--vantage",
    metavar="NAME",
    help="A vantage label on every series (where this exporter probes from).",
)
@click.option(
    "--web-config",
    "web_config",
    metavar="FILE",
    help="Prometheus web-config YAML: tls_server_config, basic_auth_users (bcrypt).",
)
@click.option(
    "--unprivileged",
    is_flag=True,
    help="Ordinary sockets only (no CAP_NET_RAW needed; see docs/privileges.md).",
)
@click.option(
    "--timeout-offset",
    default=0.5,
    show_default=True,
    type=float,
    metavar="S",
    help="Seconds kept back from Prometheus' scrape timeout.",
)
def exporter(
    config_file: str,
    listen: str,
    vantage: str | None,
    web_config: str | None,
    unprivileged: bool,
    timeout_offset: float,
) -> int:
    """Serve /probe?target=HOST&module=NAME for Prometheus, like blackbox_exporter,
    with hop-by-hop service reachability: probe_success, per-flow state, where a flow
    is blocked, per-hop loss and RTT. /metrics: the exporter's own; /: recent probes.

    For flat memory in long runs, run it as its systemd unit does, with
    GLIBC_TUNABLES=glibc.malloc.tcache_count=0 (schedule install --exporter)."""
    from reachtest.serve.app import Exporter
    from reachtest.serve.config import load_exporter_config
    from reachtest.serve.webconfig import BasicAuth, load_web_config, ssl_context

    host, port = parse_listen(listen)
    if vantage is not None:
        check_vantage(vantage)
    if not 0 <= timeout_offset < 60:
        raise UsageError("--timeout-offset: give seconds from 0 to 60")
    config = load_exporter_config(config_file)
    web = load_web_config(web_config) if web_config else None
    context = ssl_context(web) if web is not None and web.tls else None
    make, name = _transport(unprivileged)
    exporter_app = Exporter(
        config, make, vantage=vantage, transport_name=name, timeout_offset_s=timeout_offset
    )
    app: Any = exporter_app
    if web is not None and web.users:
        app = BasicAuth(app, web.users)
        if context is None:
            _tell("basic auth without TLS: passwords cross the network in clear")
    threads = config.concurrency + config.queue + 4
    from reachtest.serve.http import make_server

    server, watchdog = make_server(
        (host, port), app, threads=threads, tls_context=context,
        cert_file=str(web.cert_file) if web is not None and web.tls else None,
        key_file=str(web.key_file) if web is not None and web.tls else None,
    )  # fmt: skip
    try:
        server.prepare()
    except OSError as exc:
        watchdog.close()
        raise EnvironmentProblem(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    scheme = "https" if context is not None else "http"
    shown = f"[{host}]" if ":" in host else host
    _tell(
        f"exporter on {scheme}://{shown}:{server.bind_addr[1]}/ "
        f"({len(config.modules)} modules, {name} sockets"
        + (f", vantage {vantage}" if vantage else "")
        + ")"
    )
    sys.stderr.flush()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        # Stop taking work: queued probes are refused (503), running ones stop at their
        # next wake-up, so the server's workers are free within a second or two.
        exporter_app.stop()
        server.stop()
        watchdog.close()
    _say("stopped", "")
    return 0


__all__ = ["DEFAULT_LISTEN", "PrivilegeError", "exporter", "parse_listen"]
