"""Payload classes, one module per family, and the type → class registry."""

from natt.wire.constants import PayloadType
from natt.wire.payloads.base import Payload
from natt.wire.payloads.config import ConfigAttributes
from natt.wire.payloads.fragment import CiscoFragment
from natt.wire.payloads.ident import Identification, NatOA
from natt.wire.payloads.notify import Delete, Notify
from natt.wire.payloads.opaque import (
    Certificate,
    CertificateRequest,
    Hash,
    KeyExchange,
    NatD,
    Nonce,
    Signature,
    VendorIdPayload,
)
from natt.wire.payloads.sa import DataAttribute, Proposal, SecurityAssociation, Transform

PAYLOAD_CLASSES: dict[int, type[Payload]] = {
    PayloadType.SA: SecurityAssociation,
    PayloadType.KE: KeyExchange,
    PayloadType.ID: Identification,
    PayloadType.CERT: Certificate,
    PayloadType.CR: CertificateRequest,
    PayloadType.HASH: Hash,
    PayloadType.SIG: Signature,
    PayloadType.NONCE: Nonce,
    PayloadType.NOTIFY: Notify,
    PayloadType.DELETE: Delete,
    PayloadType.VENDOR_ID: VendorIdPayload,
    PayloadType.ATTRIBUTE: ConfigAttributes,
    PayloadType.NAT_D: NatD,
    PayloadType.NAT_D_DRAFT: NatD,
    PayloadType.NAT_OA: NatOA,
    PayloadType.NAT_OA_DRAFT: NatOA,
    PayloadType.CISCO_FRAGMENT: CiscoFragment,
}

__all__ = [
    "PAYLOAD_CLASSES",
    "Certificate",
    "CertificateRequest",
    "CiscoFragment",
    "ConfigAttributes",
    "DataAttribute",
    "Delete",
    "Hash",
    "Identification",
    "KeyExchange",
    "NatD",
    "NatOA",
    "Nonce",
    "Notify",
    "Payload",
    "Proposal",
    "SecurityAssociation",
    "Signature",
    "Transform",
    "VendorIdPayload",
]
