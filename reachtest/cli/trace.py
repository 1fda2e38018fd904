"""`reachtest probe`, `trace`, `show` and `demo`: probing, its reports, and the lab demo."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reachtest.cli.base import EXIT_CODES_HELP, _console, _progress, _say, _tell, cli
from reachtest.cli.output import (
    DEFAULT_OUT_DIR,
    RENDER,
    WHAT,
    StreamFile,
    _stdout_is_terminal,
    check_distinct,
    check_out_dir,
    check_output,
    check_outputs,
    exit_code,
    print_report,
    save_reports,
    write_outputs,
)
from reachtest.errors import (
    EXIT_OK,
    LabError,
    UsageError,
)
from reachtest.packet.requests import QUERY_TYPES
from reachtest.spec import DEFAULT_CONTROL

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reachtest.engine.transport import RawTransport
    from reachtest.model import FlowSpec, Outcome, TraceParams


def _family(ipv4: bool, ipv6: bool) -> int | None:
    """-4 and -6 together are a contradiction, not "the last one wins"."""
    if ipv4 and ipv6:
        raise UsageError("give -4 or -6, not both")
    return 4 if ipv4 else 6 if ipv6 else None


# -- probe ------------------------------------------------------------------------


def _payload(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"--payload must be hex digits, not {text!r}") from None


def _params(**values: Any) -> TraceParams:
    """TraceParams from options, checked: a bad value is a usage error."""
    from reachtest.engine.tracer import validate
    from reachtest.model import TraceParams

    params = TraceParams(**values)
    try:
        validate(params)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return params


def _least_privilege(
    transport: RawTransport, addresses: Sequence[str], modules: Sequence[str]
) -> None:
    """With the sockets open, become the invoking user without capabilities, before the
    first reply (or reverse-DNS answer) is parsed."""
    from reachtest.privileges import drop_privileges

    transport.open_senders(6 if ":" in a else 4 for a in addresses)
    drop_privileges(modules)


def _open_transport(
    unprivileged: bool,
    addresses: Sequence[str],
    flows: list[FlowSpec],
    *,
    on_sent: Any = None,
    html: bool = False,
) -> tuple[Any, list[FlowSpec], tuple[str, ...]]:
    """The transport to trace with, the flows it can trace, and what it cannot do.

    Raw sockets unless ``unprivileged`` or the system refuses them (then ordinary
    sockets, said in one line); either way privileges are given up before the first
    reply is parsed. Ordinary sockets need none: they are given up first."""
    from reachtest.engine.transport import RawTransport
    from reachtest.errors import PrivilegeError
    from reachtest.privileges import HTML_MODULES, PCAP_MODULES, TRACE_MODULES

    modules = TRACE_MODULES + (HTML_MODULES if html else ()) + (PCAP_MODULES if on_sent else ())
    if not unprivileged:
        from reachtest.engine.bpf import for_run

        receive_filter = for_run(addresses, flows)
        if receive_filter is None and os.environ.get("REACHTEST_NO_FILTER") != "1":
            _say("no kernel filter (libpcap cannot compile it): every packet is read", "note: ")
        try:
            raw = RawTransport(on_sent=on_sent, receive_filter=receive_filter)
        except PrivilegeError as exc:
            if on_sent is not None:
                raise PrivilegeError(f"{exc} (--pcap needs raw sockets)") from None
            _say(f"{exc}: tracing with ordinary sockets instead (--unprivileged)", "note: ")
        else:
            try:
                _least_privilege(raw, addresses, modules)
            except BaseException:
                raw.close()
                raise
            return raw, flows, ()
    elif on_sent is not None:
        raise UsageError("--pcap needs raw sockets: leave out --unprivileged")
    from reachtest.engine.unprivileged import IcmpUnavailable, UnprivilegedTransport
    from reachtest.model import Protocol
    from reachtest.privileges import drop_privileges

    drop_privileges(modules)
    transport = UnprivilegedTransport()
    notes = list(UNPRIVILEGED_NOTES)
    try:
        if any(f.protocol is Protocol.ICMP for f in flows):
            for family in sorted({6 if ":" in a else 4 for a in addresses}):
                transport.reserve_port(family, "icmp")
    except IcmpUnavailable as exc:
        flows = [f for f in flows if f.protocol is not Protocol.ICMP]
        notes.append("no ICMP echo: " + str(exc))
        _say(f"{exc}: tracing the services without icmp", "note: ")
        if not flows:
            transport.close()
            raise
    return transport, flows, tuple(notes)


def _port_note(transport: Any) -> tuple[str, ...]:
    """How many TCP probes the kernel sent from another port than their flow's."""
    forced, sent = getattr(transport, "forced_ports", 0), getattr(transport, "tcp_sent", 0)
    skipped = getattr(transport, "tcp_skipped", 0)
    notes = []
    if forced:
        notes.append(
            f"{forced} of {sent} TCP probes left from another source port than their "
            "flow's (another probe of the flow was still connecting): ECMP may route them apart"
        )
    if skipped:
        notes.append(f"{skipped} TCP probes not sent: no file descriptor left (counted lost)")
    return tuple(notes)


