"""Build tests/corpus/replies.pcap and its manifest: ICMP error messages that real
routers sent, taken from public captures and test suites (never invented), for the
parser's corpus test (issue 27). Needs the snapshots of the source repositories
(`fetch` them first); run once, commit the result.

Usage: .venv/bin/python scripts/make_corpus.py TCPDUMP_REPO TRIPPY_REPO

Sources:
- tcpdump (BSD-3-Clause): tests/mpls-traceroute.pcap (a 2004 Juniper MPLS traceroute:
  time exceeded with RFC 4950 label stacks), tests/icmp-rfc5837.pcap (an RFC 5837
  interface information object), tests/afs.pcap (port unreachables quoting UDP),
  tests/dhcp-rfc4388.pcap. Every ICMP error of each file, as captured (its IP packet).
- trippy (Apache-2.0): the ICMP messages of crates/trippy-packet/src/icmp_extension.rs'
  tests (non-compliant and compliant extensions, an IPv6 time exceeded whose length
  field says 80 octets while its extensions sit at 128). They are ICMP messages only:
  an IP header is put in front (documentation addresses), and the manifest says so.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.utils import RawPcapReader, RawPcapWriter

OUT = Path(__file__).resolve().parents[1] / "tests" / "corpus"
TCPDUMP_FILES = (
    "tests/mpls-traceroute.pcap", "tests/icmp-rfc5837.pcap", "tests/afs.pcap",
    "tests/dhcp-rfc4388.pcap",
)  # fmt: skip
TRIPPY_FILE = "crates/trippy-packet/src/icmp_extension.rs"


def _commit(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _show(repo: Path, path: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, check=True
    ).stdout


def _is_error(packet: bytes) -> bool:
    if packet[0] >> 4 == 4:
        return packet[9] == 1 and packet[(packet[0] & 0x0F) * 4] in (3, 11, 12)
    return packet[6] == 58 and 1 <= packet[40] <= 4


def _ip_of(frame: bytes, linktype: int) -> bytes | None:
    """The IP packet of a frame (Ethernet, PPP or raw IP); None for anything else (an
    MPLS-labelled probe, ARP)."""
    if linktype == 1:  # Ethernet, a VLAN tag or not
        at, ethertype = 12, int.from_bytes(frame[12:14], "big")
        while ethertype == 0x8100:
            at += 4
            ethertype = int.from_bytes(frame[at : at + 2], "big")
        body, kind = frame[at + 2 :], {0x0800: 4, 0x86DD: 6}.get(ethertype)
    elif linktype == 9:  # PPP, in HDLC framing or not
        at = 2 if frame[:2] == b"\xff\x03" else 0
        protocol = int.from_bytes(frame[at : at + 2], "big")
        body, kind = frame[at + 2 :], {0x0021: 4, 0x0057: 6}.get(protocol)
    elif linktype in (101, 228, 229):
        body, kind = frame, frame[0] >> 4 if frame else None
    else:
        return None
    if kind is None or not body or body[0] >> 4 != kind:
        return None
    if kind == 4:
        return body[: int.from_bytes(body[2:4], "big")]
    return body[: 40 + int.from_bytes(body[4:6], "big")]


def tcpdump(repo: Path) -> list[tuple[dict[str, object], bytes]]:
    commit = _commit(repo)
    found = []
    for path in TCPDUMP_FILES:
        local = OUT / "source.pcap"
        local.write_bytes(_show(repo, path))
        try:
            reader = RawPcapReader(str(local))
            linktype = reader.linktype
            for frame, (data, _meta) in enumerate(reader, start=1):
                raw = _ip_of(data, linktype)
                if raw is not None and _is_error(raw):
                    found.append(({
                        "source": "the-tcpdump-group/tcpdump", "commit": commit, "path": path,
                        "frame": frame, "licence": "BSD-3-Clause", "as": "captured",
                    }, raw))  # fmt: skip
            reader.close()
        finally:
            local.unlink()
    return found


def trippy(repo: Path) -> list[tuple[dict[str, object], bytes]]:
    commit = _commit(repo)
    text = _show(repo, TRIPPY_FILE).decode()
    found = []
    test = re.compile(r"fn (test_\w+)\(\) \{\s*let buf = hex_literal::hex!\(\s*\"([0-9a-f\s]+)\"")
    for match in test.finditer(text):
        name, icmp = match.group(1), bytes.fromhex("".join(match.group(2).split()))
        v6 = "ipv6" in name
        if v6:
            header = IPv6(src="2001:db8::1", dst="2001:db8::2", nh=58, hlim=64, plen=len(icmp))
        else:
            header = IP(src="192.0.2.1", dst="198.51.100.2", proto=1, ttl=64, len=20 + len(icmp))
        found.append(({
            "source": "fujiapple852/trippy", "commit": commit, "path": TRIPPY_FILE, "test": name,
            "licence": "Apache-2.0",
            "as": "ICMP message; IP header added (documentation addresses)",
        }, bytes(header) + icmp))  # fmt: skip
    return found


def main() -> int:
    tcpdump_repo, trippy_repo = (Path(a) for a in sys.argv[1:3])
    packets = tcpdump(tcpdump_repo) + trippy(trippy_repo)
    OUT.mkdir(parents=True, exist_ok=True)
    writer = RawPcapWriter(str(OUT / "replies.pcap"), linktype=101)  # raw IP
    writer.write_header(None)
    for _meta, raw in packets:
        writer.write_packet(raw, sec=0, usec=0)
    writer.close()
    manifest = [{"number": i, **meta} for i, (meta, _raw) in enumerate(packets, start=1)]
    (OUT / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(packets)} packets: {OUT / 'replies.pcap'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
