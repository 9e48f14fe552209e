"""A seed corpus for the fuzzer: every datagram of the seed flow, as each entry point would have met it.

    python -m tests.fuzz.seeds DIR

Each file is one input for tests.fuzz.targets.World: a route byte, a selector byte, then the datagram (without
its non-ESP marker where the route adds one).
"""

from __future__ import annotations

import hashlib
import ipaddress
import sys
from pathlib import Path

from natt.wire.constants import IKE_PORT, NON_ESP_MARKER
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import ESP, Network, Pat, ipv4_packet


def seed_inputs() -> list[bytes]:
    net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    for name, user, address in (("client1", "vpnclient1", "10.10.10.2"), ("client2", "vpnclient2", "10.10.10.3")):
        net.add_client(name, address)
        net.connect(name, make_profile(user))
        net.pump()
    for name in ("client1", "client2"):
        node = net.clients[name]
        address = node.of(__import__("natt.ike.events", fromlist=["ModeConfigDone"]).ModeConfigDone)[-1].address
        net.route_esp(node, ipv4_packet(address, "192.168.2.10", b"seed"))
    net.advance(40.0)  # DPD and keepalives
    out = []
    for p in net.wire:
        to_conc = p.dst[0] == CONCENTRATOR
        if p.proto == ESP:
            continue
        if p.dst[1] == IKE_PORT:
            out.append(bytes([0 if to_conc else 4, 0]) + p.data)
        elif p.data.startswith(NON_ESP_MARKER):
            out.append(bytes([1 if to_conc else 3, 0]) + p.data[len(NON_ESP_MARKER):])
        else:
            out.append(bytes([2, 0]) + p.data)
    return out


def main() -> int:
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    inputs = seed_inputs()
    for data in inputs:
        (target / hashlib.sha1(data).hexdigest()).write_bytes(data)
    print(f"{len(inputs)} seed inputs in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
