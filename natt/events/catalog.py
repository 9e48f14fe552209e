"""Every message natt logs, in one place, worded as the seeds' devices word them.

Three kinds of entry (``Origin``):

* SEED: a line of the seeds' logs (the concentrator's Filterable Event Log or the VPN Client
  log), with the class, id, client code, severity and wording the seed shows, including its
  oddities ("Recieved", "centry", the trailing space in "(ENCRYPT )"). A unit test renders
  every log entry of both seed files from these templates.
* VARIANT: the same event (class and id) as a seed line in a case the seed does not show,
  e.g. the concentrator sending DPD R-U-THERE rather than answering it.
* NATT: what a working daemon must also say and the seeds never needed: failures and the
  NAT-T diagnoses. Their ids start at ``NATT_ID_BASE`` so they never collide with the seeds'.

Templates are ``str.format`` strings with named fields. Hex formats follow the seed: the
concentrator prints ``%x`` (no padding: "msgid=d678099", "mess_id 0x0"), the client prints
``0x%08X``. Field values that are bytes render as upper-case hex. Fields whose names look
secret (``model.is_secret_field``) render as ``********`` unless the log reveals secrets.

Helpers at the end turn wire values into the strings these templates expect.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from natt.events.model import MASK, EventClass, check_severity, client_code, client_severity_nibble, is_secret_field

NATT_ID_BASE = 500


class Origin(StrEnum):
    SEED = "seed"
    VARIANT = "variant"
    NATT = "natt"


class MessageFieldError(ValueError):
    """A template was rendered without one of its fields."""


class _Masked:
    """Stands in for a secret value: renders as MASK whatever the format spec says."""


_MASKED = _Masked()


class _LogFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, _Masked):
            return MASK
        if isinstance(value, bytes | bytearray) and not format_spec:
            return bytes(value).hex().upper()
        return super().format_field(value, format_spec)


_FORMATTER = _LogFormatter()


@functools.lru_cache(maxsize=1024)  # the catalogue's templates, parsed on every render otherwise
def template_fields(template: str) -> frozenset[str]:
    """The named fields of a template; positional or dotted fields are refused."""
    names = set()
    for _literal, field, _spec, _conversion in _FORMATTER.parse(template):
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(f"template field {field!r} must be a plain name: {template!r}")
        names.add(field)
    return frozenset(names)


@dataclass(frozen=True)
class Message:
    """One catalogue entry. ``event_id`` is the concentrator's number ("IKEDBG/81"); for
    client-only seed lines it is the client code's low 16 bits, so RPT still has a key."""

    name: str
    cls: EventClass
    event_id: int
    severity: int
    template: str
    client_code: int | None = None
    origin: Origin = Origin.SEED
    shows_peer: bool = True  # the concentrator prints the peer address after RPT=n

    def __post_init__(self) -> None:
        check_severity(self.severity)
        template_fields(self.template)
        if self.client_code is not None and self.client_code >> 28 != client_severity_nibble(self.severity):
            raise ValueError(f"{self.name}: client code {self.client_code:#010x} disagrees with severity "
                             f"{self.severity}")

    @property
    def fields(self) -> frozenset[str]:
        return template_fields(self.template)

    def render(self, *, reveal_secrets: bool = False, **values: Any) -> str:
        missing = self.fields - values.keys()
        if missing:
            raise MessageFieldError(f"{self.name} needs {', '.join(sorted(missing))}")
        if not reveal_secrets:
            values = {k: (_MASKED if is_secret_field(k) else v) for k, v in values.items()}
        return _FORMATTER.vformat(self.template, (), values)


def _seed(name: str, cls: EventClass, event_id: int, severity: int, template: str, *,
          shows_peer: bool = True, origin: Origin = Origin.SEED) -> Message:
    """A concentrator line of the seed."""
    return Message(name, cls, event_id, severity, template, origin=origin, shows_peer=shows_peer)


def _client(name: str, cls: EventClass, severity: int, code: int, template: str, *,
            origin: Origin = Origin.SEED) -> Message:
    """A VPN Client line of the seed: "Sev=Info/<severity> <cls>/<code>"."""
    return Message(name, cls, code & 0xFFFF, severity, template, client_code=code, origin=origin)


def _natt(name: str, cls: EventClass, event_id: int, severity: int, template: str, *,
          shows_peer: bool = True) -> Message:
    """natt's own: one number for both logs, the client code built from it."""
    return Message(name, cls, event_id, severity, template, client_code=client_code(cls, severity, event_id),
                   origin=Origin.NATT, shows_peer=shows_peer)


_C = EventClass

# ================================================================================================
# VPN Client log (seed: "Sev=Info/N CLASS/0x6300xxxx")
# ================================================================================================