#: What the unprivileged transport cannot see, for the record and the report.
UNPRIVILEGED_NOTES = (
    "no reply TTL for TCP answers (a forged RST is judged by its hop only)",
    "no MPLS labels",
)


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    rtt = outcome.rtt_ns
    return {
        "target": outcome.target,
        "flow": outcome.flow.label,
        "ttl": outcome.ttl,
        "round": outcome.round,
        "probe_id": outcome.probe_id,
        "sent_ns": outcome.sent_ns,
        "kind": str(outcome.kind),
        "responder": outcome.responder,
        "rtt_ms": None if rtt is None else round(rtt / 1e6, 4),
        "reply_ttl": outcome.reply_ttl,
        "icmp_type": outcome.icmp_type,
        "icmp_code": outcome.icmp_code,
        "tcp_flags": outcome.tcp_flags,
        "quote_ttl": outcome.quote_ttl,
        "quote_changed": list(outcome.quote_changed),
        "quote_src": outcome.quote_src,
        "quote_port": outcome.quote_port,
        "mpls": [
            {"label": m.label, "tc": m.tc, "bottom": m.bottom, "ttl": m.ttl} for m in outcome.mpls
        ],
        "exact": outcome.exact,
        "extra": None if outcome.extra is None else str(outcome.extra),
    }


@cli.command("probe", epilog=EXIT_CODES_HELP)
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "-p",
    "--port",
    "ports",
    multiple=True,
    metavar="FLOW",
    help="A flow: tcp/443, udp/53, 443 (tcp), icmp; repeat or comma-separate.",
)
@click.option("--no-icmp", is_flag=True, help="Do not trace ICMP echo alongside the services.")
@click.option("-f", "--first-ttl", type=int, default=1, show_default=True)
@click.option("-m", "--max-ttl", type=int, default=30, show_default=True)
@click.option("-c", "--rounds", type=int, default=None, help="Rounds [10; 1 with --fast].")
@click.option(
    "-i", "--interval", type=float, default=1.0, show_default=True, help="Seconds per round."
)
@click.option(
    "--timeout", type=float, default=2.0, show_default=True, help="Seconds to wait for a reply."
)
@click.option(
    "--rate", type=float, default=5000.0, show_default=True, help="Packets/s cap (0: none)."
)
@click.option("--max-in-flight", type=int, default=4096, show_default=True)
@click.option(
    "--gap-limit", type=int, default=5, show_default=True, help="Silent TTLs before giving up."
)
@click.option("--fast", is_flag=True, help="Every TTL of every flow at once, one round.")
@click.option(
    "--payload", default="", metavar="HEX", help="UDP payload for ports without a known protocol."
)
@click.option(
    "--analyse",
    "analyse_run",
    is_flag=True,
    help="Print verdicts and findings in plain text instead of JSON lines.",
)
@click.option(
    "--unprivileged",
    is_flag=True,
    help="Ordinary sockets (ping, UDP, TCP connect): no root needed. Chosen by itself when "
    "raw sockets are refused.",
)
@click.option("-4", "ipv4", is_flag=True, help="IPv4 only.")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 only.")
def probe_command(
    targets: tuple[str, ...],
    ports: tuple[str, ...],
    no_icmp: bool,
    first_ttl: int,
    max_ttl: int,
    rounds: int | None,
    interval: float,
    timeout: float,
    rate: float,
    max_in_flight: int,
    gap_limit: int,
    fast: bool,
    payload: str,
    analyse_run: bool,
    unprivileged: bool,
    ipv4: bool,
    ipv6: bool,
) -> int:
    """Send probes to TARGETS and print every outcome as a JSON line (a debug view).

    Strays (replies that answer no probe) and totals go to stderr at the end. Raw
    sockets need root or CAP_NET_RAW; without, ordinary sockets (see --unprivileged).
    """
    import json

    family = _family(ipv4, ipv6)

    from reachtest.engine.tracer import Tracer
    from reachtest.spec import flow_list, resolve_target

    flows = flow_list(ports, not no_icmp)
    udp_payload = _payload(payload)
    params = _params(
        first_ttl=first_ttl,
        max_ttl=max_ttl,
        rounds=rounds if rounds is not None else (1 if fast else 10),
        interval_s=interval,
        timeout_s=timeout,
        rate_pps=rate,
        max_in_flight=max_in_flight,
        gap_limit=gap_limit,
        fast=fast,
    )
    addresses = [resolve_target(t, family) for t in targets]
    out = sys.stdout

    def emit(outcome: Outcome) -> None:
        if not analyse_run:
            out.write(json.dumps(_outcome_json(outcome)) + "\n")

    transport, traced, _notes = _open_transport(unprivileged, addresses, list(flows))
    flows = tuple(traced)
    try:
        tracer = Tracer(
            transport, addresses, flows, params, udp_payload=udp_payload, on_outcome=emit
        )
        try:
            result = tracer.run()
        except KeyboardInterrupt:
            tracer.stop()
            raise
    finally:
        transport.close()
    for extra in result.extras:
        emit(extra)
    if analyse_run:
        from reachtest.analysis.analyse import analyse
        from reachtest.analysis.summary import render_text

        out.write(render_text(analyse(result.outcomes, result.params, result.budgets)))
    strays = ", ".join(f"{n} {reason}" for reason, n in result.stray_counts) or "none"
    answered = sum(1 for o in result.outcomes if o.responder is not None)
    click.echo(
        f"reachtest: sent {result.sent} probes, {answered} answered, "
        f"{len(result.extras)} duplicate or late, strays: {strays}",
        err=True,
    )
    return EXIT_OK


