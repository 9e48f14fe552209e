"""Real datagrams of live SAs, read off an interface (AF_PACKET), for the live fuzz run to replay and mutate.

    python -m tests.fuzz.livecap --iface public --address 198.51.100.50 --seconds 5 --out FILE

Run in the concentrator's namespace of the lab. It keeps, for at most --seconds and --max-packets:

    esp   ESP-in-UDP to --address port 4500 (no non-ESP marker): the clients' traffic under live inbound SPIs
    ike   IKE behind the non-ESP marker to or from --address port 4500 (kept without the marker): live cookies

One datagram a line, `esp HEX` or `ike HEX` (the UDP payload), which tests.fuzz.live --replay reads. No key is
involved: what is kept is what any on-path observer sees.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time
from pathlib import Path

ETH_P_ALL = 0x0003  # outgoing frames too (a socket bound to ETH_P_IP sees only incoming ones)
ETH_HEADER = 14
UDP = 17
NATT_PORT = 4500
MARKER = b"\x00\x00\x00\x00"


def classify(frame: bytes, address: bytes) -> tuple[str, bytes] | None:
    """("esp" | "ike", UDP payload without marker) of an Ethernet/IPv4/UDP frame on `address`:4500, else None."""
    if len(frame) < ETH_HEADER + 28 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[ETH_HEADER:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != UDP or len(ip) < ihl + 8:
        return None
    src_port = int.from_bytes(ip[ihl : ihl + 2], "big")
    dst_port = int.from_bytes(ip[ihl + 2 : ihl + 4], "big")
    to_us = ip[16:20] == address and dst_port == NATT_PORT
    from_us = ip[12:16] == address and src_port == NATT_PORT
    payload = ip[ihl + 8 : int.from_bytes(ip[2:4], "big")]
    if len(payload) < 8:
        return None
    if payload[:4] == MARKER:
        return ("ike", payload[4:]) if (to_us or from_us) and len(payload) >= 32 else None
    return ("esp", payload) if to_us else None


def capture(iface: str, address: str, seconds: float, max_packets: int) -> list[tuple[str, bytes]]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.setblocking(False)
    want = socket.inet_aton(address)
    out: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + seconds
    try:
        while len(out) < max_packets and (left := deadline - time.monotonic()) > 0:
            if not select.select([s], [], [], min(left, 0.2))[0]:
                continue
            while len(out) < max_packets:
                try:
                    frame = s.recv(65535)
                except BlockingIOError:
                    break
                kept = classify(frame, want)
                if kept is not None:
                    out.append(kept)
    finally:
        s.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="capture live ESP and IKE datagrams for replay (lab use only; bounded)")
    p.add_argument("--iface", required=True)
    p.add_argument("--address", required=True, help="the concentrator's public address")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--max-packets", type=int, default=500)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if not 0 < a.seconds <= 60:
        p.error("--seconds must be in (0, 60]")
    got = capture(a.iface, a.address, a.seconds, a.max_packets)
    Path(a.out).write_text("".join(f"{kind} {data.hex()}\n" for kind, data in got))
    print(f"{sum(k == 'esp' for k, _ in got)} ESP and {sum(k == 'ike' for k, _ in got)} IKE datagrams in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