# ---- connection manager and dialer --------------------------------------------------------------
CONNECTION_INITIATING = _client("CONNECTION_INITIATING", _C.DIALER, 6, 0x63300002, "Initiating connection.")
CONNECTION_BEGIN = _client("CONNECTION_BEGIN", _C.CM, 4, 0x63100002, "Begin connection process")
CONNECTION_MEDIUM = _client("CONNECTION_MEDIUM", _C.CM, 4, 0x63100004, "Establish secure connection using {medium}")
CONNECTION_ATTEMPT = _client("CONNECTION_ATTEMPT", _C.CM, 4, 0x63100026, 'Attempt connection with server "{server}"')
XAUTH_LAUNCH = _client("XAUTH_LAUNCH", _C.CM, 4, 0x63100015, "Launch xAuth application")
XAUTH_RETURNED = _client("XAUTH_RETURNED", _C.CM, 4, 0x63100017, "xAuth application returned")
PHASE1_ESTABLISHED = _client("PHASE1_ESTABLISHED", _C.CM, 4, 0x6310000E,
                             "Established Phase 1 SA. {count} Phase 1 SA in the system")
MODECFG_RECEIVED = _client("MODECFG_RECEIVED", _C.CM, 4, 0x63100019, "Mode Config data received")
SECURE_CONNECTION_ESTABLISHED = _client("SECURE_CONNECTION_ESTABLISHED", _C.CM, 4, 0x6310001A,
                                        "One secure connection established")
CONNECTION_ESTABLISHED = _client("CONNECTION_ESTABLISHED", _C.DIALER, 6, 0x63300003, "Connection established.")
ADDITIONAL_PHASE2 = _client("ADDITIONAL_PHASE2", _C.CM, 4, 0x63100022, "Additional Phase 2 SA established.")

# ---- IKE: messages on the wire (payloads from isakmp_payloads(), exchange "OAK AG", ...) ---------
IKE_ATTEMPT = _client("IKE_ATTEMPT", _C.IKE, 6, 0x6300003B, "Attempting to establish a connection with {peer}.")
ISAKMP_SENDING = _client("ISAKMP_SENDING", _C.IKE, 4, 0x63000013, "SENDING >>> ISAKMP {exchange} {payloads} to {peer}")
ISAKMP_PACKET_RECEIVED = _client("ISAKMP_PACKET_RECEIVED", _C.IKE, 5, 0x6300002F,
                                 "Received ISAKMP packet: peer = {peer}")
ISAKMP_RECEIVING = _client("ISAKMP_RECEIVING", _C.IKE, 4, 0x63000014,
                           "RECEIVING <<< ISAKMP {exchange} {payloads} from {peer}")

# ---- IKE: vendor IDs and what they announce -------------------------------------------------------
VENDOR_ID_PAYLOAD = _client("VENDOR_ID_PAYLOAD", _C.IKE, 5, 0x63000059, "Vendor ID payload = {vid}")
PEER_IS_UNITY = _client("PEER_IS_UNITY", _C.IKE, 5, 0x63000001, "Peer is a Cisco-Unity compliant peer")
PEER_SUPPORTS_XAUTH = _client("PEER_SUPPORTS_XAUTH", _C.IKE, 5, 0x63000001, "Peer supports XAUTH")
PEER_SUPPORTS_DPD = _client("PEER_SUPPORTS_DPD", _C.IKE, 5, 0x63000001, "Peer supports DPD")
PEER_SUPPORTS_NAT_T = _client("PEER_SUPPORTS_NAT_T", _C.IKE, 5, 0x63000001, "Peer supports NAT-T")
PEER_SUPPORTS_FRAGMENTATION = _client("PEER_SUPPORTS_FRAGMENTATION", _C.IKE, 5, 0x63000001,
                                      "Peer supports IKE fragmentation payloads")

# ---- IKE: NAT detection (remote/local from nat_word()) ----------------------------------------------
NAT_DETECTION_STATUS = _client("NAT_DETECTION_STATUS", _C.IKE, 5, 0x63000071,
                               "Automatic NAT Detection Status:\n"
                               "Remote end {remote} behind a NAT device\n"
                               "This end {local} behind a NAT device")

# ---- IKE: firewall policy and Mode Config -----------------------------------------------------------
FIREWALL_REQUEST = _client("FIREWALL_REQUEST", _C.IKE, 5, 0x6300005D,
                           "Client sending a firewall request to concentrator")
FIREWALL_POLICY = _client("FIREWALL_POLICY", _C.IKE, 5, 0x6300005C,
                          "Firewall Policy: Product={product}, Capability=({capability}).")