# -- trace and show --------------------------------------------------------------------

TRACE_EXIT_HELP = """\b
Exit codes:
  0  every target answered and every traced service is open
  1  a service is not open (closed, filtered, open|filtered) or a host was not reached
  2  usage or input error (bad host, port, option, unwritable output)
  3  permission or environment error (not root / no CAP_NET_RAW)
  4  internal error (a bug: please report it)
"""


@cli.command("trace", epilog=TRACE_EXIT_HELP)
@click.argument("hosts", nargs=-1)
@click.option(
    "-p",
    "--port",
    "ports",
    multiple=True,
    metavar="PORTS",
    help="Services to trace: tcp/443, udp/53, 443 (tcp), https, dns, tcp/80,443, "
    "tcp/8000-8010; tls/443, http/80: the request after the handshake; dns/53: a query "
    "(with its name). Repeatable.",
)
@click.option("--no-icmp", is_flag=True, help="Do not trace ICMP echo next to the services.")
@click.option("--sni", metavar="NAME", help="tls/PORT: the server name asked for [the host].")
@click.option(
    "--host-header", metavar="NAME", help="http/PORT: the Host asked for [--sni, the host]."
)
@click.option(
    "--mtu",
    "find_mtu",
    is_flag=True,
    help="Also find each flow's path MTU and where bigger packets die (a PMTU black hole).",
)
@click.option(
    "--mda",
    "find_branches",
    is_flag=True,
    help="Also spread each flow over many flow hashes (source ports) to find every branch "
    "of a load-balanced path (MDA) and flows that die on one branch only "
    "(partially-filtered).",
)
@click.option(
    "--mda-confidence",
    type=click.FloatRange(50, 99.9),
    default=95.0,
    show_default=True,
    metavar="PCT",
    help="--mda: how sure to be that no branch of a hop is left unseen.",
)
@click.option("--qname", metavar="NAME", help="dns/PORT: the name queried [the host].")
@click.option(
    "--qtype",
    type=click.Choice(QUERY_TYPES, case_sensitive=False),
    default="A",
    show_default=True,
    help="dns/PORT: the query type.",
)
@click.option(
    "--control-name",
    default=DEFAULT_CONTROL,
    show_default=True,
    metavar="NAME",
    help="tls/http/dns: the control name, asked the same way (filtering by name shows).",
)
@click.option(
    "-F",
    "--filename",
    "host_file",
    metavar="FILE",
    help="Read hosts from FILE (one or more per line, # comments; - is stdin).",
)
@click.option(
    "-c", "--report-cycles", "rounds", type=int, default=None, help="Rounds [10; 1 with --fast]."
)
@click.option(
    "-i", "--interval", type=float, default=1.0, show_default=True, help="Seconds per round."
)
@click.option("-f", "--first-ttl", type=int, default=1, show_default=True)
@click.option("-m", "--max-ttl", type=int, default=30, show_default=True)
@click.option(
    "--timeout", type=float, default=2.0, show_default=True, help="Seconds to wait for a reply."
)
@click.option(
    "--rate", type=float, default=5000.0, show_default=True, help="Packets/s cap (0: none)."
)
@click.option("--fast", is_flag=True, help="Every TTL of every flow at once, one round.")
@click.option("-4", "ipv4", is_flag=True, help="IPv4 only.")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 only.")
@click.option("-n", "--no-dns", is_flag=True, help="Do not look up names of the hops.")
@click.option(
    "-z",
    "--aslookup",
    is_flag=True,
    help="Show who owns each hop: its AS, prefix and AS name, by DNS as mtr -z does "
    "(Team Cymru's zones).",
)
@click.option(
    "--as-file",
    metavar="FILE",
    help="-z from a local prefix-to-AS file instead of DNS ('PREFIX ASN [NAME]' lines, or "
    "CAIDA pfx2as); implies -z.",
)
@click.option(
    "-r",
    "--report",
    is_flag=True,
    help="Run all rounds, then print the report once (automatic when stdout is no terminal).",
)
@click.option("--json", "json_path", metavar="FILE|-", help="Write the run record (JSON).")
@click.option("--csv", "csv_path", metavar="FILE|-", help="Write hop statistics (CSV).")
@click.option("--markdown", "markdown_path", metavar="FILE|-", help="Write the report as Markdown.")
@click.option(
    "--html", "html_path", metavar="FILE|-", help="Write the report as a self-contained HTML page."
)
@click.option(
    "--pcap",
    "pcap_path",
    metavar="FILE",
    help="Write every probe sent and every reply to it, with kernel timestamps (pcap).",
)
@click.option(
    "--save",
    is_flag=True,
    help="Save <UTC time>_<target>.json, .html and .md in the output folder (never overwrites).",
)
@click.option(
    "--out-dir",
    metavar="DIR",
    help=f"The output folder of --save [{DEFAULT_OUT_DIR}]; giving it implies --save.",
)
@click.option(
    "--payload", default="", metavar="HEX", help="UDP payload for ports without a known protocol."
)
@click.option(
    "--unprivileged",
    is_flag=True,
    help="Ordinary sockets (ping, UDP, TCP connect): no root needed. Chosen by itself when "
    "raw sockets are refused.",
)
@click.pass_context
def trace_command(
    ctx: click.Context,
    hosts: tuple[str, ...],
    ports: tuple[str, ...],
    no_icmp: bool,
    sni: str | None,
    host_header: str | None,
    find_mtu: bool,
    find_branches: bool,
    mda_confidence: float,
    qname: str | None,
    qtype: str,
    control_name: str,
    host_file: str | None,
    rounds: int | None,
    interval: float,
    first_ttl: int,
    max_ttl: int,
    timeout: float,
    rate: float,
    fast: bool,
    ipv4: bool,
    ipv6: bool,
    no_dns: bool,
    aslookup: bool,
    as_file: str | None,
    report: bool,
    json_path: str | None,
    csv_path: str | None,
    markdown_path: str | None,
    html_path: str | None,
    pcap_path: str | None,
    save: bool,
    out_dir: str | None,
    payload: str,
    unprivileged: bool,
) -> int:
    """Trace HOSTS with ICMP next to TCP/UDP probes to the given ports, hop by hop: where,
    and how, does each service stop while the host still pings?

    \b
    On a terminal: a live view, redrawn as answers come in (q or Ctrl-C stops
    and prints the report). With --report, or when stdout is not a terminal: the
    report once, after -c rounds. Raw sockets need root or CAP_NET_RAW (given up once
    open); without, ordinary sockets (see --unprivileged).
    \b
    Example: reachtest trace example.net -p https -p dns -c 5 --report
    """
    from datetime import UTC, datetime

    from reachtest.analysis.analyse import analyse
    from reachtest.engine.tracer import Tracer
    from reachtest.report.record import RunMeta, build_record
    from reachtest.spec import flow_list, read_host_file, resolve_target

    family = _family(ipv4, ipv6)
    everything = list(hosts) + (read_host_file(host_file) if host_file else [])
    if not everything:
        raise UsageError("no host to trace: give HOST ... or -F FILE")
    ports, requests = _request_specs(ports)
    flows = flow_list(ports, not no_icmp)
    udp_payload = _payload(payload)
    prefix_table = None
    if as_file is not None:
        from reachtest.asn import PrefixFile

        prefix_table = PrefixFile.load(Path(as_file))
    params = _params(
        first_ttl=first_ttl,
        max_ttl=max_ttl,
        rounds=rounds if rounds is not None else (1 if fast else 10),
        interval_s=interval,
        timeout_s=timeout,
        rate_pps=rate,
        fast=fast,
    )
    outputs = {"json": json_path, "csv": csv_path, "markdown": markdown_path, "html": html_path}
    if pcap_path == "-":
        raise UsageError("--pcap needs a FILE (a pcap is no text for stdout)")
    if save or out_dir is not None:
        out_dir = out_dir or DEFAULT_OUT_DIR

    def check_paths() -> None:
        check_outputs(outputs)
        check_output(pcap_path, "the pcap file")
        check_distinct(
            {**{WHAT[k]: v for k, v in outputs.items()}, "the pcap file": pcap_path},
            {"the host file": host_file, "the AS file": as_file},
        )
        check_out_dir(out_dir)

    check_paths()
    typed: dict[str, str] = {}
    for host in everything:
        typed.setdefault(resolve_target(host, family), host)
    addresses = list(typed)
    asked = _request_names(requests, typed, sni, host_header, control_name, qname)

    from reachtest.session import TraceSession

    stdout_taken = "-" in outputs.values()
    live = not report and not stdout_taken and _stdout_is_terminal()
    capture = pcap_path is not None
    pcap: Any = None  # the PcapStream, opened once privileges are given up

    def captured(packet: bytes, ns: int) -> None:
        if pcap is not None:
            pcap.add(ns, packet)

    raw_requests = None  # the request tracer's raw sockets, opened before the drop
    request_capture = None  # and what they send and get, for the pcap
    if requests and not unprivileged:
        from reachtest.engine.requests import RawSockets, RequestCapture

        raw_requests = RawSockets()
        if capture:
            try:
                request_capture = RequestCapture()
            except OSError:
                raw_requests.close()
                raise
    # Fails here without the privilege, before any look-up.
    transport, traced, transport_notes = _open_transport(
        unprivileged,
        addresses,
        list(flows),
        on_sent=captured if capture else None,
        html=html_path is not None or save or out_dir is not None,
    )
    flows = tuple(traced)
    pcap_file = None
    try:
        check_paths()  # again, as the user it now runs as: before any probe, not after
        if pcap_path is not None:
            from reachtest.report.pcap import PcapStream

            pcap_file = StreamFile(Path(pcap_path))
            wall_offset_ns = time.time_ns() - time.monotonic_ns()
            pcap = PcapStream(pcap_file.file, wall_offset_ns)
    except BaseException:
        if pcap_file is not None:
            pcap_file.discard()
        transport.close()
        raise
    try:
        names = None
        if not no_dns:
            from reachtest.names import ReverseNames

            names = ReverseNames()
            for address in addresses:
                names.submit(address)
        asns = None
        if aslookup or as_file is not None:
            from reachtest.asn import AsLookup

            asns = AsLookup(prefix_file=prefix_table)
            if asns.problem:
                _tell(asns.problem)
            for address in addresses:
                asns.submit(address)
        try:
            tracer = Tracer(
                transport,
                addresses,
                flows,
                params,
                udp_payload=udp_payload,
                on_reply=captured if capture else None,
            )
            session = TraceSession(tracer, names=names, asns=asns)
            started = datetime.now(UTC)

            def meta(finished: datetime, found: dict[str, str]) -> RunMeta:
                return RunMeta(
                    command=("reachtest", *(ctx.obj or {}).get("argv", ())),
                    started=started,
                    finished=finished,
                    hosts=typed,
                    names=found,
                    family=family,
                    dns=not no_dns,
                    udp_payload_hex=udp_payload.hex(),
                    transport=getattr(transport, "name", "raw"),
                    transport_notes=transport_notes + _port_note(transport),
                    asns=None
                    if asns is None
                    else {a: o.record() for a, o in asns.owners().items()},
                )

            if live:
                # Lines wrap at words in the live view: a soft-wrapping console renders
                # without wrapping and Live crops what is wider than the terminal, mid-word.
                console = _console()
                console.soft_wrap = False

                def draw(s: TraceSession) -> Any:
                    return _live_frame(s, console.width, meta(datetime.now(UTC), _names(names)))

                result = session.run_live(console, draw)
            else:
                result = _run_with_progress(session)
        finally:
            transport.close()
        finished = datetime.now(UTC)
        found = names.settle(1.0) if names is not None else {}
        if names is not None:
            names.close()
        analysis = analyse(session.accumulated, result.params, result.budgets)
        record = build_record(result, analysis, meta(finished, found))
        if requests:

            def requests_captured() -> None:  # the request tracer's packets, into the pcap
                if pcap is not None and request_capture is not None:
                    for ns, packet in request_capture.take():
                        pcap.add(ns - wall_offset_ns, packet)

            if request_capture is not None:
                request_capture.watch([t["address"] for t in record["targets"]])
            if sys.stderr.isatty():  # a few seconds more after the live view ended
                flows_text = ", ".join(f"{k}/{p}" for k, p in requests)
                _tell(f"tracing {flows_text} past the handshake, TTL by TTL ...")
            _trace_requests(
                record, requests, asked, raw_requests, params, qtype.upper(), requests_captured
            )
        if find_mtu:
            _trace_mtu(record, params)
        if find_branches:
            _trace_branches(record, params, mda_confidence / 100)
        if asns is not None:  # the owners of every hop seen, branches' included
            from reachtest.report.record import add_owners, record_addresses

            for address in sorted(record_addresses(record)):
                asns.submit(address)
            add_owners(record, asns.settle())
            asns.close()
        written = write_outputs(record, outputs)
        if pcap is not None and pcap_file is not None:
            pcap.close()
            written.append(pcap_file.commit())
    except BaseException:
        if pcap_file is not None:
            pcap_file.discard()  # a run that failed leaves no partial pcap behind
        raise
    finally:
        if raw_requests is not None:
            raw_requests.close()
        if request_capture is not None:
            request_capture.close()
    if out_dir is not None:
        written += save_reports(record, out_dir)
    if not stdout_taken:
        print_report(record)
    for path in written:
        _tell(f"wrote {path}")
    return exit_code(record)


