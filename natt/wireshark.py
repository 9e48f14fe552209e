"""Wireshark's decryption tables for what natt negotiated: the IKEv1 SAs and the ESP SAs (as strongSwan's save-keys).

Wireshark reads both as UAT files from its profile directory (or `tshark -o uat:NAME:"..."`, one line each):

- `ikev1_decryption_table` (packet-isakmp.c): the initiator's cookie and the IKE SA's encryption key, both hex, one
  SA a line. Wireshark derives the IVs itself from the capture (phase 1 from the KE payloads, phase 2 from the last
  phase 1 block and the message ID), so the capture must hold the SA's phase 1 exchange.
- `esp_sa` (packet-ipsec.c): protocol, source, destination, SPI, encryption algorithm and key, authentication
  algorithm and key, all quoted strings, one SA *direction* a line; the algorithm names are Wireshark's own (its
  UAT refuses any other spelling). The keys are the KEYMAT split as natt splits it (RFC 2409 5.5): for AES-GCM
  the cipher key with its 4-byte salt (RFC 4106 8.1), which is what Wireshark takes.

Addresses are those on the wire outside the tunnel: ESP in UDP (NAT-T, IPsec over UDP) is matched by its outer IP
header. This end's address is written only when NAT-D showed nothing translates it; behind a NAT (or with no NAT-D
to tell) the address a capture point beyond the NAT sees is unknown here, so it is Wireshark's wildcard `*`. The
peer's address is where our ESP goes, as seen here (for a peer behind a PAT: the translated address and so the one
seen between that PAT and us).

Pure formatting: nothing here writes a file or logs; natt_daemons.common.keyexport writes the files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from natt.esp.sa import EspSA
from natt.esp.table import SaTable
from natt.ike.ikesa import IkeSA, State
from natt.wire.constants import AuthAlgorithm, EspTransformId

__all__ = ["ANY", "ESP_TABLE", "IKEV1_TABLE", "EspKeyLine", "esp_lines", "esp_sa_line", "ikev1_line",
           "ikev1_lines"]

IKEV1_TABLE = "ikev1_decryption_table"
ESP_TABLE = "esp_sa"
ANY = "*"  # Wireshark's wildcard for an ESP SA's address

# Wireshark's names (packet-ipsec.c esp_encryption_type_vals / esp_authentication_type_vals). AES-GCM names its ICV
# length in the cipher and takes no separate authentication ("NULL"); the ICV is still checked.
_ENCRYPTION: dict[int, str] = {
    EspTransformId.AES_GCM_16: "AES-GCM with 16 octet ICV [RFC4106]",
    EspTransformId.AES_CBC: "AES-CBC [RFC3602]",
    EspTransformId.TRIPLE_DES: "TripleDES-CBC [RFC2451]",
}
_AUTHENTICATION: dict[int | None, str] = {
    None: "NULL",
    AuthAlgorithm.HMAC_MD5: "HMAC-MD5-96 [RFC2403]",
    AuthAlgorithm.HMAC_SHA1: "HMAC-SHA-1-96 [RFC2404]",
    AuthAlgorithm.HMAC_SHA2_256: "HMAC-SHA-256-128 [RFC4868]",
}


@dataclass(frozen=True)
class EspKeyLine:
    """One direction of an ESP SA, as Wireshark's table holds it."""

    src: str
    dst: str
    esp: EspSA = field(repr=False)

    def __str__(self) -> str:
        return esp_sa_line(self.esp, self.src, self.dst)


def ikev1_line(sa: IkeSA) -> str:
    """`icookie,key` in hex: the IKEv1 table's two fields (UAT byte fields are bare hex)."""
    return f"{sa.icookie.hex()},{sa.enc_key.hex()}"


def ikev1_lines(sas: Iterable[IkeSA]) -> list[str]:
    """A line for each IKE SA that has its keys (phase 1 got as far as the key exchange) and is not deleted; not
    for the decoys a concentrator answers unknown group names with (their keys open nothing of anyone's)."""
    return [ikev1_line(sa) for sa in sas
            if sa.enc_key and sa.state is not State.DELETED and not (sa.responder and sa.responder.decoy)]


def esp_sa_line(esp: EspSA, src: str, dst: str) -> str:
    """The esp_sa table's line for one direction: every field a quoted string, keys as 0x-prefixed hex."""
    t = esp.transform
    try:
        encryption, authentication = _ENCRYPTION[t.transform_id], _AUTHENTICATION[t.auth]
    except KeyError:
        raise ValueError(f"{t.name}: no Wireshark name") from None
    keymat = esp.keymat
    enc_key, auth_key = keymat[: t.enc_key_len], keymat[t.enc_key_len :]
    fields = ("IPv4", src, dst, f"0x{esp.spi:08x}", encryption, f"0x{enc_key.hex()}", authentication,
              f"0x{auth_key.hex()}" if auth_key else "")
    return ",".join(f'"{f}"' for f in fields)


def _local_address(sa: IkeSA | None) -> str:
    """This end's address on the wire, or `*` when a NAT may translate it (or nothing says it does not)."""
    if sa is None or sa.nat is None or sa.nat.local_behind_nat:
        return ANY
    return sa.local[0]


def esp_lines(table: SaTable, sas: Mapping[int, IkeSA]) -> list[EspKeyLine]:
    """Both directions of every child SA pair in the table (pairs a rekey replaced included, while they live):
    inbound peer → us, outbound us → peer."""
    lines: list[EspKeyLine] = []
    for entry in table.inbound.values():
        out = entry.outbound
        local, peer = _local_address(sas.get(entry.sa_id)), out.remote[0]
        lines.append(EspKeyLine(peer, local, entry.esp))
        lines.append(EspKeyLine(local, peer, out.esp))
    return lines