# An address attribute: attribute="INTERNAL_IPV4_ADDRESS", value="40.1.1.1".
MODECFG_REPLY_ADDRESS = _client("MODECFG_REPLY_ADDRESS", _C.IKE, 5, 0x63000010,
                                "MODE_CFG_REPLY: Attribute = {attribute}: , value = {value}")
# A numeric attribute: attribute="MODECFG_UNITY_SAVEPWD", value=0.
MODECFG_REPLY_VALUE = _client("MODECFG_REPLY_VALUE", _C.IKE, 5, 0x6300000D,
                              "MODE_CFG_REPLY: Attribute = {attribute}: , value = 0x{value:08X}")
# A string attribute: attribute="APPLICATION_VERSION", value="Cisco Systems, Inc./VPN 3000 ...".
MODECFG_REPLY_STRING = _client("MODECFG_REPLY_STRING", _C.IKE, 5, 0x6300000E,
                               "MODE_CFG_REPLY: Attribute = {attribute}, value = {value}")
# The Cisco NAT-T port attribute; the misspelling is the client's own.
MODECFG_REPLY_NAT_T_PORT = _client("MODECFG_REPLY_NAT_T_PORT", _C.IKE, 5, 0x6300000D,
                                   "MODE_CFG_REPLY: Attribute = Recieved and using NAT-T port number , "
                                   "value = 0x{port:08X}")

# ---- IKE: quick mode and the SAs it loads -----------------------------------------------------------
KEY_REQUEST = _client("KEY_REQUEST", _C.IKE, 5, 0x63000055,
                      "Received a key request from Driver for IP address {address}, GW IP = {gateway}")
RESPONDER_LIFETIME = _client("RESPONDER_LIFETIME", _C.IKE, 5, 0x63000044,
                             "RESPONDER-LIFETIME notify has value of {seconds} seconds")
SA_EXPIRY_ADJUSTED = _client("SA_EXPIRY_ADJUSTED", _C.IKE, 5, 0x63000046,
                             "This SA has already been alive for {age} seconds, setting expiry to {remaining} "
                             "seconds from now")
IPSEC_SA_LOADING = _client("IPSEC_SA_LOADING", _C.IKE, 5, 0x63000058,
                           "Loading IPsec SA (Message ID = 0x{msgid:08X} OUTBOUND SPI = 0x{outbound_spi:08X} "
                           "INBOUND SPI = 0x{inbound_spi:08X})")
OUTBOUND_SPI_LOADED = _client("OUTBOUND_SPI_LOADED", _C.IKE, 5, 0x63000025, "Loaded OUTBOUND ESP SPI: 0x{spi:08X}")
INBOUND_SPI_LOADED = _client("INBOUND_SPI_LOADED", _C.IKE, 5, 0x63000026, "Loaded INBOUND ESP SPI: 0x{spi:08X}")

# ---- IKE: liveness ------------------------------------------------------------------------------------
PING_PUBLIC_SA = _client("PING_PUBLIC_SA", _C.IKE, 6, 0x63000054, "Sent a ping on the Public IPsec SA")
PING_IKE_SA = _client("PING_IKE_SA", _C.IKE, 6, 0x63000052, "Sent a ping on the IKE SA")

# ---- IPsec driver (spi in the driver's host byte order: host_order_spi()) ----------------------------
KEYS_DELETED = _client("KEYS_DELETED", _C.IPSEC, 4, 0x63700014, "Deleted all keys")
KEY_STRUCTURE_CREATED = _client("KEY_STRUCTURE_CREATED", _C.IPSEC, 4, 0x63700010, "Created a new key structure")
KEY_ADDED = _client("KEY_ADDED", _C.IPSEC, 4, 0x6370000F, "Added key with SPI=0x{spi:08x} into key list")

# ================================================================================================
# VPN 3000 concentrator event log (seed: "SEV=n CLASS/id RPT=n peer")
# ================================================================================================

# ---- IKEDECODE: packet decodes (fields from spaced_hex(), decode_label(), isakmp_flags()) ----------
# The layout is the seed's cleanest copy of each dump (labels padded to one column).
ISAKMP_HEADER_DECODE = _seed("ISAKMP_HEADER_DECODE", _C.IKEDECODE, 0, 8,
                             "ISAKMP HEADER : ( Version 1.0 )\n"
                             "  Initiator Cookie(8): {icookie}\n"
                             "  Responder Cookie(8): {rcookie}\n"
                             "  Next Payload  :{next_payload}\n"
                             "  Exchange Type :{exchange}\n"
                             "  Flags         :{flags}\n"
                             "  Message ID    : {msgid:x}\n"
                             "  Length        : {length}")