def _request_specs(ports: Sequence[str]) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """The ``-p`` values without the request flows (``tls/443``, ``http/80``, ``dns/53``),
    each of which brings its port's SYN flow (``tcp/443``: the contrast; DNS its UDP
    probe), and the request flows as (kind, port)."""
    from reachtest.spec import contrast_flow, request_flow

    rest, requests = [], []
    for spec in ports:
        try:
            found = request_flow(spec)
        except UsageError as exc:
            raise UsageError(f"-p {exc}") from None
        if found is None:
            rest.append(spec)
            continue
        requests.append(found)
        rest.append(contrast_flow(*found))
    return tuple(rest), tuple(dict.fromkeys(requests))


def _request_names(
    requests: Sequence[tuple[str, int]],
    typed: dict[str, str],
    sni: str | None,
    host_header: str | None,
    control: str,
    qname: str | None = None,
) -> dict[tuple[str, str], tuple[str, str]]:
    """(address, kind) -> (the name asked for, the control name); one-line errors for a
    name that cannot be sent or a host given as an address without --sni/--host-header
    (--qname)."""
    from reachtest.packet.requests import name_problem
    from reachtest.spec import request_name

    for given, option in (
        (sni, "--sni"),
        (host_header, "--host-header"),
        (qname, "--qname"),
        (control, "--control-name"),
    ):
        if given is not None and (problem := name_problem(given)):
            raise UsageError(f"{option} {given!r}: {problem}")
    asked = {}
    for address, host in typed.items():
        for kind, port in requests:
            name = request_name(kind, port, host, sni, host_header, qname)
            if name.lower() == control.lower():
                raise UsageError(f"the control name {control!r} is the name tested: give another")
            asked[(address, kind)] = (name, control)
    return asked


