"""SaTable: routing, RFC 4301 selector checks and the owner rule (one session per inner address), without root.

The concentrator's children have the client's assigned address as their remote selector; a client's children
have 0.0.0.0/0 or the concentrator's /32. Whatever IKE negotiated, the table must never let one session
install, or be routed, traffic for an inner address another session holds.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct

import pytest

from natt.errors import EspError, SelectorConflict
from natt.esp.table import Outbound, SaTable
from natt.esp.transforms import make_transform
from natt.ike.events import ChildSaUp
from natt.wire.constants import EspTransformId

pytestmark = pytest.mark.unit

GCM = make_transform(EspTransformId.AES_GCM_16, 128, None)
CONCENTRATOR = "198.51.100.50"
PAT = "203.0.113.78"
PRIVATE = "192.168.2.0/24"  # the concentrator's side of every child
_spis = itertools.count(0x1000)


def child(sa_id: int, remote_selector: str, local_selector: str = "0.0.0.0/0", *, spi: int | None = None,
          peer_spi: int | None = None, port: int = 4500, keys: bytes = b"k") -> ChildSaUp:
    """A ChildSaUp as the concentrator's core emits it; keys seed the keymat (in and out differ)."""
    spi = next(_spis) if spi is None else spi
    n = GCM.keymat_len
    return ChildSaUp(sa_id=sa_id, peer=PAT, message_id=spi, inbound_spi=spi,
                     outbound_spi=next(_spis) if peer_spi is None else peer_spi,
                     transform=int(EspTransformId.AES_GCM_16), key_bits=128, auth=None,
                     keymat_in=(keys + b"<" * n)[:n], keymat_out=(keys + b">" * n)[:n], udp_encap=True,
                     local_port=port, remote_port=1024 + sa_id, local_selector=local_selector,
                     remote_selector=remote_selector, lifetime=28800)


def mirror(up: ChildSaUp, sa_id: int) -> ChildSaUp:
    """The same child SA seen from the client: selectors, SPIs and keymat swapped."""
    return ChildSaUp(sa_id=sa_id, peer=CONCENTRATOR, message_id=up.message_id, inbound_spi=up.outbound_spi,
                     outbound_spi=up.inbound_spi, transform=up.transform, key_bits=up.key_bits, auth=up.auth,
                     keymat_in=up.keymat_out, keymat_out=up.keymat_in, udp_encap=True, local_port=4500,
                     remote_port=4500, local_selector=up.remote_selector, remote_selector=up.local_selector,
                     lifetime=up.lifetime)


def ip(src: str, dst: str, payload: bytes = b"data") -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 1, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + payload


def install(table: SaTable, up: ChildSaUp, follows_ike: bool = True, sock: object = "natt") -> Outbound:
    return table.install(up, up.peer, sock, follows_ike)


# -- the owner rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owned", "intruder"),
    [
        ("10.40.1.7/32", "10.40.1.7/32"),  # host against host
        ("10.40.1.7/32", "10.40.1.0/24"),  # a wide selector over another's host
        ("10.40.1.7/32", "0.0.0.0/0"),
        ("10.40.0.0/16", "10.40.1.7/32"),  # a host inside another's wide selector
        ("10.40.0.0/16", "10.40.1.0/24"),  # wide inside wide
        ("10.40.1.0/24", "10.40.0.0/16"),  # wide around wide
        ("0.0.0.0/0", "10.40.1.0/24"),
    ],
)
def test_a_remote_selector_overlapping_another_sessions_is_refused(owned: str, intruder: str) -> None:
    table = SaTable()
    mine = install(table, child(1, owned))
    refused = child(2, intruder)
    with pytest.raises(SelectorConflict) as info:
        install(table, refused)
    assert isinstance(info.value, EspError) and info.value.kind == "selector_conflict"
    assert refused.inbound_spi not in table.inbound, "a refused child must leave nothing behind"
    assert table.children(2) == [] and table.outbound == [mine]
    assert table.owner(owned) == 1 and table.owner(intruder) in (None, 1)


@pytest.mark.parametrize(
    ("owned", "neighbour"),
    [
        ("10.40.1.7/32", "10.40.1.8/32"),
        ("10.40.1.0/25", "10.40.1.128/25"),  # adjacent halves agree on /24 but not on /25
        ("10.40.1.0/24", "10.40.2.7/32"),
        ("10.40.1.7/32", "10.40.0.0/24"),
    ],
)
def test_disjoint_remote_selectors_of_two_sessions_coexist(owned: str, neighbour: str) -> None:
    table = SaTable()
    install(table, child(1, owned))
    install(table, child(2, neighbour))
    assert table.owner(owned) == 1 and table.owner(neighbour) == 2