NOTIFY_DECODE = _seed("NOTIFY_DECODE", _C.IKEDECODE, 0, 8,
                      "Notify Payload Decode :\n"
                      "  DOI          :{doi}\n"
                      "  Protocol     :{protocol}\n"
                      "  Message      :{notify}\n"
                      "  Spi         :{spi}\n"
                      "  Length      :{length}")

# ---- IKEDBG: message processing (payloads from payload_chain()) -------------------------------------
MESSAGE_RECEIVED = _seed("MESSAGE_RECEIVED", _C.IKEDBG, 0, 8,
                         "RECEIVED Message (msgid={msgid:x}) with payloads :\n{payloads}\ntotal length : {length}")
MESSAGE_SENT = _seed("MESSAGE_SENT", _C.IKEDBG, 0, 8,
                     "SENDING Message (msgid={msgid:x}) with payloads :\n{payloads}\ntotal length : {length}")
PROCESSING_HASH = _seed("PROCESSING_HASH", _C.IKEDBG, 0, 9, "processing hash")
PROCESSING_NOTIFY = _seed("PROCESSING_NOTIFY", _C.IKEDBG, 0, 9, "Processing Notify payload")
CONSTRUCTING_BLANK_HASH = _seed("CONSTRUCTING_BLANK_HASH", _C.IKEDBG, 0, 9, "constructing blank hash")
CONSTRUCTING_QM_HASH = _seed("CONSTRUCTING_QM_HASH", _C.IKEDBG, 0, 9, "constructing qm hash")

# ---- IKEDBG: quick mode ----------------------------------------------------------------------------
LOADING_ALL_IPSEC_SAS = _seed("LOADING_ALL_IPSEC_SAS", _C.IKEDBG, 0, 9, "loading all IPSEC SAs")
QM_KEY_GENERATING = _seed("QM_KEY_GENERATING", _C.IKEDBG, 1, 9, "Generating Quick Mode Key!")
LOADING_HOST = _seed("LOADING_HOST", _C.IKEDBG, 0, 7, "Loading host:\n  Dst: {dst}\n  Src: {src}")
LOADING_SUBNET = _seed("LOADING_SUBNET", _C.IKEDBG, 0, 7, "Loading subnet:\n  DST: {dst} mask: {mask}\n  Src: {src}")
KEY_ADD_RECEIVED = _seed("KEY_ADD_RECEIVED", _C.IKEDBG, 7, 8, "IKE got a KEY_ADD MSG for SA: SPI = 0x{spi:x}",
                         shows_peer=False)
PITCHER_KEY_UPDATE = _seed("PITCHER_KEY_UPDATE", _C.IKEDBG, 0, 8, "pitcher: rcv KEY_UPDATE, spi 0x{spi:x}",
                           shows_peer=False)
PITCHER_SA_ACTIVE = _seed("PITCHER_SA_ACTIVE", _C.IKEDBG, 0, 8, "pitcher: recv KEY_SA_ACTIVE spi 0x{spi:x}",
                          shows_peer=False)
SA_ACTIVE_NO_REKEY = _seed("SA_ACTIVE_NO_REKEY", _C.IKEDBG, 0, 8,
                           "KEY_SA_ACTIVE no old rekey centry found with new spi 0x{spi:x}, mess_id 0x{msgid:x}",
                           shows_peer=False)

# ---- IKEDBG: keep-alives and DPD (kind: "Altiga keep-alive", ...) -----------------------------------
KEEPALIVE_TYPE_MISMATCH = _seed("KEEPALIVE_TYPE_MISMATCH", _C.IKEDBG, 41, 9,
                                "Received keep-alive of type {kind}, not the negotiated type")
DPD_ACK_SENT = _seed("DPD_ACK_SENT", _C.IKEDBG, 36, 9,
                     "Sending keep-alive of type DPD R-U-THERE-ACK (seq number 0x{seq:x})")
DPD_REQUEST_SENT = _seed("DPD_REQUEST_SENT", _C.IKEDBG, 36, 9,
                         "Sending keep-alive of type DPD R-U-THERE (seq number 0x{seq:x})", origin=Origin.VARIANT)

# ---- IKE: milestones (role: "Responder" or "Initiator") -------------------------------------------
NAT_T_NEGOTIATED = _seed("NAT_T_NEGOTIATED", _C.IKE, 173, 4,
                         "NAT-Traversal successfully negotiated!\n"
                         "IPSec traffic will be encapsulated to pass through NAT devices.")
SECURITY_NEGOTIATION_COMPLETE = _seed("SECURITY_NEGOTIATION_COMPLETE", _C.IKE, 49, 4,
                                      "Security negotiation complete for User ({user})\n"
                                      "{role}, Inbound SPI = 0x{inbound_spi:x}, Outbound SPI = 0x{outbound_spi:x}")