def _trace_requests(
    record: dict[str, Any],
    requests: Sequence[tuple[str, int]],
    asked: dict[tuple[str, str], tuple[str, str]],
    sockets: Any,
    params: Any,
    query_type: str = "A",
    after_each: Any = None,
) -> None:
    """Each request flow traced TTL by TTL at each target, up to its distance (from the
    trace; the maximum TTL when it was not reached), added to the record."""
    from reachtest.report.record import add_requests
    from reachtest.session import trace_request

    raw = sockets is not None and bool(sockets.sockets)
    for target in record["targets"]:
        last = min(target["distance"] or params.max_ttl, params.max_ttl)
        first = min(params.first_ttl, last)  # -f past the target: still up to it
        for kind, port in requests:
            name, control = asked[(target["address"], kind)]
            verdict, outcomes = trace_request(
                target["address"], port, kind, name, control,
                range(first, last + 1), timeout_s=params.timeout_s, raw=raw,
                sockets=sockets, query_type=query_type,
            )  # fmt: skip
            add_requests(
                target, f"{kind}/{port}", verdict, outcomes,
                "raw" if raw and kind != "dns" else "ordinary",
                query_type=query_type if kind == "dns" else None,
            )  # fmt: skip
            if after_each is not None:
                after_each()


def _trace_mtu(record: dict[str, Any], params: Any) -> None:
    """Each traced flow's path MTU at each target, into the record (``session``)."""
    from reachtest.session import measure_mtu

    if sys.stderr.isatty():
        _tell("finding each flow's path MTU ...")
    for target in record["targets"]:
        measure_mtu(target, params.timeout_s)


