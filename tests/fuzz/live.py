"""The live fuzz run: mutated datagrams against a running concentrator, bounded in count and time.

    python -m tests.fuzz.live --peer 198.51.100.50 --local 203.0.113.20 --seconds 30 --rate 3000 \
        [--spi 0x... (repeat)] [--replay FILE] [--seed N] [--record FILE]

Lab use only (issue: hold under attack and faults): run it in the lab's pubclient namespace
(tests/lab/test_live_fuzz.py does). From the seed corpus (tests.fuzz.seeds: every datagram of the seed flow) it
sends, at --rate a second for --seconds (and never more than --max-packets), datagrams of these kinds:

    ike500        a mutated IKE message to UDP 500
    ike4500       a mutated IKE message behind the non-ESP marker to UDP 4500
    udp4500       a mutated datagram without the marker to UDP 4500 (an IKE message read as ESP, the seeds' ESP,
                  a keepalive, junk)
    esp-live      ESP on 4500 with a LIVE SPI (--spi: the concentrator's inbound SPIs of the lab clients) and a
                  garbage body, with sequence numbers zero, far ahead, near what the SA has seen
    esp-replay    a captured ESP packet of a live SPI sent again as it was (--replay, from tests.fuzz.livecap)
    esp-mutated   a captured ESP packet, mutated (bit flips, truncation, splices, padding)
    ike-live      a captured IKE message of a live IKE SA (its cookies), sent again as it was or with its body
                  mutated, to 4500 behind the marker or to 500: it reaches the SA's decryption, hash and
                  message-ID checks, and must move nothing (no float to our address, no exchange done twice)

Mutations (tests.fuzz.mutate): bit flips, truncations, length-field lies, splices, header-field rewrites,
interesting bytes, random junk; one to three stacked. Prints one JSON object: datagrams by kind and by operator,
replies and their bytes, the achieved rate. With --record every datagram is written (time, kind, port, bytes) so
that a finding can be traced to its input (tests.fuzz.live.read_record).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from natt.wire.constants import IKE_PORT, NAT_KEEPALIVE, NATT_PORT
from tests.fuzz.mutate import Corpus, Mutator, esp_seq, with_marker

KINDS = ("ike500", "ike4500", "udp4500", "esp-live", "esp-replay", "esp-mutated", "ike-live")
WEIGHTS = {"ike500": 20, "ike4500": 20, "udp4500": 15, "esp-live": 20, "esp-replay": 5, "esp-mutated": 10,
           "ike-live": 10}
COOKIES = 16  # an IKE message's first bytes: initiator and responder cookie
EPHEMERAL_SOCKETS = 4
DRAIN_EVERY = 256
_RECORD = struct.Struct("<dBHH")  # wall time, kind index, destination port, length; then the bytes


class Sender:
    """Sockets on the attacker's side: its 500, its 4500 and a few ephemeral ports; counts what comes back."""

    def __init__(self, local: str, peer: str) -> None:
        self.peer = peer
        self.socks: list[socket.socket] = []
        for port in (IKE_PORT, NATT_PORT, *([0] * EPHEMERAL_SOCKETS)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((local, port))
            s.setblocking(False)
            self.socks.append(s)
        self.replies = self.reply_bytes = self.errors = 0

    def send(self, data: bytes, port: int, pick: int) -> None:
        try:
            self.socks[pick % len(self.socks)].sendto(data, (self.peer, port))
        except OSError:  # a full buffer (EAGAIN), ICMP errors reported on the socket
            self.errors += 1

    def drain(self) -> None:
        for s in self.socks:
            while True:
                try:
                    data = s.recv(65535)
                except OSError:  # BlockingIOError when empty; ECONNREFUSED reported late
                    break
                self.replies += 1
                self.reply_bytes += len(data)

    def close(self) -> None:
        self.drain()
        for s in self.socks:
            s.close()


@dataclass
class Captured:
    """What tests.fuzz.livecap kept: ESP packets (live SPIs) and IKE messages (live cookies, no marker)."""

    esp: list[bytes] = field(default_factory=list)
    ike: list[bytes] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | None) -> Captured:
        c = cls()
        if path:
            for line in Path(path).read_text().splitlines():
                kind, _, data = line.partition(" ")
                if kind in ("esp", "ike") and data:
                    getattr(c, kind).append(bytes.fromhex(data))
        return c


def write_record(f: BinaryIO, wall: float, kind: str, port: int, data: bytes) -> None:
    f.write(_RECORD.pack(wall, KINDS.index(kind), port, len(data)))
    f.write(data)


def read_record(path: Path) -> Iterator[tuple[float, str, int, bytes]]:
    """(wall time, kind, port, datagram) of every datagram a --record file holds."""
    with path.open("rb") as f:
        while head := f.read(_RECORD.size):
            t, kind, port, n = _RECORD.unpack(head)
            yield t, KINDS[kind], port, f.read(n)