PHASE2_COMPLETED = _seed("PHASE2_COMPLETED", _C.IKE, 120, 4, "PHASE 2 COMPLETED (msgid={msgid:x})")

# ---- IPSECDBG: loading SAs into the data path ---------------------------------------------------------
IPSEC_KEY_MESSAGE_PARSE = _seed("IPSEC_KEY_MESSAGE_PARSE", _C.IPSECDBG, 6, 9,
                                "IPSEC key message parse - msgtype {msgtype}, Len {length}, vers 1, pid 00000000, "
                                "seq 0, err 0, type 2, mode 1, state {state}, label 0, pad 0, spi {spi:08x}, "
                                "encrKeyLen {encr_key_len}, hashKeyLen {hash_key_len}, ivlen {iv_len}, alg {alg}, "
                                "hmacAlg {hmac_alg}, lifetype 0, lifetime1 {lifetime1}, lifetime2 0, dsId 0",
                                shows_peer=False)
KEY_ADD_PROCESSING = _seed("KEY_ADD_PROCESSING", _C.IPSECDBG, 1, 9, "Processing KEY_ADD MSG!", shows_peer=False)
KEY_UPDATE_PROCESSING = _seed("KEY_UPDATE_PROCESSING", _C.IPSECDBG, 1, 9, "Processing KEY_UPDATE MSG!",
                              shows_peer=False)
KEY_MSGHDR2SECASSOC = _seed("KEY_MSGHDR2SECASSOC", _C.IPSECDBG, 1, 9, "key_msghdr2secassoc(): Enter", shows_peer=False)
NO_USER_FILTER = _seed("NO_USER_FILTER", _C.IPSECDBG, 1, 7, "No USER filter configured", shows_peer=False)
KEY_PROCESS_ADD_ENTER = _seed("KEY_PROCESS_ADD_ENTER", _C.IPSECDBG, 1, 9, "KeyProcessAdd: Enter", shows_peer=False)
KEY_PROCESS_ADD_OUTBOUND = _seed("KEY_PROCESS_ADD_OUTBOUND", _C.IPSECDBG, 1, 8, "KeyProcessAdd: Adding outbound SA",
                                 shows_peer=False)
KEY_PROCESS_ADD_SELECTORS = _seed("KEY_PROCESS_ADD_SELECTORS", _C.IPSECDBG, 1, 8,
                                  "KeyProcessAdd: src {src} mask {src_mask}, DST {dst} mask {dst_mask}",
                                  shows_peer=False)
KEY_PROCESS_ADD_FILTER = _seed("KEY_PROCESS_ADD_FILTER", _C.IPSECDBG, 1, 8,
                               "KeyProcessAdd: FilterIpsecAddIkeSa success", shows_peer=False)
UPDATE_INBOUND_ADDRESSES = _seed("UPDATE_INBOUND_ADDRESSES", _C.IPSECDBG, 1, 9, "Update inbound SA addresses",
                                 shows_peer=False)
KEY_PROCESS_UPDATE_ENTER = _seed("KEY_PROCESS_UPDATE_ENTER", _C.IPSECDBG, 1, 9, "KeyProcessUpdate: Enter",
                                 shows_peer=False)
KEY_PROCESS_UPDATE_SUCCESS = _seed("KEY_PROCESS_UPDATE_SUCCESS", _C.IPSECDBG, 1, 8, "KeyProcessUpdate: success",
                                   shows_peer=False)

# ---- IPSECDBG: data and NAT keepalives ------------------------------------------------------------------
INBOUND_SA_DATA = _seed("INBOUND_SA_DATA", _C.IPSECDBG, 1, 7, "IPSec Inbound SA has received data!", shows_peer=False)
NAT_KEEPALIVE_SENT = _seed("NAT_KEEPALIVE_SENT", _C.IPSECDBG, 18, 9,
                           "Xmit IPSEC-over-UDP NAT keepalive packet: success")
NAT_KEEPALIVE_RECEIVED = _seed("NAT_KEEPALIVE_RECEIVED", _C.IPSECDBG, 17, 9,
                               "Received an IPSEC-over-NAT-T NAT keepalive packet", shows_peer=False)

# ================================================================================================
# natt's own (not in the seeds): ids from NATT_ID_BASE, one number for both logs
# ================================================================================================

# ---- negotiation and authentication failures --------------------------------------------------------
WEAK_ALGORITHM = _natt("WEAK_ALGORITHM", _C.IKE, 500, 3,
                       "Weak algorithm negotiated: {what}; configure a stronger proposal")
AUTH_FAILED = _natt("AUTH_FAILED", _C.IKE, 501, 3,
                    "Phase 1 authentication failed: the peer's hash does not verify, "
                    "the group password (pre-shared key) is probably wrong")
