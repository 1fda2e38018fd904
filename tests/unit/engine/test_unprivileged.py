"""The unprivileged transport's bookkeeping without a network (real packets: the lab
tests): a TCP probe when no descriptor is left is counted, not a crash, and the open
file limit is raised for the sockets of probes in flight."""

from __future__ import annotations

import resource

from reachtest.engine.unprivileged import UnprivilegedTransport
from reachtest.model import Protocol
from reachtest.packet.build import ProbeTemplate


def test_a_tcp_probe_with_no_descriptor_left_is_counted_and_not_sent() -> None:
    transport = UnprivilegedTransport()
    try:
        transport._tcp_limit = 0
        probe = ProbeTemplate(
            src="198.18.1.1", dst="198.18.6.2", protocol=Protocol.TCP, sport=40000, dport=443
        ).build(3, 1)
        transport.send(probe, 4, "198.18.6.2")
        assert (transport.tcp_skipped, transport.tcp_sent, len(transport._tcp)) == (1, 0, 0)
    finally:
        transport.close()


def test_the_open_file_limit_is_raised_to_the_hard_one() -> None:
    transport = UnprivilegedTransport()
    transport.close()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == (65536 if hard == resource.RLIM_INFINITY else hard)
