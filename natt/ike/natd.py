"""NAT-Traversal: vendor IDs, NAT-D hashes and detection (RFC 3947 and its drafts)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from natt.wire.constants import EncapsulationMode, VendorId

# Preference when a peer offers several (strongest first), with the names logs use.
NATT_VARIANTS: list[tuple[bytes, str]] = [
    (VendorId.NATT_RFC3947, "RFC 3947"),
    (VendorId.NATT_DRAFT_03, "draft-03"),
    (VendorId.NATT_DRAFT_02_N, "draft-02\\n"),
    (VendorId.NATT_DRAFT_02, "draft-02"),
]
NATT_VENDOR_IDS = {vid for vid, _ in NATT_VARIANTS}
# The names configuration files use for them.
NATT_VERSIONS: dict[str, bytes] = {
    "rfc3947": VendorId.NATT_RFC3947,
    "draft-03": VendorId.NATT_DRAFT_03,
    "draft-02n": VendorId.NATT_DRAFT_02_N,
    "draft-02": VendorId.NATT_DRAFT_02,
}


@dataclass(frozen=True)
class NattVariant:
    vid: bytes
    name: str

    @property
    def draft(self) -> bool:
        """Drafts carry NAT-D as payload 130 and ask for encapsulation mode 61443."""
        return self.vid != VendorId.NATT_RFC3947

    def udp_tunnel_mode(self) -> int:
        if self.draft:
            return EncapsulationMode.UDP_ENCAPSULATED_TUNNEL_DRAFT
        return EncapsulationMode.UDP_ENCAPSULATED_TUNNEL


def choose_variant(peer_vids: list[bytes]) -> NattVariant | None:
    for vid, name in NATT_VARIANTS:
        if vid in peer_vids:
            return NattVariant(vid, name)
    return None


def natd_hash(hash_fn: Callable[[bytes], bytes], icookie: bytes, rcookie: bytes, address: str, port: int) -> bytes:
    """HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash (RFC 3947 3.2)."""
    ip = ipaddress.ip_address(address).packed
    return hash_fn(icookie + rcookie + ip + port.to_bytes(2, "big"))


@dataclass(frozen=True)
class NatStatus:
    local_behind_nat: bool
    remote_behind_nat: bool

    @property
    def nat_detected(self) -> bool:
        return self.local_behind_nat or self.remote_behind_nat


def detect(
    received: list[bytes], hash_fn: Callable[[bytes], bytes], icookie: bytes, rcookie: bytes,
    local: tuple[str, int] | list[tuple[str, int]], remote: tuple[str, int] | list[tuple[str, int]],
) -> NatStatus:
    """RFC 3947 3.2: the first NAT-D is the sender's view of us; the others are its own addresses.

    local and remote may each be several (address, port) candidates: in Aggressive Mode message 3
    some initiators (vpnc, Cisco) hash the ports of message 1 (500) although they send it from
    4500, others hash the floated ports; both are honest, so either matching means "no NAT".
    """
    if not received:
        return NatStatus(False, False)
    locals_ = [local] if isinstance(local, tuple) else local
    remotes = [remote] if isinstance(remote, tuple) else remote
    ours = {natd_hash(hash_fn, icookie, rcookie, *a) for a in locals_}
    theirs = {natd_hash(hash_fn, icookie, rcookie, *a) for a in remotes}
    return NatStatus(local_behind_nat=received[0] not in ours,
                     remote_behind_nat=not theirs.intersection(received[1:]))