XAUTH_FAILED = _natt("XAUTH_FAILED", _C.XAUTH, 502, 3, "User [{user}] failed extended authentication (XAUTH): {reason}")
XAUTH_ACCEPTED = _natt("XAUTH_ACCEPTED", _C.XAUTH, 503, 4, "User [{user}] passed extended authentication (XAUTH)")
PROPOSAL_REFUSED = _natt("PROPOSAL_REFUSED", _C.IKE, 504, 3, "Phase {phase} proposal refused: {reason}")
DECODE_ERROR = _natt("DECODE_ERROR", _C.IKE, 505, 3, "Refused a malformed message from {peer} ({notify}): {detail}")

# ---- ESP data path ---------------------------------------------------------------------------------------
ESP_REPLAY = _natt("ESP_REPLAY", _C.IPSEC, 506, 5,
                   "Replayed or too old ESP packet dropped: SPI 0x{spi:08x}, sequence number {esp_seq}")
ESP_AUTH_FAILED = _natt("ESP_AUTH_FAILED", _C.IPSEC, 507, 3,
                        "ESP packet failed its integrity check and was dropped: SPI 0x{spi:08x}")
ESP_UNKNOWN_SPI = _natt("ESP_UNKNOWN_SPI", _C.IPSEC, 508, 5, "ESP packet for unknown SPI 0x{spi:08x} dropped")

# ---- NAT transparency diagnoses -----------------------------------------------------------------------------
NAT_T_DISABLED = _natt("NAT_T_DISABLED", _C.NAT, 509, 3,
                       "Peer offered NAT-T while NAT transparency is disabled on this concentrator: "
                       "enable nat_traversal")
NAT_WITHOUT_NAT_T = _natt("NAT_WITHOUT_NAT_T", _C.NAT, 510, 3,
                          "Peer is behind a NAT device (IKE source port {port}) but no NAT transparency mode is in "
                          "use: its ESP cannot pass the NAT and no data will flow; enable nat_traversal")
NO_DATA_DECRYPTED = _natt("NO_DATA_DECRYPTED", _C.NAT, 511, 2,
                          "No packets decrypted ({encrypted} encrypted, 0 decrypted): the concentrator is probably "
                          "not doing NAT-T; ask its administrator to enable NAT Transparency")
NAT_T_NOT_OFFERED = _natt("NAT_T_NOT_OFFERED", _C.NAT, 512, 3,
                          "Transparent tunneling is enabled but the concentrator did not offer NAT-T: behind a NAT "
                          "device no data will pass; ask its administrator to enable NAT Transparency")
NAT_DETECTED = _natt("NAT_DETECTED", _C.NAT, 513, 5,
                     "Automatic NAT Detection Status:\n"
                     "Remote end {remote} behind a NAT device\n"
                     "This end {local} behind a NAT device")
PORT_FLOATED = _natt("PORT_FLOATED", _C.NAT, 514, 5,
                     "IKE moved to the NAT-T ports: local UDP {local_port}, remote UDP {remote_port}")
PEER_REBOUND = _natt("PEER_REBOUND", _C.NAT, 532, 4,
                     "NAT mapping changed: peer now at {address} UDP {remote_port}, learned from an authenticated "
                     "{via}; IKE and ESP follow")

# ---- sessions and address pool -----------------------------------------------------------------------------
SESSION_LIMIT_REACHED = _natt("SESSION_LIMIT_REACHED", _C.IKE, 515, 3,
                              "Session refused: the concurrent sessions limit is reached ({detail})")
ADDRESS_POOL_EXHAUSTED = _natt("ADDRESS_POOL_EXHAUSTED", _C.IKE, 516, 3,
                               "No address for user [{user}]: address pool {pool} is exhausted")
ADDRESS_ASSIGNED = _natt("ADDRESS_ASSIGNED", _C.IKE, 517, 4, "Assigned address {address} to user [{user}]")

# ---- tunnel life cycle ---------------------------------------------------------------------------------------
PHASE1_COMPLETED = _natt("PHASE1_COMPLETED", _C.IKE, 518, 4,
                         "PHASE 1 COMPLETED ({mode}, {cipher}, {hash}, {dh_group})")
IKE_SA_DELETED = _natt("IKE_SA_DELETED", _C.IKE, 519, 4, "IKE SA deleted: {reason}")
IPSEC_SA_DELETED = _natt("IPSEC_SA_DELETED", _C.IKE, 520, 5,
                         "IPSec SA deleted (Inbound SPI = 0x{inbound_spi:x}, Outbound SPI = 0x{outbound_spi:x}): "
                         "{reason}")