def _trace_branches(record: dict[str, Any], params: Any, confidence: float) -> None:
    """Each traced flow spread over many flow hashes at each target (``session``), with
    a progress line on a terminal."""
    from reachtest.session import measure_branches

    def progress(flow: str, probes: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\x1b[Kmultipath: {flow}, {probes} probes ")
            sys.stderr.flush()

    for target in record["targets"]:
        measure_branches(
            target, confidence=confidence, timeout_s=params.timeout_s, progress=progress
        )
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")


def _names(names: Any) -> dict[str, str]:
    return {} if names is None else dict(names.names())


def _run_with_progress(session: Any) -> Any:
    """Run a session without the live view; a transient progress line on a terminal."""
    if not sys.stderr.isatty():
        return session.run_quiet()
    console = _console(stderr=True)
    rounds = 1 if session.tracer.params.fast else session.tracer.params.rounds
    with console.status("starting", spinner="dots") as status:

        def tick() -> None:
            status.update(
                f"round {session.tracer.rounds_started}/{rounds} · "
                f"{session.tracer.sent} probes · {session.elapsed_s():.1f} s (Ctrl-C stops)"
            )

        return session.run_quiet(on_tick=tick)


def _live_frame(session: Any, width: int, meta: Any) -> Any:
    """One frame of the live view: the report so far, and the progress line."""
    from rich.text import Text

    from reachtest.analysis.analyse import analyse
    from reachtest.report.record import build_record
    from reachtest.report.terminal import Progress, render
    from reachtest.report.view import build_view

    snapshot = session.snapshot()
    params = snapshot.params
    progress = Progress(
        round=session.tracer.rounds_started,
        rounds=1 if params.fast else params.rounds,
        elapsed_s=session.elapsed_s(),
    )
    if not session.accumulated.counted:
        return Text(
            f"waiting for the first answers · round {progress.round}/{progress.rounds} · "
            f"{progress.elapsed_s:.1f} s · press q to stop",
            style="bold",
        )
    analysis = analyse(session.accumulated, params, snapshot.budgets)
    record = build_record(snapshot, analysis, meta, detail=False)
    return render(build_view(record), width, progress)


@cli.command("show", epilog=TRACE_EXIT_HELP)
@click.argument("record_file", metavar="RUN.json")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(RENDER)),
    default="text",
    show_default=True,
    help="What to print (or write with -o).",
)
@click.option("-o", "--output", metavar="FILE", help="Write the --format output to FILE.")
@click.option("--csv", "csv_path", metavar="FILE|-", help="Also write hop statistics (CSV).")
@click.option(
    "--markdown", "markdown_path", metavar="FILE|-", help="Also write the report as Markdown."
)
@click.option("--html", "html_path", metavar="FILE|-", help="Also write the report as HTML.")
def show_command(
    record_file: str,
    fmt: str,
    output: str | None,
    csv_path: str | None,
    markdown_path: str | None,
    html_path: str | None,
) -> int:
    """Print the report of a saved run record (from `trace --json` or `--save`), without
    the network: as text (the same as the trace printed), or --format html, markdown,
    csv or json.

    The exit code is the one the run gave.
    """
    from reachtest.report.record import load_record

    if output == "-":
        output = None
    extra = {"csv": csv_path, "markdown": markdown_path, "html": html_path}
    check_outputs(extra)
    check_output(output, WHAT[fmt])
    check_distinct(
        {f"-o ({WHAT[fmt]})": output, **{WHAT[k]: v for k, v in extra.items()}},
        {"the run record read": record_file},
    )
    extra_on_stdout = "-" in extra.values()
    if output is None and fmt != "text" and extra_on_stdout:
        raise UsageError(f"--format {fmt} already writes to stdout: give it -o FILE")
    record = load_record(record_file)
    written = write_outputs(record, extra)
    if output is not None:
        written += write_outputs(record, {fmt: output})
    elif fmt != "text":
        write_outputs(record, {fmt: "-"})
    elif not extra_on_stdout:
        print_report(record)
    for path in written:
        _tell(f"wrote {path}")
    return exit_code(record)


