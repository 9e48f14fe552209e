"""Vendor ID payloads: which we send, and what we learn from the peer's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from natt.ike.events import VendorIdSeen
from natt.wire.constants import VendorId, vendor_id_name

if TYPE_CHECKING:
    from natt.ike.endpoint import IkeEndpoint
    from natt.ike.ikesa import IkeSA


def initiator_vids(nat_traversal: bool, natt_vids: tuple[bytes, ...]) -> list[bytes]:
    vids = [VendorId.XAUTH, VendorId.DPD]
    if nat_traversal:
        vids += list(natt_vids)
    vids.append(VendorId.CISCO_UNITY)
    return vids


def responder_vids(natt_vid: bytes | None) -> list[bytes]:
    """The seed's concentrator order: Unity, XAUTH, DPD, the chosen NAT-T variant."""
    vids = [VendorId.CISCO_UNITY, VendorId.XAUTH, VendorId.DPD]
    if natt_vid is not None:
        vids.append(natt_vid)
    return vids


def seen(ep: IkeEndpoint, sa: IkeSA, data: bytes) -> None:
    ep.emit(VendorIdSeen(sa.id, sa.peer, data, vendor_id_name(data)))
