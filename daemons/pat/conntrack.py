"""The translations our masquerade made, read from the kernel's connection tracking table (ctnetlink).

A connection is one of ours when its original source is on the inside network and its reply goes
to the outside address: that reply tuple's destination is the global address and port the PAT
chose. dump_translations() reads them with pyroute2's NFCTSocket (no `conntrack` binary);
XlateTracker keeps what a snapshot alone cannot give: "most used", how many were seen, and
packet/byte totals that survive the expiry of the connections they were counted on.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

PORTED = {socket.IPPROTO_TCP, socket.IPPROTO_UDP, 33, 132, 136}  # tcp, udp, dccp, sctp, udplite
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 50: "esp", 51: "ah", 132: "sctp",
               136: "udplite"}


@dataclass(frozen=True)
class Translation:
    id: int
    proto: str
    inside_addr: str
    inside_port: int | None  # None for protocols without ports (ESP); the ICMP id for ICMP
    global_addr: str
    global_port: int | None
    dest_addr: str
    dest_port: int | None
    timeout: int
    packets_out: int = 0  # inside → outside (conntrack "original" direction)
    bytes_out: int = 0
    packets_in: int = 0  # outside → inside ("reply")
    bytes_in: int = 0
    started: float | None = None  # wall-clock seconds, when nf_conntrack_timestamp is on

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.id, self.proto, self.inside_addr, self.inside_port, self.dest_addr, self.dest_port)

    def as_dict(self) -> dict[str, Any]:
        """The control socket's shape of one `xlate` entry."""
        return {
            "proto": self.proto,
            "inside": self.inside_addr,
            "inside_port": self.inside_port,
            "global": self.global_addr,
            "global_port": self.global_port,
            "destination": self.dest_addr,
            "destination_port": self.dest_port,
            "timeout": self.timeout,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "started": self.started,
            "id": self.id,
        }


def _endpoints(t: Any) -> tuple[int, str, str, int | None, int | None]:
    ip = t.get_attr("CTA_TUPLE_IP")
    pr = t.get_attr("CTA_TUPLE_PROTO")
    proto = pr.get_attr("CTA_PROTO_NUM")
    src, dst = ip.get_attr("CTA_IP_V4_SRC"), ip.get_attr("CTA_IP_V4_DST")
    sport = dport = None
    if proto in PORTED:
        sport, dport = pr.get_attr("CTA_PROTO_SRC_PORT"), pr.get_attr("CTA_PROTO_DST_PORT")
    elif proto == socket.IPPROTO_ICMP:
        sport = dport = pr.get_attr("CTA_PROTO_ICMP_ID")
    return proto, src, dst, sport, dport


def _counters(msg: Any, key: str) -> tuple[int, int]:
    c = msg.get_attr(key)
    if c is None:  # nf_conntrack_acct was off when the connection started
        return 0, 0
    packets = c.get_attr("CTA_COUNTERS_PACKETS") or c.get_attr("CTA_COUNTERS32_PACKETS") or 0
    nbytes = c.get_attr("CTA_COUNTERS_BYTES") or c.get_attr("CTA_COUNTERS32_BYTES") or 0
    return packets, nbytes


def parse(msg: Any, inside: ipaddress.IPv4Network, outside_address: str) -> Translation | None:
    """One ctnetlink message → a Translation, or None when the connection is not one of ours."""
    orig, reply = msg.get_attr("CTA_TUPLE_ORIG"), msg.get_attr("CTA_TUPLE_REPLY")
    if orig is None or reply is None or orig.get_attr("CTA_TUPLE_IP") is None:
        return None
    proto, src, dst, sport, dport = _endpoints(orig)
    _, _, r_dst, _, r_dport = _endpoints(reply)
    if src is None or r_dst != outside_address or ipaddress.IPv4Address(src) not in inside:
        return None
    p_out, b_out = _counters(msg, "CTA_COUNTERS_ORIG")
    p_in, b_in = _counters(msg, "CTA_COUNTERS_REPLY")
    stamp = msg.get_attr("CTA_TIMESTAMP")
    start_ns = stamp.get_attr("CTA_TIMESTAMP_START") if stamp is not None else None
    return Translation(
        id=msg.get_attr("CTA_ID") or 0,
        proto=PROTO_NAMES.get(proto, str(proto)),
        inside_addr=src,
        inside_port=sport,
        global_addr=r_dst,
        global_port=r_dport,
        dest_addr=dst,
        dest_port=dport,
        timeout=msg.get_attr("CTA_TIMEOUT") or 0,
        packets_out=p_out,
        bytes_out=b_out,
        packets_in=p_in,
        bytes_in=b_in,
        started=start_ns / 1e9 if start_ns else None,
    )


def dump_translations(inside_network: str, outside_address: str) -> list[Translation]:
    """Blocking: every IPv4 conntrack entry of this namespace that our masquerade translated."""
    inside = ipaddress.IPv4Network(inside_network)
    with NFCTSocket(nfgen_family=socket.AF_INET) as ct:
        msgs = list(ct.dump())
    return [t for m in msgs if (t := parse(m, inside, outside_address)) is not None]


class XlateTracker:
    """What the daemon remembers between conntrack snapshots."""

    def __init__(self) -> None:
        self.most_used = 0
        self.seen = 0
        self._live: dict[tuple[Any, ...], Translation] = {}
        self._first_seen: dict[tuple[Any, ...], int] = {}
        self._seq = itertools.count()
        self._retired = [0, 0, 0, 0]  # packets_out, bytes_out, packets_in, bytes_in of expired connections

    def update(self, snapshot: Iterable[Translation]) -> None:
        current = {t.key: t for t in snapshot}
        for key in current.keys() - self._live.keys():
            self.seen += 1
            self._first_seen[key] = next(self._seq)
        for key in self._live.keys() - current.keys():
            gone = self._live[key]
            for i, v in enumerate((gone.packets_out, gone.bytes_out, gone.packets_in, gone.bytes_in)):
                self._retired[i] += v
            self._first_seen.pop(key, None)
        self._live = current
        self.most_used = max(self.most_used, len(current))

    @property
    def in_use(self) -> int:
        return len(self._live)

    def translations(self) -> list[Translation]:
        """Newest first, as the seed's `show xlate` lists them: by conntrack's start time, else by when we saw it."""
        return sorted(self._live.values(), key=lambda t: (-(t.started or 0), -self._first_seen.get(t.key, 0)))

    def totals(self) -> dict[str, int]:
        live = self._live.values()
        return {
            "packets_out": self._retired[0] + sum(t.packets_out for t in live),
            "bytes_out": self._retired[1] + sum(t.bytes_out for t in live),
            "packets_in": self._retired[2] + sum(t.packets_in for t in live),
            "bytes_in": self._retired[3] + sum(t.bytes_in for t in live),
        }
