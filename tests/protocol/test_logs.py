"""The seed's log lines, produced from the real exchanges (SCENARIO.md: client log, concentrator log)."""

from __future__ import annotations

import pytest

from natt.events.ikelog import IkeLogger
from natt.ike.config import Timers
from tests.protocol.conftest import make_profile
from tests.protocol.sim import Network

pytestmark = pytest.mark.protocol


def _logged(lab: Network) -> tuple[str, str]:
    client_log = IkeLogger("client")
    conc_log = IkeLogger("concentrator")
    client = lab.clients["client1"]
    for e in client.events:
        client_log.record(e, 1_000_000.0, client.endpoint.sas.get(e.sa_id))
    for e in lab.concentrator.events:
        conc_log.record(e, 1_000_000.0, lab.concentrator.endpoint.sas.get(e.sa_id))
    # The entries' texts as worded; the renderers (and their 80-column wrapping) have unit tests of their own.
    return "\n".join(e.text for e in client_log.log), "\n".join(e.text for e in conc_log.log)


def test_client_log_tells_the_seed_story(lab: Network) -> None:
    lab.connect("client1", make_profile())
    lab.pump()
    lab.advance(40.0)
    client, _ = _logged(lab)
    for line in [
        "Attempting to establish a connection with 198.51.100.50.",
        "SENDING >>> ISAKMP OAK AG (SA, KE, NON, ID, VID, VID, VID, VID, VID) to 198.51.100.50",
        "RECEIVING <<< ISAKMP OAK AG (SA, KE, NON, ID, HASH, VID, VID, VID, VID, NAT-D, NAT-D) from 198.51.100.50",
        "Vendor ID payload = 12F5F28C457168A9702D9FE274CC0100",
        "Peer is a Cisco-Unity compliant peer",
        "Peer supports XAUTH",
        "Peer supports DPD",
        "Peer supports NAT-T",
        "SENDING >>> ISAKMP OAK AG *(HASH, NOTIFY:STATUS_INITIAL_CONTACT, NAT-D, NAT-D) to 198.51.100.50",
        "RECEIVING <<< ISAKMP OAK TRANS *(HASH, ATTR) from 198.51.100.50",
        "Launch xAuth application",
        "Automatic NAT Detection Status:\nRemote end is NOT behind a NAT device\nThis end IS behind a NAT device",
        "Established Phase 1 SA. 1 Phase 1 SA in the system",
        "MODE_CFG_REPLY: Attribute = INTERNAL_IPV4_ADDRESS: , value = 10.40.1.1",
        "MODE_CFG_REPLY: Attribute = MODECFG_UNITY_SAVEPWD: , value = 0x00000000",
        "MODE_CFG_REPLY: Attribute = Recieved and using NAT-T port number , value = 0x00001194",
        "RECEIVING <<< ISAKMP OAK INFO *(HASH, NOTIFY:STATUS_RESP_LIFETIME) from 198.51.100.50",
        "RESPONDER-LIFETIME notify has value of 86400 seconds",
        "SENDING >>> ISAKMP OAK QM *(HASH, SA, NON, ID, ID) to 198.51.100.50",
        "RESPONDER-LIFETIME notify has value of 28800 seconds",
        "SENDING >>> ISAKMP OAK QM *(HASH) to 198.51.100.50",
        "One secure connection established",
        "Additional Phase 2 SA established.",
        "Connection established.",
    ]:
        assert line in client, line
    assert "Loading IPsec SA (Message ID = 0x" in client


def test_concentrator_log_tells_the_seed_story(lab: Network) -> None:
    timers = Timers(keepalive_interval=9.0, dpd_interval=30.0, heartbeat_interval=5.0)
    lab.connect("client1", make_profile(timers=timers))
    lab.pump()
    lab.advance(40.0)
    _, conc = _logged(lab)
    for line in [
        "Group [ciscovpn] User [vpnclient1]\nprocessing hash",
        "Group [ciscovpn] User [vpnclient1]\nGenerating Quick Mode Key!",
        "NAT-Traversal successfully negotiated!\nIPSec traffic will be encapsulated to pass through NAT devices.",
        "Security negotiation complete for User (vpnclient1)\nResponder, Inbound SPI = 0x",
        "PHASE 2 COMPLETED (msgid=",
        "Xmit IPSEC-over-UDP NAT keepalive packet: success",
        "Received an IPSEC-over-NAT-T NAT keepalive packet",
        "Message      :Altiga keep-alive (40500)",
        "Received keep-alive of type Altiga keep-alive, not the negotiated type",
        "Message      :DPD R-U-THERE (36136)",
        "Sending keep-alive of type DPD R-U-THERE-ACK (seq number 0x",
        "HDR + HASH (8) + NOTIFY (11) + NONE (0)",
    ]:
        assert line in conc, line


def test_failures_are_named(lab: Network) -> None:
    lab.connect("client1", make_profile(psk=b"wrong"))
    lab.pump()
    client, conc = _logged(lab)
    assert "the group password (pre-shared key) is probably wrong" in client
    assert "AUTHENTICATION-FAILED" in conc


def test_natt_off_is_explained_in_both_logs() -> None:
    import ipaddress

    from tests.protocol.conftest import CONCENTRATOR, make_policy
    from tests.protocol.sim import Pat

    net = Network(make_policy(nat_traversal=False), CONCENTRATOR,
                  Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile())
    net.pump()
    client, conc = _logged(net)
    assert "Peer offered NAT-T while NAT transparency is disabled on this concentrator: enable nat_traversal" in conc
    assert "no data will flow" in conc
    assert "Transparent tunneling is enabled but the concentrator did not offer NAT-T" in client


def test_secrets_stay_out_of_logs(lab: Network) -> None:
    lab.connect("client1", make_profile())
    lab.pump()
    client, conc = _logged(lab)
    for secret in ("cisco123", "secret1"):
        assert secret not in client and secret not in conc