class LiveFuzz:
    def __init__(self, corpus: Corpus, spis: list[int], captured: Captured, seed: int) -> None:
        if not corpus.ike:
            raise ValueError("the corpus holds no IKE message")
        self.rng = random.Random(seed)
        self.mut = Mutator(self.rng)
        self.corpus, self.spis = corpus, spis
        replay = self.replay = captured.esp
        self.live_ike = captured.ike
        self.last_seq: dict[int, int] = {}  # the highest sequence number captured per SPI
        for p in replay:
            spi = int.from_bytes(p[:4], "big")
            self.last_seq[spi] = max(self.last_seq.get(spi, 0), esp_seq(p))
        usable = {"esp-live": bool(spis), "esp-replay": bool(replay), "esp-mutated": bool(replay),
                  "ike-live": bool(self.live_ike)}
        kinds = [k for k in KINDS if usable.get(k, True)]
        self.kinds, self.weights = kinds, [WEIGHTS[k] for k in kinds]
        self.by_kind: Counter[str] = Counter()
        self.by_op: Counter[str] = Counter()
        self.pool = corpus.ike + corpus.esp + replay + self.live_ike
        self.udp_pool = [*self.pool, NAT_KEEPALIVE]

    def next(self) -> tuple[str, int, bytes]:
        """One datagram: (kind, destination port, bytes)."""
        r = self.rng
        kind = r.choices(self.kinds, self.weights)[0]
        op = ""
        if kind == "ike500" or kind == "ike4500":
            data, op = self.mut.mutate(r.choice(self.corpus.ike), self.pool)
            port = IKE_PORT if kind == "ike500" else NATT_PORT
            if kind == "ike4500":
                data = with_marker(data)
        elif kind == "udp4500":
            base = r.choice(self.udp_pool)
            data, op = self.mut.mutate(base, self.pool)
            port = NATT_PORT
        elif kind == "esp-live":
            spi = r.choice(self.spis)
            data, op, port = self.mut.esp_garbage(spi, self.last_seq.get(spi)), "garbage", NATT_PORT
        elif kind == "esp-replay":
            data, op, port = r.choice(self.replay), "verbatim", NATT_PORT
        elif kind == "esp-mutated":
            base = r.choice(self.replay)
            op = r.choice(("bitflip", "truncate", "splice", "interesting", "length-lie"))
            data = self.mut.ops[op](base, self.pool)
            port = NATT_PORT
        else:
            base = r.choice(self.live_ike)
            if r.random() < 0.3:
                data, op = base, "verbatim"
            else:
                data, op = self.mut.mutate(base, self.pool)
                if op == "junk":
                    data = base[:COOKIES] + data  # the live SA's cookies, then anything
                elif len(data) >= COOKIES:
                    data = base[:COOKIES] + data[COOKIES:]  # the live SA's cookies, whatever else changed
            port = r.choice((NATT_PORT, NATT_PORT, IKE_PORT))
            if port == NATT_PORT:
                data = with_marker(data)
        self.by_kind[kind] += 1
        self.by_op[op.split("+")[0]] += 1
        return kind, port, data


def run(fuzz: LiveFuzz, sender: Sender, seconds: float, rate: float, max_packets: int,
        record: BinaryIO | None) -> dict[str, object]:
    sent = sent_bytes = 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    interval = 1.0 / rate
    try:
        while sent < max_packets:
            now = time.monotonic()
            if now >= deadline:
                break
            due = min(max_packets, int((now - t0) / interval) + 1)
            if sent >= due:
                time.sleep(min(0.002, (sent + 1) * interval - (now - t0)))
                continue
            wall = time.time()
            for _ in range(due - sent):
                kind, port, data = fuzz.next()
                sender.send(data, port, fuzz.rng.randrange(1 << 16))
                if record is not None:
                    write_record(record, wall, kind, port, data)
                sent += 1
                sent_bytes += len(data)
                if sent % DRAIN_EVERY == 0:
                    sender.drain()
    finally:
        elapsed = time.monotonic() - t0
        sender.close()
    return {"sent": sent, "sent_bytes": sent_bytes, "send_errors": sender.errors, "seconds": round(elapsed, 2),
            "rate": round(sent / max(elapsed, 1e-9)), "by_kind": dict(fuzz.by_kind),
            "by_op": dict(fuzz.by_op.most_common()), "replies": sender.replies, "reply_bytes": sender.reply_bytes,
            "live_spis": [f"0x{s:08x}" for s in fuzz.spis], "captured_esp": len(fuzz.replay),
            "captured_ike": len(fuzz.live_ike)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="mutated datagrams against a concentrator (lab use only; bounded)")
    p.add_argument("--peer", required=True)
    p.add_argument("--local", default="0.0.0.0", help="the address to send from")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=3000.0, help="datagrams a second")
    p.add_argument("--max-packets", type=int, default=200_000)
    p.add_argument("--spi", action="append", default=[], help="a live inbound ESP SPI (0x..., repeat)")
    p.add_argument("--replay", help="captured datagrams, `esp HEX` / `ike HEX` a line (tests.fuzz.livecap)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--record", help="write every datagram sent to this file")
    a = p.parse_args(argv)
    if not 0 < a.seconds <= 600:
        p.error("--seconds must be in (0, 600]")
    if not 0 < a.rate <= 100_000:
        p.error("--rate must be in (0, 100000]")
    if not 0 < a.max_packets <= 10_000_000:
        p.error("--max-packets must be in (0, 10000000]")
    from tests.fuzz.seeds import seed_inputs  # the protocol simulation: a second or so

    fuzz = LiveFuzz(Corpus.from_seed_inputs(seed_inputs()), [int(s, 0) for s in a.spi], Captured.load(a.replay),
                    a.seed)
    sender = Sender(a.local, a.peer)
    record = open(a.record, "wb") if a.record else None  # noqa: SIM115 - closed below
    try:
        result = run(fuzz, sender, a.seconds, a.rate, a.max_packets, record)
    finally:
        if record is not None:
            record.close()
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