# The causes below are typed (natt.ike.events.Cause); counts and names that only the reason text carries are
# shown as that text ({detail}), never parsed out of it.
DPD_TIMEOUT = _natt("DPD_TIMEOUT", _C.DPD, 521, 3,
                    "Peer did not answer DPD R-U-THERE requests: the tunnel is declared dead ({detail})")
PEER_NOT_RESPONDING = _natt("PEER_NOT_RESPONDING", _C.IKE, 522, 3,
                            "No answer from {peer} after the last retransmission; giving up ({detail})")
RETRANSMITTING = _natt("RETRANSMITTING", _C.IKEDBG, 523, 7,
                       "Retransmitting the last {exchange} message (msgid={msgid:x}), attempt {attempt}")
# The client's own line for a timer's resend (the VPN Client: "Retransmitting last packet!"), at Info level.
RESENDING = _natt("RESENDING", _C.IKE, 536, 4,
                  "No answer yet: retransmitting {what} to {peer} (resend {attempt})")
CONNECTION_TERMINATED = _natt("CONNECTION_TERMINATED", _C.CM, 524, 4, "Connection terminated: {reason}")
# Free text, for a diagnosis no entry above words; prefer a named entry.
DIAGNOSIS = _natt("DIAGNOSIS", _C.IKE, 525, 3, "{text}")
IPSEC_OVER_UDP = _natt("IPSEC_OVER_UDP", _C.NAT, 526, 5,
                       "IPSec over UDP negotiated: ESP in UDP on port {port} (the client's port is learnt from its "
                       "first ESP packet)")

# ---- refusals and failed logins ------------------------------------------------------------------------------
# A message that is not malformed but was refused all the same (unknown group, selectors not authorised, ...).
EXCHANGE_REFUSED = _natt("EXCHANGE_REFUSED", _C.IKE, 527, 3, "Refused a message from {peer} ({notify}): {detail}")
# Frequent under attack or with a confused peer: debug detail, counted but not kept at the default severity.
MESSAGE_REFUSED = _natt("MESSAGE_REFUSED", _C.IKEDBG, 528, 6,
                        "Dropped a {exchange} message in state {state} before processing it ({kind}): {cause}")
# until: lockout_until() ("until 10/20/2002 20:37:42 UTC" or "until an administrator unlocks it").
XAUTH_USER_LOCKED = _natt("XAUTH_USER_LOCKED", _C.AUTH, 529, 3,
                          "User [{username}] locked out after {failures} failed XAUTH attempts, {until}")
XAUTH_SOURCE_LOCKED = _natt("XAUTH_SOURCE_LOCKED", _C.AUTH, 530, 3,
                            "Address {address} locked out after {failures} failed XAUTH attempts, {until}")
# The audit line of 'natt-concentrator unlock': what: unlock_scope().
REAUTHENTICATED = _natt("REAUTHENTICATED", _C.IKE, 533, 4,
                        "Phase 1 re-authenticated before it expired: new IKE SA {new_sa}, the tunnels moved to it and "
                        "the old one ({old_sa}) is deleted; the session and its address stay")
PHASE2_REKEYED = _natt("PHASE2_REKEYED", _C.IKE, 534, 4,
                       "IPSec SA rekeyed ({who}): new Inbound SPI = 0x{inbound_spi:x}, Outbound SPI = "
                       "0x{outbound_spi:x}, replacing 0x{old_spi:x}; lifetime {lifetime} s")
# Quick Mode message 3 lost: the peer's ESP under the new pair proves it has the keys (quick.commit_by_esp).
QM_COMMITTED_BY_ESP = _natt("QM_COMMITTED_BY_ESP", _C.IKE, 537, 4,
                            "Quick Mode HASH(3) not received (msgid={msgid:08x}): the peer's ESP on Inbound SPI "
                            "0x{inbound_spi:x} authenticates, so the IPSec SA is installed now")
# One line an interval while call admission sheds a flood of first messages (natt/ike/admission.py); never one
# line a packet. dropped: "reason count, ..."; top: the sources dropped most.
IKE_OVERLOAD = _natt("IKE_OVERLOAD", _C.IKE, 535, 3,
                     "Phase 1 overload: {total} first messages dropped in {seconds} s before any DH ({dropped}); "
                     "{evicted} half-open SAs gave way to newcomers; {sources} sources, most: {top}; "
                     "{half_open} half-open now", shows_peer=False)
XAUTH_UNLOCKED = _natt("XAUTH_UNLOCKED", _C.AUTH, 531, 4,
                       "Administrator cleared the XAUTH failure counts and lockouts of {what}: {cleared} cleared",
                       shows_peer=False)

