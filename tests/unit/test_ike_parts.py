"""The IKE core's small parts: NAT-D (RFC 3947 3.2), proposal choice (RFC 2409 5), address pools."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from natt.errors import NoProposalChosen, PoolExhausted
from natt.ike import natd
from natt.ike.config import SEED_PHASE1, SEED_PHASE2, Phase1Proposal, Phase2Proposal
from natt.ike.pool import AddressPool
from natt.ike.proposals import (
    phase1_sa,
    phase2_sa,
    read_phase1_reply,
    read_phase2_reply,
    select_phase1,
    select_phase2,
)
from natt.wire.constants import EncapsulationMode, VendorId

pytestmark = pytest.mark.unit

IC, RC = bytes.fromhex("b69224f4960a2d9e"), bytes.fromhex("76fef6551f9d49f3")


def md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def test_natd_hash_layout() -> None:
    """RFC 3947 3.2: HASH = HASH(CKY-I | CKY-R | IP | Port)."""
    want = hashlib.md5(IC + RC + ipaddress.IPv4Address("203.0.113.78").packed + (1026).to_bytes(2, "big")).digest()
    assert natd.natd_hash(md5, IC, RC, "203.0.113.78", 1026) == want


def test_detect_client_behind_pat() -> None:
    """The seed: 'Remote end is NOT behind a NAT device / This end IS behind a NAT device'."""
    # The concentrator saw us as 203.0.113.78:1026 and itself as 198.51.100.50:4500.
    received = [natd.natd_hash(md5, IC, RC, "203.0.113.78", 1026), natd.natd_hash(md5, IC, RC, "198.51.100.50", 4500)]
    status = natd.detect(received, md5, IC, RC, local=("10.10.10.2", 4500), remote=("198.51.100.50", 4500))
    assert status.local_behind_nat and not status.remote_behind_nat and status.nat_detected


def test_detect_no_nat() -> None:
    received = [natd.natd_hash(md5, IC, RC, "203.0.113.20", 500), natd.natd_hash(md5, IC, RC, "198.51.100.50", 500)]
    status = natd.detect(received, md5, IC, RC, local=("203.0.113.20", 500), remote=("198.51.100.50", 500))
    assert not status.nat_detected


def test_natt_variant_preference() -> None:
    v = natd.choose_variant([VendorId.NATT_DRAFT_02_N, VendorId.NATT_RFC3947])
    assert v is not None and v.name == "RFC 3947" and not v.draft
    assert v.udp_tunnel_mode() == EncapsulationMode.UDP_ENCAPSULATED_TUNNEL
    d = natd.choose_variant([VendorId.NATT_DRAFT_02_N])
    assert d is not None and d.draft and d.udp_tunnel_mode() == EncapsulationMode.UDP_ENCAPSULATED_TUNNEL_DRAFT
    assert natd.choose_variant([VendorId.DPD]) is None


def test_phase1_choice_follows_peer_order_and_caps_lifetime() -> None:
    modern = Phase1Proposal()
    offer = phase1_sa([SEED_PHASE1, modern])
    choice = select_phase1(offer, [modern, SEED_PHASE1], max_lifetime=3600)
    assert choice.proposal.cipher == SEED_PHASE1.cipher
    assert choice.proposal.lifetime == 3600 and choice.peer_lifetime == 86400
    assert read_phase1_reply(choice.reply, [SEED_PHASE1, modern]).hash == SEED_PHASE1.hash


def test_phase1_nothing_acceptable() -> None:
    with pytest.raises(NoProposalChosen):
        select_phase1(phase1_sa([SEED_PHASE1]), [Phase1Proposal()], 86400)


def test_phase1_reply_must_be_one_we_offered() -> None:
    reply = select_phase1(phase1_sa([SEED_PHASE1]), [SEED_PHASE1], 86400).reply
    with pytest.raises(NoProposalChosen):
        read_phase1_reply(reply, [Phase1Proposal()])


def test_phase2_choice_respects_encapsulation() -> None:
    offer = phase2_sa([SEED_PHASE2, Phase2Proposal()], b"\x11\x22\x33\x44", EncapsulationMode.UDP_ENCAPSULATED_TUNNEL)
    with pytest.raises(NoProposalChosen):
        select_phase2(offer, [Phase2Proposal()], [EncapsulationMode.TUNNEL], b"\x55\x66\x77\x88", 28800)
    choice = select_phase2(offer, [Phase2Proposal()], [EncapsulationMode.UDP_ENCAPSULATED_TUNNEL],
                           b"\x55\x66\x77\x88", 28800)
    assert choice.peer_spi == b"\x11\x22\x33\x44" and choice.encap == EncapsulationMode.UDP_ENCAPSULATED_TUNNEL
    chosen, _encap, spi = read_phase2_reply(choice.reply, [SEED_PHASE2, Phase2Proposal()])
    assert spi == b"\x55\x66\x77\x88" and chosen.transform == Phase2Proposal().transform


def test_pool_allocates_releases_and_exhausts() -> None:
    pool = AddressPool("10.40.1.0/30")
    a, b = pool.allocate("s1"), pool.allocate("s2")
    assert (a, b) == ("10.40.1.1", "10.40.1.2")
    assert pool.allocate("s1") == a, "the same session keeps its address"
    with pytest.raises(PoolExhausted):
        pool.allocate("s3")
    pool.release(a)
    assert pool.allocate("s3") == a
    assert pool.in_use() == {"10.40.1.1": "s3", "10.40.1.2": "s2"}


def test_suite_names() -> None:
    from natt.errors import UnsupportedAlgorithm
    from natt.ike import suites
    from natt.wire.constants import AuthAlgorithm, EspTransformId, IkeEncryption, IkeHash

    assert suites.phase1("3des-md5-modp1024") == SEED_PHASE1
    p = suites.phase1("aes256-sha256-modp2048")
    assert (p.cipher, p.key_bits, p.hash, p.group) == (IkeEncryption.AES_CBC, 256, IkeHash.SHA2_256, 14)
    assert suites.names_phase1(p) == "aes256-sha256-modp2048"
    assert suites.phase2("3des-md5") == SEED_PHASE2
    g = suites.phase2("aes128gcm16-modp2048")
    assert (g.transform, g.key_bits, g.auth, g.pfs_group) == (EspTransformId.AES_GCM_16, 128, None, 14)
    assert suites.phase2("aes256-sha256").auth == AuthAlgorithm.HMAC_SHA2_256
    for bad in ("aes256-sha256", "rc4-md5-modp1024"):
        with pytest.raises(UnsupportedAlgorithm):
            suites.phase1(bad)
    for bad in ("aes128gcm16-sha1", "aes256", "blowfish-md5"):
        with pytest.raises(UnsupportedAlgorithm):
            suites.phase2(bad)


def test_detect_accepts_message_1_ports_after_the_float() -> None:
    """vpnc hashes port 500 in Aggressive Mode message 3 although it sends it from 4500."""
    received = [natd.natd_hash(md5, IC, RC, "198.51.100.50", 500), natd.natd_hash(md5, IC, RC, "10.10.10.2", 500)]
    status = natd.detect(received, md5, IC, RC, local=[("198.51.100.50", 4500), ("198.51.100.50", 500)],
                         remote=[("203.0.113.78", 1026), ("203.0.113.78", 1025)])
    assert not status.local_behind_nat and status.remote_behind_nat


def test_readme_shows_the_state_table_as_the_code_has_it() -> None:
    """One place for the fact: the README's copy of the state x exchange table is the code's, word for word."""
    from pathlib import Path

    from natt.ike.rules import table_text

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert table_text() in readme


def test_every_accepted_kind_has_a_task_and_plain_kinds_are_phase1_or_notify() -> None:
    from natt.ike import endpoint
    from natt.ike.rules import ACCEPTS, PLAIN_KINDS, Kind

    accepted = set().union(*ACCEPTS.values())
    assert accepted <= set(endpoint._TASKS), "a kind the table accepts must have a task to process it"
    assert {Kind.AM_1, Kind.AM_2, Kind.MM_1, Kind.MM_2, Kind.MM_3, Kind.MM_4, Kind.INFO_PLAIN} >= PLAIN_KINDS
    quick = {Kind.QM_1, Kind.QM_2, Kind.QM_3}
    for (role, state), kinds in ACCEPTS.items():
        if kinds & quick:
            assert state.value == "established", f"Quick Mode accepted in {role.value} {state.value}"