DEMO_LAB = "demo"


def _demo_summary(record: dict[str, Any]) -> list[str]:
    """Per target: the headline, each service's verdict, and the findings, one line each."""
    from reachtest.report.view import build_view

    lines = []
    for t in build_view(record).targets:
        lines.append(f"{t.host} ({t.address}): {t.headline}")
        for v in t.verdicts:
            lines.append(f"  {v.flow:<9} {v.state:<12} {v.detail}")
        lines += [f"  [{f.severity}] {f.summary}" for f in t.findings]
    return lines


@cli.command("demo", epilog=EXIT_CODES_HELP)
@click.option(
    "--out-dir",
    default=DEFAULT_OUT_DIR,
    show_default=True,
    metavar="DIR",
    help="Where the reports go (never overwrites).",
)
@click.option("-c", "--report-cycles", "rounds", type=int, default=5, show_default=True)
@click.option("-i", "--interval", type=float, default=0.5, show_default=True)
def demo_command(out_dir: str, rounds: int, interval: float) -> int:
    """Show what reachtest does, on a lab of its own: bring up the `combo` scenario (one
    router rejects DNS, one drops HTTPS, one forges RSTs for tcp/8080; ping, SSH and
    HTTP pass), trace every service from the lab's client, save the run as JSON, HTML
    and Markdown, print the findings, and tear the lab down (also on Ctrl-C).

    Needs root (network namespaces). Nothing leaves this machine: the lab's client has no
    default route and every address is from 198.18.0.0/15 and 2001:db8::/32.
    """
    import signal
    import subprocess

    from reachtest.lab import manager
    from reachtest.lab.netns import require_lab_privileges
    from reachtest.report.record import parse_record

    check_out_dir(out_dir)
    _params(rounds=rounds, interval_s=interval)
    require_lab_privileges()
    out = _console()
    try:
        plan = manager.up("combo", lab_id=DEMO_LAB, progress=_progress)
        out.print(f"[bold]Lab up[/bold]: {plan.scenario.description}")
        ports = ",".join(str(p) for p in plan.services.tcp_ports)
        command = [
            sys.executable, "-m", "reachtest", "trace", "server", "-4",
            "-p", f"tcp/{ports}", "-p", f"udp/{plan.services.dns_port}",
            "-c", str(rounds), "-i", str(interval), "--json", "-",
        ]  # fmt: skip
        out.print(f"Tracing from the lab's client: reachtest {shlex.join(command[3:])}")
        child = subprocess.Popen(
            manager.exec_argv(DEMO_LAB, "client", command),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with _console(stderr=True).status(
                f"tracing {rounds} rounds of {interval} s", spinner="dots"
            ):
                record_text, errors = child.communicate()
        except KeyboardInterrupt:
            # It got the Ctrl-C too: it stops and writes its record, which is read (to
            # nowhere) so that a record larger than the pipe cannot block it.
            child.communicate(timeout=30)
            raise
        if child.returncode not in (EXIT_OK, 1):
            sys.stderr.write(errors)
            raise LabError(f"the trace in the lab failed (exit {child.returncode})")
        record = parse_record(record_text, "the demo's trace")
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # tear down whatever comes
        try:
            manager.down(DEMO_LAB, progress=_progress)
        finally:
            signal.signal(signal.SIGINT, previous)
    written = save_reports(record, out_dir)
    out.print("Lab removed. What the trace found:", style="bold")
    for line in _demo_summary(record):
        out.print(line, highlight=False, markup=False)
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    html = next(p for p in written if p.suffix == ".html")
    out.print(f"[bold]Open the HTML report:[/bold] {html.resolve().as_uri()}", highlight=False)
    return EXIT_OK