def test_a_rekey_or_a_second_child_of_the_same_session_is_allowed_and_the_newest_routes() -> None:
    table = SaTable()
    old = install(table, child(1, "10.40.1.7/32", PRIVATE))
    new = install(table, child(1, "10.40.1.7/32", PRIVATE))  # a rekey: same session, same selector pair
    other = install(table, child(1, "10.40.0.0/16", PRIVATE))  # overlapping, but the same session's
    assert table.route(ip("192.168.2.10", "10.40.1.7")) is new
    assert table.route(ip("192.168.2.10", "10.40.9.9")) is other
    assert old.inbound_spi in table.inbound, "the old SA stays for inbound until it is removed"
    assert old not in table.outbound
    table.remove(old.inbound_spi)
    assert table.route(ip("192.168.2.10", "10.40.1.7")) is new


def test_ownership_ends_with_the_owners_last_child_for_that_address() -> None:
    table = SaTable()
    first = install(table, child(1, "10.40.1.7/32"))
    rekeyed = install(table, child(1, "10.40.1.7/32"))
    table.remove(first.inbound_spi)
    with pytest.raises(SelectorConflict):
        install(table, child(2, "10.40.1.7/32"))  # session 1 still has a child for the address
    table.remove(rekeyed.inbound_spi)
    assert table.owner("10.40.1.7/32") is None
    taken = install(table, child(2, "10.40.1.7/32"))
    assert table.owner("10.40.1.7/32") == 2
    assert table.route(ip("192.168.2.10", "10.40.1.7")) is taken


def test_a_wide_owner_releases_its_selector_too() -> None:
    table = SaTable()
    wide = install(table, child(1, "0.0.0.0/0", f"{CONCENTRATOR}/32"))
    with pytest.raises(SelectorConflict):
        install(table, child(2, f"{CONCENTRATOR}/32"))
    table.remove(wide.inbound_spi)
    install(table, child(2, f"{CONCENTRATOR}/32"))
    assert table.owner(f"{CONCENTRATOR}/32") == 2 and table.owner("0.0.0.0/0") is None


def test_routing_never_returns_another_sessions_sa() -> None:
    table = SaTable()
    owners = {1: "10.40.1.7/32", 2: "10.40.1.8/32", 3: "10.40.2.0/24"}
    for sa_id, selector in owners.items():
        install(table, child(sa_id, selector, PRIVATE))
    # Every other session tries every selector that reaches into the owners' addresses.
    for sa_id, selector in itertools.product(range(4, 8), [*owners.values(), "10.40.0.0/16", "0.0.0.0/0"]):
        with pytest.raises(SelectorConflict):
            install(table, child(sa_id, selector, PRIVATE))
    expect = {"10.40.1.7": 1, "10.40.1.8": 2, "10.40.2.1": 3, "10.40.2.254": 3, "10.40.1.9": None, "8.8.8.8": None}
    for dst, owner in expect.items():
        out = table.route(ip("192.168.2.10", dst))
        assert (out.sa_id if out else None) == owner, dst
    assert {o.sa_id for o in table.outbound} == set(owners)


def test_route_needs_the_source_in_the_local_selector() -> None:
    table = SaTable()
    out = install(table, child(1, "10.40.1.7/32", PRIVATE))
    assert table.route(ip("192.168.2.10", "10.40.1.7")) is out
    assert table.route(ip("172.16.0.1", "10.40.1.7")) is None


def test_the_flow_cache_follows_installs_and_removes() -> None:
    table = SaTable()
    pkt = ip("192.168.2.10", "10.40.1.7")
    assert table.route(pkt) is None  # remembered as "no SA"
    out = install(table, child(1, "10.40.1.7/32", PRIVATE))
    assert table.route(pkt) is out
    table.remove(out.inbound_spi)
    assert table.route(pkt) is None


def test_a_malformed_selector_installs_nothing() -> None:
    table = SaTable()
    with pytest.raises(ValueError):
        install(table, child(1, "10.40.1.7/24"))  # host bits set under the mask
    assert table.inbound == {} and table.owner("10.40.1.0/24") is None


# -- inbound: RFC 4301 5.2 ---------------------------------------------------------------------------


