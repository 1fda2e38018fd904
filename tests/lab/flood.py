"""Unrelated traffic for the receive-filter tests: UDP datagrams at a steady rate to the
client, from a lab router's namespace, to ports nothing listens on and from a port no
probe uses. Runs ``--seconds``, then prints how many it sent."""

from __future__ import annotations

import argparse
import contextlib
import socket
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--to", required=True)
    parser.add_argument("--pps", type=float, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.to else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 31337))
    payload = bytes(64)
    start = time.monotonic()
    sent = 0
    print("ready", flush=True)
    while (now := time.monotonic()) - start < args.seconds:
        due = int((now - start) * args.pps)
        while sent < due:
            with contextlib.suppress(OSError):  # a full buffer, an ICMP error: go on
                sock.sendto(payload, (args.to, 20000 + sent % 1000))
            sent += 1
        time.sleep(0.001)
    print(sent, flush=True)


if __name__ == "__main__":
    main()
