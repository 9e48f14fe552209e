"""The kernel's side of TUN receive offload (natt.esp.gro + tun.open_tun(vnet_hdr=True)).

In a namespace of its own, the test writes coalesced TCP to a vnet-header TUN (gA) the way the data
path does; the kernel routes it out of a plain TUN (gB), which has no checksum or segmentation offload,
so the kernel must cut the GSO packet into segments and checksum each one in software; the test reads
them back from gB and checks every header and checksum with its own RFC 1071 code:

    writev → gA 10.99.1.1/24 ── forward ──> gB 10.99.2.1/24 → read

A wrong pseudo-header sum, header length or segment size shows up as a bad checksum, a wrong
sequence number or a segment of the wrong size; a header the kernel refuses, as an error on write.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tcpseg import rfc1071, tcp_checksum

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a network namespace and TUN devices"),
]
REPO = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, os, select, sys, time
from natt.esp.gro import VNET_PLAIN, TcpCoalescer
from natt_daemons.common.tun import add_address, add_route, open_tun
from tests.tcpseg import datagram, stream

for key, value in (("ipv4/ip_forward", "1"), ("ipv4/conf/all/rp_filter", "0"), ("ipv4/conf/default/rp_filter", "0")):
    with open(f"/proc/sys/net/{key}", "w") as f:
        f.write(value)
a = open_tun("gA", vnet_hdr=True)
b = open_tun("gB")
add_address("gA", "10.99.1.1", 24)
add_address("gB", "10.99.2.1", 24)
add_route("10.99.2.0/24", dev="gB")
segs = stream(20, 1348, last=700)  # 21 segments, PSH on the last
udp = datagram(b"u" * 64)  # not TCP: written alone
c = TcpCoalescer()
writes = [w for p in segs for w in c.push(p)] + [w for w in c.push(udp)] + c.flush()
for w in writes:
    os.writev(a.fd, w)
got, end = [], time.monotonic() + 5
while len(got) < 22 and (left := end - time.monotonic()) > 0:
    if select.select([b.fd], [], [], left)[0]:
        try:
            pkt = os.read(b.fd, 65536)
        except BlockingIOError:
            continue
        if pkt[0] >> 4 == 4:
            got.append(pkt.hex())
print(json.dumps({"sent": [s.hex() for s in segs], "writes": len(writes), "merged": c.merged_segments,
                  "got": got}))
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"nt-gro-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_gso_write_is_segmented_with_correct_checksums(namespace: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", WORKER], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    sent = [bytes.fromhex(h) for h in result["sent"]]
    got = [bytes.fromhex(h) for h in result["got"]]
    assert result["merged"] == 21 and result["writes"] == 2  # one GSO packet, then the UDP one
    tcp = [p for p in got if p[9] == 6]
    assert len(tcp) == len(sent) == 21, [len(p) for p in got]
    for mine, theirs in zip(sent, tcp, strict=True):
        assert len(theirs) == len(mine)
        assert rfc1071(theirs[:20]) == 0, "IP header checksum"
        assert theirs[8] == mine[8] - 1  # forwarded: TTL one less
        stored = int.from_bytes(theirs[36:38], "big")
        assert stored == tcp_checksum(theirs[:20], theirs[20:]), "TCP checksum"
        assert theirs[20:36] == mine[20:36] and theirs[38:] == mine[38:]  # ports, seq, ack, flags, options, data
    assert [p[33] for p in tcp] == [0x10] * 20 + [0x18]  # PSH only on the last segment
    assert any(p[9] == 17 for p in got)  # the lone packet came through too
