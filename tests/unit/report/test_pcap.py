"""The pcap writer: a file scapy's reader (our oracle) reads back with every packet, in
time order, with nanosecond timestamps and the RAW link type that holds both families."""

from __future__ import annotations

import io
from pathlib import Path

from scapy.compat import raw
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.utils import RawPcapReader

from reachtest.report.pcap import LINKTYPE_RAW, PcapStream

OFFSET = 1_795_000_000_000_000_000  # monotonic 0 = this Unix time in ns


def render_pcap(packets: list[tuple[int, bytes]], offset: int) -> bytes:
    """The file a run with these (monotonic ns, packet) pairs writes."""
    out = io.BytesIO()
    stream = PcapStream(out, offset)
    for ns, packet in packets:
        stream.add(ns, packet)
    stream.close()
    return out.getvalue()


def test_packets_come_back_in_time_order_with_nanoseconds() -> None:
    v4 = raw(IP(src="198.18.1.1", dst="198.18.6.2", ttl=3) / ICMP(id=7, seq=1))
    v6 = raw(IPv6(src="2001:db8:0:1::1", dst="2001:db8:0:6::2", hlim=2) / ICMPv6EchoRequest())
    data = render_pcap([(2_000_000_123, v6), (1_000_000_007, v4)], OFFSET)
    reader = RawPcapReader(io.BytesIO(data))
    assert reader.linktype == LINKTYPE_RAW and reader.nano
    records = list(reader)
    assert [packet for packet, _ in records] == [v4, v6]
    stamps = [(meta.sec, meta.usec) for _, meta in records]  # usec holds ns in a nano file
    assert stamps == [(1_795_000_001, 7), (1_795_000_002, 123)]


def test_an_empty_run_still_gives_a_valid_file() -> None:
    data = render_pcap([], OFFSET)
    assert len(data) == 24 and data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")


def _packet(i: int) -> bytes:
    return raw(IP(src="198.18.1.1", dst="198.18.6.2", ttl=1 + i % 30, id=i % 65536) / ICMP())


def test_a_long_run_streams_in_time_order_with_flat_memory() -> None:
    """20,000 packets a millisecond apart (20 s of run), each arriving up to 50 ms late: the
    stream holds only its 2 s window, writes as it goes, and the file is in time order."""
    import random

    from reachtest.report.pcap import PcapStream

    rng = random.Random(1)
    packets = [_packet(i) for i in range(30)]
    out = io.BytesIO()
    stream = PcapStream(out, OFFSET)
    most_waiting = 0
    written_midway = 0
    for i in range(20_000):
        stream.add(i * 1_000_000 - rng.randrange(50_000_000) + 50_000_000, packets[i % 30])
        most_waiting = max(most_waiting, len(stream._waiting))
        if i == 10_000:
            written_midway = stream.written
    stream.close()
    assert most_waiting <= 2_200  # the window: 2 s of packets, not the run
    assert written_midway > 7_500  # on disk as it goes
    stamps = [(meta.sec, meta.usec) for _, meta in RawPcapReader(io.BytesIO(out.getvalue()))]
    assert len(stamps) == 20_000 and stamps == sorted(stamps)


def test_a_run_killed_outright_leaves_a_readable_partial_file(tmp_path: Path) -> None:
    """SIGKILL mid-run: no file at the name asked for (nothing half-written there), and the
    temporary file beside it reads back, every record whole, as far as it was flushed."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from reachtest.cli.output import StreamFile\n"
        "from reachtest.report.pcap import PcapStream\n"
        "out = StreamFile(Path(sys.argv[1]))\n"
        "stream = PcapStream(out.file, 0, window_ns=1_000_000)\n"
        "i = 0\n"
        "while True:\n"
        "    stream.add(i * 10_000_000, bytes.fromhex(sys.argv[2]))\n"
        "    i += 1\n"
        "    if i == 200: print('ready', flush=True)\n"
        "    time.sleep(0.0005)\n"
    )
    target = tmp_path / "run.pcap"
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(target), _packet(1).hex()],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not target.exists()
    (partial,) = tmp_path.glob(".run.pcap.*.partial")
    records = list(RawPcapReader(str(partial)))
    assert len(records) >= 150 and all(packet == _packet(1) for packet, _ in records)


def test_the_stream_file_is_renamed_whole_or_removed(tmp_path: Path) -> None:
    from reachtest.cli.output import StreamFile

    done = StreamFile(tmp_path / "a.pcap")
    done.file.write(b"whole")
    assert done.commit() == tmp_path / "a.pcap" and (tmp_path / "a.pcap").read_bytes() == b"whole"
    failed = StreamFile(tmp_path / "b.pcap")
    failed.file.write(b"half")
    failed.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pcap"]
