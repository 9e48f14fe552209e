"""Administration > Sessions > Ping: ICMP echo from the concentrator to a client's assigned address.

The request leaves a raw ICMP socket in the concentrator's own network namespace; the kernel routes the pool's
addresses to the TUN, so the data path encrypts it into the user's tunnel like any other packet, and the client's
kernel answers it. The reply comes back through the tunnel and the TUN, and the raw socket (which sees every
ICMP packet of the host) keeps only echo replies from that address carrying this run's identifier and a sequence
number it sent. A reply thus proves the tunnel carries data both ways, not only that IKE is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import struct
from dataclasses import dataclass, field

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
MAX_COUNT = 20
MAX_TIMEOUT = 10.0
MIN_TIMEOUT = 0.05
INTERVAL = 0.2  # at most five requests a second, as ping's own floor for users other than root
PAYLOAD = b"natt concentrator ping".ljust(56, b".")  # ping's default 56 bytes


class PingError(ValueError):
    """The request cannot be made as asked (count, timeout or address out of bounds)."""


@dataclass
class PingResult:
    address: str
    sent: int = 0
    received: int = 0
    rtt_ms: list[float] = field(default_factory=list)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = PAYLOAD) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(header + payload), ident, seq) + payload


def echo_reply_of(packet: bytes) -> tuple[str, int, int] | None:
    """(source, identifier, sequence) of an IPv4 packet holding an ICMP echo reply with a valid checksum, as a
    raw socket hands it over (IP header included); None for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:]
    if len(icmp) < 8 or icmp[0] != ICMP_ECHO_REPLY or icmp[1] != 0 or checksum(icmp) != 0:
        return None
    ident, seq = struct.unpack("!HH", icmp[4:8])
    return socket.inet_ntoa(packet[12:16]), ident, seq


def bounds(count: object, timeout: object) -> tuple[int, float]:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise PingError(f"count must be a whole number in 1..{MAX_COUNT}, not {count!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or \
            not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
        raise PingError(f"timeout must be {MIN_TIMEOUT:g}..{MAX_TIMEOUT:g} seconds, not {timeout!r}")
    return count, float(timeout)


def longest(count: int, timeout: float) -> float:
    """The longest a ping of `count` requests can take: what a caller waits for its answer."""
    return count * max(timeout, INTERVAL)


def open_icmp(source: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        sock.setblocking(False)
        if source is not None:
            sock.bind((source, 0))
    except OSError:
        sock.close()
        raise
    return sock


async def ping(address: str, count: int = 3, timeout: float = 1.0, *, source: str | None = None) -> PingResult:
    """`count` echo requests to `address`, one after another: the next goes when the reply came, or after
    `timeout` seconds without one (and never sooner than INTERVAL after the last). Replies are matched by
    identifier and sequence number; duplicates and late replies are not counted."""
    count, timeout = bounds(count, timeout)
    address = str(ipaddress.IPv4Address(address))
    loop = asyncio.get_running_loop()
    ident = secrets.randbits(16)
    result = PingResult(address)
    waiting: dict[int, tuple[float, asyncio.Future[float]]] = {}
    sock = open_icmp(source)

    def readable() -> None:
        while True:
            try:
                packet = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            reply = echo_reply_of(packet)
            if reply is None or reply[0] != address or reply[1] != ident:
                continue
            sent = waiting.pop(reply[2], None)
            if sent is not None and not sent[1].done():
                sent[1].set_result((loop.time() - sent[0]) * 1000.0)

    loop.add_reader(sock.fileno(), readable)
    try:
        for seq in range(1, count + 1):
            started = loop.time()
            answer: asyncio.Future[float] = loop.create_future()
            waiting[seq] = (started, answer)
            result.sent += 1
            try:
                await loop.sock_sendto(sock, echo_request(ident, seq), (address, 0))
            except OSError:
                pass  # no route, or the TUN is gone: sent and lost, at once
            else:
                with contextlib.suppress(TimeoutError):
                    rtt = await asyncio.wait_for(answer, timeout)
                    result.received += 1
                    result.rtt_ms.append(round(rtt, 3))
            waiting.pop(seq, None)
            rest = INTERVAL - (loop.time() - started)
            if seq < count and rest > 0:
                await asyncio.sleep(rest)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    return result


def source_for(networks: tuple[str, ...]) -> str | None:
    """With split tunnelling the client tunnels only `networks`: the reply must go to an address of ours inside
    one of them (the private side), so the request leaves from it. None: all traffic is tunnelled, any source
    will do (the kernel chooses)."""
    for net in networks:
        network = ipaddress.IPv4Network(net)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((str(network.network_address + (1 if network.num_addresses > 1 else 0)), 9))
            own = probe.getsockname()[0]
        except OSError:
            continue
        finally:
            probe.close()
        if ipaddress.IPv4Address(own) in network:
            return str(own)
    return None