def test_inbound_check_refuses_a_source_outside_the_sas_remote_selector() -> None:
    """A session that authenticates as 10.40.1.7 may not send as 10.40.1.8: its ESP decrypts, the
    selector check drops it."""
    conc, client = SaTable(), SaTable()
    up = child(1, "10.40.1.7/32", "0.0.0.0/0", keys=b"session-1")
    install(conc, up)
    install(conc, child(2, "10.40.1.8/32", "0.0.0.0/0", keys=b"session-2"))
    sending = install(client, mirror(up, sa_id=9))
    entry = conc.inbound[up.inbound_spi]
    for src, dst, admitted in [("10.40.1.7", "192.168.2.10", True), ("10.40.1.8", "192.168.2.10", False),
                               ("192.168.2.10", "192.168.2.11", False)]:
        _, inner = entry.esp.decrypt(sending.esp.encrypt(ip(src, dst)))
        assert entry.admits(inner) is admitted, src


def test_inbound_check_refuses_a_destination_outside_the_local_selector_and_short_packets() -> None:
    table = SaTable()
    up = child(1, "10.40.1.7/32", PRIVATE)
    install(table, up)
    entry = table.inbound[up.inbound_spi]
    assert entry.admits(ip("10.40.1.7", "192.168.2.10"))
    assert not entry.admits(ip("10.40.1.7", "172.16.0.1"))
    assert not entry.admits(ip("10.40.1.7", "192.168.2.10")[:19])


# -- where the peer is -------------------------------------------------------------------------------


def test_update_remote_moves_only_the_outbounds_that_follow_ike() -> None:
    table = SaTable()
    natt = install(table, child(1, "10.40.1.7/32", PRIVATE), follows_ike=True, sock="natt")
    cisco = install(table, child(1, "10.40.1.7/32", "192.168.3.0/24", port=10000), follows_ike=False, sock="cisco")
    other = install(table, child(2, "10.40.1.8/32", PRIVATE), follows_ike=True, sock="natt")
    before_cisco, before_other = cisco.remote, other.remote
    table.update_remote(1, (PAT, 6000))
    assert natt.remote == (PAT, 6000)
    assert cisco.remote == before_cisco, "IPsec over UDP learns its port from ESP, not from IKE"
    assert other.remote == before_other, "another session's SA must not move"


def test_learn_remote_moves_only_the_sessions_outbounds_on_that_transport_that_do_not_follow_ike() -> None:
    table = SaTable()
    natt = install(table, child(1, "10.40.1.7/32", PRIVATE), follows_ike=True, sock="udp")
    cisco = install(table, child(1, "10.40.1.7/32", "192.168.3.0/24", port=10000), follows_ike=False, sock="udp")
    elsewhere = install(table, child(1, "10.40.1.7/32", "192.168.4.0/24"), follows_ike=False, sock="other")
    neighbour = install(table, child(2, "10.40.1.8/32", PRIVATE), follows_ike=False, sock="udp")
    before = {o: o.remote for o in (natt, elsewhere, neighbour)}
    table.learn_remote(1, "udp", (PAT, 7000))
    assert cisco.remote == (PAT, 7000)
    assert natt.remote == before[natt], "a NAT-T peer moves only when IKE says so"
    assert elsewhere.remote == before[elsewhere], "only the transport the ESP came by"
    assert neighbour.remote == before[neighbour], "never another session's SA"


def test_a_reused_inbound_spi_replaces_the_pair_it_named_with_its_claim() -> None:
    table = SaTable()
    first = install(table, child(1, "10.40.1.7/32", spi=0x77))
    second = install(table, child(1, "10.40.1.9/32", spi=0x77))
    assert table.children(1) == [table.inbound[0x77]] and table.inbound[0x77].outbound is second
    assert first not in table.outbound and table.owner("10.40.1.7/32") is None
    table.remove(0x77)
    assert table.owner("10.40.1.9/32") is None and table.outbound == []


def test_removing_the_routing_pair_restores_the_older_one_of_its_session() -> None:
    """A session's newest pair for some selectors goes before an older one (a re-authentication's leftovers): the
    older one routes again at once, or the tunnel's traffic would find no SA until its next rekey."""
    from dataclasses import replace

    t = SaTable()
    older = child(1, "10.40.1.1/32", spi=0x2001)
    newer = replace(child(2, "10.40.1.1/32", spi=0x2002), session_id=1)  # the same session, a newer IKE SA
    install(t, older)
    install(t, newer)
    pkt = ip("192.168.2.10", "10.40.1.1")
    assert t.route(pkt).inbound_spi == 0x2002
    t.remove(0x2002)
    out = t.route(pkt)
    assert out is not None and out.inbound_spi == 0x2001
