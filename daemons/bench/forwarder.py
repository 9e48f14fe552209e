"""A bench-only TUN↔UDP forwarder with no crypto: the Python floor under the ESP data path.

    python -m natt_daemons.bench.forwarder --tun fwd0 --local 10.10.10.2:4789 --peer 198.51.100.50:4789 \
        --address 10.99.0.2/32 --route 192.168.2.0/24

Every packet read from the TUN device goes to the peer as one UDP datagram; every datagram received goes
into the TUN device as is. Without --peer the forwarder answers whatever address it last heard from (the
PAT gateway's translation). One selectors loop, each readable descriptor drained a batch at a time, the
same shape as the daemons' data path (natt_daemons.common.datapath) minus ESP.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
from dataclasses import dataclass

from natt_daemons.common.tun import Tun, add_address, add_route, open_tun

MAX_BATCH = 64  # packets taken from one descriptor before the other gets its turn


@dataclass
class Counters:
    tun_in: int = 0
    udp_in: int = 0
    sent: int = 0
    written: int = 0
    drops: int = 0


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"want ADDR:PORT, got {text!r}")
    return host, int(port)


class Forwarder:
    def __init__(self, tun: Tun, sock: socket.socket, peer: tuple[str, int] | None) -> None:
        self.tun, self.sock, self.peer = tun, sock, peer
        self.learn = peer is None
        self.n = Counters()
        self.running = True

    def _tun_readable(self) -> None:
        read, fd, send = os.read, self.tun.fd, self.sock.sendto
        for _ in range(MAX_BATCH):
            try:
                pkt = read(fd, 65535)
            except BlockingIOError:
                return
            self.n.tun_in += 1
            if self.peer is None:
                self.n.drops += 1
                continue
            try:
                send(pkt, self.peer)
                self.n.sent += 1
            except OSError:  # send buffer full (BlockingIOError) or no route: drop, as a router would
                self.n.drops += 1

    def _udp_readable(self) -> None:
        recv, write, fd = self.sock.recvfrom, os.write, self.tun.fd
        for _ in range(MAX_BATCH):
            try:
                data, addr = recv(65535)
            except BlockingIOError:
                return
            self.n.udp_in += 1
            if self.learn:
                self.peer = addr
            try:
                write(fd, data)
                self.n.written += 1
            except OSError:  # not an IP packet the kernel takes, or the TUN queue is full
                self.n.drops += 1

    def run(self) -> None:
        sel = selectors.DefaultSelector()  # epoll on Linux
        sel.register(self.tun.fd, selectors.EVENT_READ, self._tun_readable)
        sel.register(self.sock, selectors.EVENT_READ, self._udp_readable)
        try:
            while self.running:
                for key, _ in sel.select(timeout=1.0):
                    key.data()
        finally:
            sel.close()

    def stop(self, *_: object) -> None:
        self.running = False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m natt_daemons.bench.forwarder", description=__doc__.split("\n")[0])
    ap.add_argument("--tun", required=True, help="TUN device to create")
    ap.add_argument("--local", required=True, type=_hostport, help="UDP ADDR:PORT to bind")
    ap.add_argument("--peer", type=_hostport, help="UDP ADDR:PORT to send to (default: the last sender)")
    ap.add_argument("--address", help="address/prefixlen for the TUN device, e.g. 10.99.0.2/32")
    ap.add_argument("--route", action="append", default=[], help="network to route into the TUN (repeatable)")
    ap.add_argument("--mtu", type=int, default=1400, help="TUN MTU (default 1400, as the daemons' TUN)")
    args = ap.parse_args(argv)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(args.local)
    sock.setblocking(False)
    tun = open_tun(args.tun, mtu=args.mtu)
    if args.address:
        addr, _, plen = args.address.partition("/")
        add_address(args.tun, addr, int(plen or 32))
    for net in args.route:
        add_route(net, dev=args.tun)
    fwd = Forwarder(tun, sock, args.peer)
    signal.signal(signal.SIGTERM, fwd.stop)
    signal.signal(signal.SIGINT, fwd.stop)
    print(f"forwarder ready: {args.tun} <-> udp {args.local[0]}:{args.local[1]}", flush=True)
    try:
        fwd.run()
    finally:
        tun.close()
        sock.close()
        n = fwd.n
        print(f"forwarder stopped: tun_in {n.tun_in} sent {n.sent} udp_in {n.udp_in} written {n.written} "
              f"drops {n.drops}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