# ---- the audit trail of the control socket (natt_daemons.common.control) --------------------------------------
# actor: who the caller says acts ("manager:admin"), else the login name of the peer's uid; uid and pid: the
# peer's, from the kernel (SO_PEERCRED). target: the command's arguments ("user=vpnclient1"), secrets masked.
ADMIN_COMMAND = _natt("ADMIN_COMMAND", _C.ADMIN, 540, 4,
                      "Administrator command {command} by {actor} (uid {uid}, pid {pid}): {target}: {outcome}",
                      shows_peer=False)
# needs: the access class the command needs ("admin", "root").
ADMIN_REFUSED = _natt("ADMIN_REFUSED", _C.ADMIN, 541, 3,
                      "Refused command {command} from {actor} (uid {uid}, pid {pid}): it needs {needs} access",
                      shows_peer=False)


def _collect() -> dict[str, Message]:
    found = {name: value for name, value in globals().items() if isinstance(value, Message)}
    for name, message in found.items():
        if message.name != name:
            raise RuntimeError(f"catalogue entry {name} calls itself {message.name}")
    return found


MESSAGES: Mapping[str, Message] = _collect()


def messages(origin: Origin | None = None) -> list[Message]:
    return [m for m in MESSAGES.values() if origin is None or m.origin is origin]


# ================================================================================================
# Field helpers: wire values → the strings the templates above expect
# ================================================================================================

# Exchange names of the concentrator's "Exchange Type :" decode. Quick Mode and Informational
# are the seed's; the others follow the same "Oakley ..." pattern.
DECODE_EXCHANGE_NAMES: Mapping[int, str] = {
    2: "Oakley Main Mode",
    4: "Oakley Aggressive Mode",
    5: "Oakley Informational",
    6: "Oakley Transaction",
    32: "Oakley Quick Mode",
}

_ISAKMP_FLAG_NAMES = ((0x01, "ENCRYPT"), (0x02, "COMMIT"), (0x04, "AUTH_ONLY"))


def isakmp_payloads(names: Iterable[str], *, encrypted: bool) -> str:
    """The client's payload list: "(SA, KE, NON)" or, encrypted, "*(HASH, ATTR)"."""
    return ("*" if encrypted else "") + "(" + ", ".join(names) + ")"


def decode_label(name: str, number: int) -> str:
    """The concentrator's payload label: "HASH (8)"."""
    return f"{name} ({number})"


def payload_chain(payloads: Iterable[tuple[str, int]], *, terminated: bool) -> str:
    """ "HDR + HASH (8) + NOTIFY (11) + NONE (0)". Received messages end with NONE (0) in
    the seed, sent ones do not."""
    parts = ["HDR", *(decode_label(n, v) for n, v in payloads)]
    if terminated:
        parts.append(decode_label("NONE", 0))
    return " + ".join(parts)


def spaced_hex(data: bytes) -> str:
    """Cookies and SPIs in decodes: "C5 A0 F0 8B"."""
    return " ".join(f"{b:02X}" for b in data)


def isakmp_flags(flags: int) -> str:
    """ "1 (ENCRYPT )": the device prints every set flag's name followed by a space."""
    names = [name for bit, name in _ISAKMP_FLAG_NAMES if flags & bit]
    if not names:
        return str(flags)
    return f"{flags} (" + "".join(f"{n} " for n in names) + ")"


def nat_word(behind: bool) -> str:
    """ "This end IS behind a NAT device" / "Remote end is NOT behind a NAT device"."""
    return "IS" if behind else "is NOT"


def host_order_spi(spi: int) -> int:
    """The client's IPsec driver prints SPIs in x86 byte order: SPI 0x02CC3526 is logged as
    "Added key with SPI=0x2635cc02" in the seed."""
    return int.from_bytes(spi.to_bytes(4, "big"), "little")


def tunnel_scope(group: str | None, user: str | None) -> str | None:
    """The concentrator's first line for tunnel events: "Group [ciscovpn] User [vpnclient2]"."""
    parts = []
    if group is not None:
        parts.append(f"Group [{group}]")
    if user is not None:
        parts.append(f"User [{user}]")
    return " ".join(parts) or None


def lockout_until(until: float | None) -> str:
    """The end of an XAUTH lockout, in the log's clock (UTC epoch seconds; None: no end)."""
    if until is None:
        return "until an administrator unlocks it"
    stamp = datetime.fromtimestamp(round(until), UTC)
    return f"until {stamp:%m/%d/%Y %H:%M:%S} UTC"


def unlock_scope(user: str | None, source: str | None) -> str:
    """What an operator's unlock named: "user [bob] and address 192.0.2.1", or "every user and address"."""
    parts = []
    if user is not None:
        parts.append(f"user [{user}]")
    if source is not None:
        parts.append(f"address {source}")
    return " and ".join(parts) or "every user and address"
