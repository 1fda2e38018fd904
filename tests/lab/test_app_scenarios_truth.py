"""The application-filter scenarios behave as their ground truth says (issue 26's lab):
the server speaks real TLS, HTTP and DNS; a router resets ClientHellos naming the test
SNI, or drops HTTP requests for the test Host, after the handshake, or an on-path box
injects a reset, a block page or a DNS answer; the control name passes; the
port is open at the SYN. Checked over IPv4 and IPv6 with independent tools (openssl
s_client, curl) and with plain sockets sending the request with TTL 1 .. the server's
distance after a normal handshake (time-exceeded from each router before the box, then
the box's reset or silence; the control's answer from the server)."""

from __future__ import annotations

import subprocess

import pytest

from reachtest.lab import netns
from reachtest.lab.scenarios import AppKind, RequestTruth
from tests.lab import netprobe
from tests.lab.conftest import REQUEST_SCENARIOS, Lab, MakeLab, reachtest_cmd


def in_client(lab: Lab, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *argv],
        capture_output=True, text=True, timeout=timeout, check=False, input="",
    )  # fmt: skip


def fetch(lab: Lab, request: RequestTruth, name: str, v6: bool) -> subprocess.CompletedProcess[str]:
    """The request as users' tools make it: openssl s_client (TLS), curl (HTTP), dig
    (DNS, one try, its short answer)."""
    server = f"[{lab.server(True)}]" if v6 else lab.server()
    if request.kind is AppKind.DNS:
        return in_client(
            lab, "dig", f"@{lab.server(v6)}", "+tries=1", "+time=2", "+short", name, "A"
        )
    if request.kind is AppKind.TLS:
        return in_client(lab, "timeout", "5", "openssl", "s_client", "-connect",
                         f"{server}:{request.port}", "-servername", name, "-brief")  # fmt: skip
    return in_client(lab, "curl", "-s", "-m", "3", "-H", f"Host: {name}",
                     f"http://{server}:{request.port}/")  # fmt: skip


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("name", REQUEST_SCENARIOS)
def test_users_tools_see_the_name_blocked_and_the_control_served(
    make_lab: MakeLab, name: str, v6: bool
) -> None:
    from reachtest.lab.inject import BLOCK_PAGE_BODY, FORGED_V4

    lab = make_lab(name)
    (request,) = lab.plan.scenario.truth.requests
    if request.kind is not AppKind.DNS:
        with netns.entered(lab.plan.topology.netns("client")):
            assert netprobe.tcp_probe(lab.server(v6), request.port).kind == "tcp-syn-ack"
    control = fetch(lab, request, request.control, v6)
    blocked = fetch(lab, request, request.name, v6)
    served = f"reachtest lab server: served {request.control}\n"
    if request.kind is AppKind.TLS:
        assert "CONNECTION ESTABLISHED" in control.stderr + control.stdout, control
        assert "errno=104" in blocked.stderr + blocked.stdout, blocked  # ECONNRESET
    elif request.kind is AppKind.DNS:
        assert control.returncode == 0 and control.stdout == f"{lab.server()}\n", control
        if request.reason == "dropped":
            assert blocked.returncode == 9 and "timed out" in blocked.stdout, blocked
        else:
            assert blocked.returncode == 0 and blocked.stdout == f"{FORGED_V4}\n", blocked
    elif request.reason == "block-page":
        assert control.stdout == served, control
        assert blocked.returncode == 0 and blocked.stdout == BLOCK_PAGE_BODY.decode(), blocked
    else:
        assert control.stdout == served, control
        assert blocked.returncode == 28 and blocked.stdout == "", blocked  # curl: timed out


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("name", REQUEST_SCENARIOS)
def test_ttl_limited_requests_meet_the_box_at_its_hop(
    make_lab: MakeLab, name: str, v6: bool
) -> None:
    lab = make_lab(name)
    truth = lab.plan.scenario.truth
    (request,) = truth.requests
    assert request.hop is not None
    dns = request.kind is AppKind.DNS
    make = {
        AppKind.TLS: netprobe.client_hello, AppKind.HTTP: netprobe.http_request,
        AppKind.DNS: netprobe.dns_query,
    }[request.kind]  # fmt: skip
    dst = lab.server(v6)
    answered = netprobe.Answer("udp-reply" if dns else "answered", dst)
    with netns.entered(lab.plan.topology.netns("client")):
        for ttl in range(1, truth.server_hop + 1):
            for which in (request.name, request.control):
                if dns:
                    got = netprobe.udp_probe(dst, request.port, make(which), ttl, 1.0)
                else:
                    got = netprobe.request_probe(dst, request.port, make(which), ttl)
                expired = {netprobe.Answer("time-exceeded", a) for a in lab.hop(ttl, v6)}
                if ttl <= request.hop or (which == request.control and ttl < truth.server_hop):
                    want = expired
                elif which == request.control:
                    want = {answered}
                elif request.reason in ("block-page", "dns-injected"):  # forged; it goes on
                    want = {answered} | (expired if ttl < truth.server_hop else set())
                elif request.reason == "reset":
                    want = {netprobe.Answer("tcp-rst", dst)}
                    if not request.in_path and ttl < truth.server_hop:  # the request goes on
                        want |= expired
                else:
                    want = {netprobe.TIMEOUT}
                assert got in want, (which, ttl, got, want)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_the_injector_resets_while_the_server_still_answers(make_lab: MakeLab, v6: bool) -> None:
    """On-path: the forged RST (from r3's distance: reply TTL 62 over IPv4) comes first,
    then the server's own ServerHello (reply TTL 59), seen on a raw TCP socket."""
    import select
    import socket
    import time

    lab = make_lab("tls-sni-inject")
    dst = lab.server(v6)
    family = socket.AF_INET6 if v6 else socket.AF_INET
    seen: list[tuple[str, int | None]] = []  # ("rst" | "data", reply TTL (v4))
    with (
        netns.entered(lab.plan.topology.netns("client")),
        socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP) as capture,
        socket.socket(family, socket.SOCK_STREAM) as sock,
    ):
        sock.settimeout(2)
        sock.connect((dst, 443))
        sport = sock.getsockname()[1]
        sock.send(netprobe.client_hello("blocked.example"))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and not {"rst", "data"} <= {k for k, _ in seen}:
            if not select.select([capture], [], [], 0.1)[0]:
                continue
            packet, sender = capture.recvfrom(65535)
            ttl = None if v6 else packet[8]
            segment = packet if v6 else packet[(packet[0] & 0x0F) * 4 :]
            ports = (int.from_bytes(segment[0:2], "big"), int.from_bytes(segment[2:4], "big"))
            if sender[0] != dst or ports != (443, sport):
                continue
            if segment[13] & 0x04:
                seen.append(("rst", ttl))
            elif len(segment) > (segment[12] >> 4) * 4:
                seen.append(("data", ttl))
    kinds = [k for k, _ in seen]
    assert "rst" in kinds and "data" in kinds and kinds.index("rst") < kinds.index("data"), seen
    if not v6:
        assert dict(seen) == {"rst": 62, "data": 59}, seen  # r3 forged it; the server sent data


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_the_dns_injector_answers_first_and_the_server_after(make_lab: MakeLab, v6: bool) -> None:
    """On-path: the forged answer (the injector's address) comes first, then the
    server's own (the server's address), both in the server's name, on a plain socket."""
    import socket
    import time

    from reachtest.lab.inject import FORGED_V4

    lab = make_lab("dns-qname-inject")
    dst = lab.server(v6)
    answers: list[bytes] = []
    with (
        netns.entered(lab.plan.topology.netns("client")),
        socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.connect((dst, 53))
        sock.settimeout(0.3)
        sock.send(netprobe.dns_query("blocked.example"))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and len(answers) < 2:
            try:
                answers.append(sock.recv(4096))
            except TimeoutError:
                continue
    forged = socket.inet_aton(FORGED_V4)
    assert len(answers) == 2, answers
    assert answers[0].endswith(forged) and answers[1].endswith(socket.inet_aton(lab.server()))
