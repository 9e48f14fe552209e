from __future__ import annotations

import ipaddress

import pytest

from natt.ike.config import ClientProfile, ConcentratorPolicy, GroupPolicy, Timers
from tests.protocol.sim import Network, Pat

PSK = b"cisco123"
USERS = {"vpnclient1": "secret1", "vpnclient2": "secret2"}
CONCENTRATOR = "198.51.100.50"


def make_policy(**kw: object) -> ConcentratorPolicy:
    group = GroupPolicy("ciscovpn", PSK, pool="10.40.1.0/24", dns=("192.168.2.10",), banner="lab")
    defaults: dict[str, object] = dict(
        address=CONCENTRATOR,
        groups={"ciscovpn": group},
        verify_user=lambda u, p: USERS.get(u) == p,
        nat_traversal=True,
        timers=Timers(keepalive_interval=9.0, dpd_interval=30.0),
    )
    defaults.update(kw)
    return ConcentratorPolicy(**defaults)  # type: ignore[arg-type]


def make_profile(user: str = "vpnclient1", **kw: object) -> ClientProfile:
    defaults: dict[str, object] = dict(
        peer=CONCENTRATOR, group="ciscovpn", psk=PSK, username=user, password=USERS.get(user, "x"),
        timers=Timers(keepalive_interval=9.0, dpd_interval=30.0, heartbeat_interval=0.0),
    )
    defaults.update(kw)
    return ClientProfile(**defaults)  # type: ignore[arg-type]


@pytest.fixture
def lab() -> Network:
    """The seed topology: two clients behind one PAT, the concentrator on the public side."""
    net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    net.add_client("client1", "10.10.10.2")
    net.add_client("client2", "10.10.10.3")
    return net
