"""The SA table in the protocol simulation: the daemons' routing and selector rules, two clients behind one PAT.

Each node keeps its child SAs in natt.esp.table.SaTable, as the daemons' data path does (DESIGN.md, "One SA
table"); these tests route inner packets through it end to end and check RFC 4301 5.2 on what decrypts.
"""

from __future__ import annotations

import pytest

from natt.ike.events import ModeConfigDone
from tests.protocol.conftest import make_profile
from tests.protocol.sim import Network, ipv4_packet

pytestmark = pytest.mark.protocol

SERVER = "192.168.2.10"


def _both_connected(lab: Network) -> tuple[str, str]:
    for name, user in (("client1", "vpnclient1"), ("client2", "vpnclient2")):
        lab.connect(name, make_profile(user))
        lab.pump()
    return lab.clients["client1"].of(ModeConfigDone)[-1].address, lab.clients["client2"].of(ModeConfigDone)[-1].address


def test_packets_route_through_the_tables_to_the_right_client(lab: Network) -> None:
    a1, a2 = _both_connected(lab)
    conc, c1, c2 = lab.concentrator, lab.clients["client1"], lab.clients["client2"]
    assert not (conc.selector_conflicts or c1.selector_conflicts or c2.selector_conflicts)
    assert conc.table.owner(f"{a1}/32") != conc.table.owner(f"{a2}/32"), "each address has its own session"

    assert lab.route_esp(c1, ipv4_packet(a1, SERVER, b"from 1")) is not None
    assert lab.route_esp(c2, ipv4_packet(a2, SERVER, b"from 2")) is not None
    assert [p[-6:] for p in conc.delivered] == [b"from 1", b"from 2"], conc.esp_errors

    assert lab.route_esp(conc, ipv4_packet(SERVER, a2, b"to 2")) is not None
    assert lab.route_esp(conc, ipv4_packet(SERVER, a1, b"to 1")) is not None
    assert [p[-4:] for p in c1.delivered] == [b"to 1"] and [p[-4:] for p in c2.delivered] == [b"to 2"]


def test_nothing_routes_to_an_address_no_session_holds(lab: Network) -> None:
    _both_connected(lab)
    conc = lab.concentrator
    assert lab.route_esp(conc, ipv4_packet(SERVER, "10.40.1.250", b"nobody")) is None
    assert conc.esp_errors == ["no-sa-for-flow"]
    # A client routes only what leaves from its own address (its local selector).
    c1 = lab.clients["client1"]
    assert lab.route_esp(c1, ipv4_packet("10.40.1.251", SERVER, b"spoof")) is None
    assert c1.esp_errors == ["no-sa-for-flow"]


def test_a_client_cannot_send_as_another_clients_address(lab: Network) -> None:
    """RFC 4301 5.2: ESP that authenticates as client 1 but carries client 2's address decrypts, then is dropped."""
    a1, a2 = _both_connected(lab)
    conc = lab.concentrator
    lab.send_esp(lab.clients["client1"], "0.0.0.0/0", ipv4_packet(a2, SERVER, b"spoofed"))
    assert conc.delivered == [] and conc.esp_errors == ["selector-mismatch"]
    lab.send_esp(lab.clients["client1"], "0.0.0.0/0", ipv4_packet(a1, SERVER, b"genuine"))
    assert len(conc.delivered) == 1


def test_the_tables_nat_t_remote_is_the_ike_peer_endpoint(lab: Network) -> None:
    _both_connected(lab)
    conc = lab.concentrator
    for out in conc.table.outbound:
        assert out.follows_ike and out.remote == conc.endpoint.sas[out.sa_id].remote


def test_nat_t_esp_from_a_new_address_asks_ike_and_moves_nothing_by_itself(lab: Network,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A NAT rebinding seen in ESP is reported to the IKE core (esp_peer_moved); the ESP SA moves only on the
    core's PortFloated, never on the data path's own say-so."""
    a1, _ = _both_connected(lab)
    conc, pat = lab.concentrator, lab.pat
    assert pat is not None
    calls: list[tuple[int, tuple[str, int], float]] = []
    monkeypatch.setattr(conc.endpoint, "esp_peer_moved", lambda *a: calls.append(a), raising=False)
    # The PAT forgets client 1's 4500 mapping: its next packet leaves from a new outside port.
    key = next(k for k in pat.out_map if k[0] == "10.10.10.2" and k[1] == 4500)
    old_port = pat.out_map.pop(key)
    outs = [o for o in conc.table.outbound if o.remote[1] == old_port]
    assert outs
    lab.send_esp(lab.clients["client1"], "0.0.0.0/0", ipv4_packet(a1, SERVER, b"after rebinding"))
    assert len(conc.delivered) == 1
    (sa_id, src, _now), = calls
    assert sa_id == outs[0].sa_id and src[0] == pat.outside and src[1] != old_port
    assert all(o.remote[1] == old_port for o in outs), "the data path must not move a NAT-T peer itself"


def test_nat_rebinding_seen_in_esp_moves_the_sa_through_ike(lab: Network) -> None:
    """RFC 3948 / RFC 3947 7: authenticated ESP from a new mapping → the core's PortFloated → the table follows,
    and the concentrator's traffic reaches the client through the new mapping."""
    if not hasattr(lab.concentrator.endpoint, "esp_peer_moved"):
        pytest.skip("the IKE core has no esp_peer_moved yet")
    a1, _ = _both_connected(lab)
    conc, pat = lab.concentrator, lab.pat
    assert pat is not None
    key = next(k for k in pat.out_map if k[0] == "10.10.10.2" and k[1] == 4500)
    old_port = pat.out_map.pop(key)
    del pat.in_map[old_port]  # the old mapping is gone both ways, as after a PAT reboot
    lab.send_esp(lab.clients["client1"], "0.0.0.0/0", ipv4_packet(a1, SERVER, b"after rebinding"))
    new_port = pat.out_map[key]
    outs = [o for o in conc.table.outbound if o.sa_id == conc.table.owner(f"{a1}/32")]
    assert outs and all(o.remote == (pat.outside, new_port) for o in outs)
    assert lab.route_esp(conc, ipv4_packet(SERVER, a1, b"found you")) is not None
    assert lab.clients["client1"].delivered[-1].endswith(b"found you")
