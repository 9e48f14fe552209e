"""Every ISAKMP / IKEv1 constant in one place, with the names the logs and Wireshark use.

Sources: RFC 2407 (IPsec DOI), RFC 2408 (ISAKMP), RFC 2409 (IKE), RFC 3706 (DPD),
RFC 3947 (NAT-T), draft-ietf-ipsec-isakmp-xauth / draft-dukes-ike-mode-cfg (transaction
exchange), and the Cisco Unity / VPN 3000 extensions seen in the seed logs.
"""

from __future__ import annotations

from enum import IntEnum

ISAKMP_MAJOR = 1
ISAKMP_MINOR = 0
IKE_PORT = 500
NATT_PORT = 4500
CISCO_UDP_PORT = 10000
DOI_IPSEC = 1
SIT_IDENTITY_ONLY = 1
HEADER_LEN = 28
GENERIC_HEADER_LEN = 4
NON_ESP_MARKER = b"\x00\x00\x00\x00"
NAT_KEEPALIVE = b"\xff"


class ExchangeType(IntEnum):
    NONE = 0
    BASE = 1
    IDENTITY_PROTECTION = 2  # Main Mode
    AUTHENTICATION_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    TRANSACTION = 6  # Mode Config / XAUTH
    QUICK_MODE = 32
    NEW_GROUP_MODE = 33


# How the Cisco client log names each exchange ("ISAKMP OAK AG", "ISAKMP OAK TRANS", ...).
EXCHANGE_LOG_NAMES: dict[int, str] = {
    ExchangeType.IDENTITY_PROTECTION: "OAK MM",
    ExchangeType.AGGRESSIVE: "OAK AG",
    ExchangeType.INFORMATIONAL: "OAK INFO",
    ExchangeType.TRANSACTION: "OAK TRANS",
    ExchangeType.QUICK_MODE: "OAK QM",
    ExchangeType.NEW_GROUP_MODE: "OAK NGM",
}

# Wireshark's names, used by the concentrator's IKEDECODE lines.
EXCHANGE_NAMES: dict[int, str] = {
    ExchangeType.BASE: "Base",
    ExchangeType.IDENTITY_PROTECTION: "Identity Protection (Main Mode)",
    ExchangeType.AUTHENTICATION_ONLY: "Authentication Only",
    ExchangeType.AGGRESSIVE: "Aggressive",
    ExchangeType.INFORMATIONAL: "Informational",
    ExchangeType.TRANSACTION: "Transaction (Config Mode)",
    ExchangeType.QUICK_MODE: "Quick Mode",
    ExchangeType.NEW_GROUP_MODE: "New Group Mode",
}


class Flag(IntEnum):
    ENCRYPTION = 0x01
    COMMIT = 0x02
    AUTHENTICATION_ONLY = 0x04


KNOWN_FLAGS = 0x07


class PayloadType(IntEnum):
    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CR = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    NOTIFY = 11
    DELETE = 12
    VENDOR_ID = 13
    ATTRIBUTE = 14  # transaction exchange (XAUTH / Mode Config)
    SAK = 15
    SAT = 16
    KD = 17
    SEQ = 18
    POP = 19
    NAT_D = 20  # RFC 3947
    NAT_OA = 21  # RFC 3947
    NAT_D_DRAFT = 130  # draft-ietf-ipsec-nat-t-ike-02/03
    NAT_OA_DRAFT = 131
    CISCO_FRAGMENT = 132


# Names as the Cisco client log prints them inside "(SA, KE, NON, ...)".
PAYLOAD_LOG_NAMES: dict[int, str] = {
    PayloadType.SA: "SA",
    PayloadType.PROPOSAL: "PROP",
    PayloadType.TRANSFORM: "TRANS",
    PayloadType.KE: "KE",
    PayloadType.ID: "ID",
    PayloadType.CERT: "CERT",
    PayloadType.CR: "CERT_REQ",
    PayloadType.HASH: "HASH",
    PayloadType.SIG: "SIG",
    PayloadType.NONCE: "NON",
    PayloadType.NOTIFY: "NOTIFY",
    PayloadType.DELETE: "DEL",
    PayloadType.VENDOR_ID: "VID",
    PayloadType.ATTRIBUTE: "ATTR",
    PayloadType.NAT_D: "NAT-D",
    PayloadType.NAT_OA: "NAT-OA",
    PayloadType.NAT_D_DRAFT: "NAT-D",
    PayloadType.NAT_OA_DRAFT: "NAT-OA",
    PayloadType.CISCO_FRAGMENT: "FRAG",
}

# Names as the concentrator's "RECEIVED Message ... with payloads :" line prints them.
PAYLOAD_DECODE_NAMES: dict[int, str] = {
    PayloadType.NONE: "NONE",
    PayloadType.SA: "SA",
    PayloadType.PROPOSAL: "PROPOSAL",
    PayloadType.TRANSFORM: "TRANSFORM",
    PayloadType.KE: "KE",
    PayloadType.ID: "ID",
    PayloadType.CERT: "CERT",
    PayloadType.CR: "CERT_REQ",
    PayloadType.HASH: "HASH",
    PayloadType.SIG: "SIG",
    PayloadType.NONCE: "NONCE",
    PayloadType.NOTIFY: "NOTIFY",
    PayloadType.DELETE: "DELETE",
    PayloadType.VENDOR_ID: "VENDOR",
    PayloadType.ATTRIBUTE: "ATTR",
    PayloadType.NAT_D: "NAT-D",
    PayloadType.NAT_OA: "NAT-OA",
    PayloadType.NAT_D_DRAFT: "NAT-D",
    PayloadType.NAT_OA_DRAFT: "NAT-OA",
    PayloadType.CISCO_FRAGMENT: "FRAG",
}


class NotifyType(IntEnum):
    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576  # RFC 2407 4.6.3
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    DELETE_REASON = 32769  # private use (RFC 2408 3.14.1): why the gateway ends a session, as text, before its DELETE
    R_U_THERE = 36136  # RFC 3706
    R_U_THERE_ACK = 36137
    CISCO_HEARTBEAT = 40500  # "Altiga keep-alive" in the VPN 3000 log
    CISCO_LOAD_BALANCE = 40501
    CISCO_UNITY_UNKNOWN = 40502
    CISCO_PRESHARED_KEY_HASH = 40503


NOTIFY_NAMES: dict[int, str] = {n.value: n.name.replace("_", "-") for n in NotifyType}
NOTIFY_NAMES[NotifyType.CISCO_HEARTBEAT] = "HEARTBEAT"

# The Cisco client log prints status notifies with a STATUS_ prefix.
NOTIFY_LOG_NAMES: dict[int, str] = {
    NotifyType.INITIAL_CONTACT: "STATUS_INITIAL_CONTACT",
    NotifyType.RESPONDER_LIFETIME: "STATUS_RESP_LIFETIME",
    NotifyType.REPLAY_STATUS: "STATUS_REPLAY_STATUS",
    NotifyType.CONNECTED: "STATUS_CONNECTED",
    NotifyType.R_U_THERE: "DPD_R_U_THERE",
    NotifyType.R_U_THERE_ACK: "DPD_R_U_THERE_ACK",
    NotifyType.CISCO_HEARTBEAT: "HEARTBEAT",
    NotifyType.CISCO_LOAD_BALANCE: "LOAD_BALANCE",
}


def notify_name(value: int) -> str:
    return NOTIFY_NAMES.get(value, f"UNKNOWN-NOTIFY({value})")


def notify_log_name(value: int) -> str:
    return NOTIFY_LOG_NAMES.get(value) or NOTIFY_NAMES.get(value, str(value)).replace("-", "_")


class ProtocolId(IntEnum):
    ISAKMP = 1
    IPSEC_AH = 2
    IPSEC_ESP = 3
    IPCOMP = 4


class IkeTransformId(IntEnum):
    KEY_IKE = 1


class EspTransformId(IntEnum):
    DES = 2
    TRIPLE_DES = 3
    NULL = 11
    AES_CBC = 12
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20


ESP_TRANSFORM_NAMES: dict[int, str] = {
    EspTransformId.DES: "ESP_DES",
    EspTransformId.TRIPLE_DES: "ESP_3DES",
    EspTransformId.NULL: "ESP_NULL",
    EspTransformId.AES_CBC: "ESP_AES",
    EspTransformId.AES_GCM_8: "ESP_AES_GCM_8",
    EspTransformId.AES_GCM_12: "ESP_AES_GCM_12",
    EspTransformId.AES_GCM_16: "ESP_AES_GCM_16",
}


class IkeAttr(IntEnum):
    """Phase 1 SA attributes (RFC 2409 appendix A)."""

    ENCRYPTION_ALGORITHM = 1
    HASH_ALGORITHM = 2
    AUTHENTICATION_METHOD = 3
    GROUP_DESCRIPTION = 4
    GROUP_TYPE = 5
    GROUP_PRIME = 6
    GROUP_GENERATOR_ONE = 7
    GROUP_GENERATOR_TWO = 8
    GROUP_CURVE_A = 9
    GROUP_CURVE_B = 10
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16


class IpsecAttr(IntEnum):
    """Phase 2 SA attributes (RFC 2407 4.5)."""

    SA_LIFE_TYPE = 1
    SA_LIFE_DURATION = 2
    GROUP_DESCRIPTION = 3
    ENCAPSULATION_MODE = 4
    AUTHENTICATION_ALGORITHM = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICTIONARY_SIZE = 8
    COMPRESS_PRIVATE_ALGORITHM = 9


class IkeEncryption(IntEnum):
    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_CBC = 4
    TRIPLE_DES_CBC = 5
    CAST_CBC = 6
    AES_CBC = 7


class IkeHash(IntEnum):
    MD5 = 1
    SHA1 = 2
    TIGER = 3
    SHA2_256 = 4
    SHA2_384 = 5
    SHA2_512 = 6


class AuthMethod(IntEnum):
    PRE_SHARED_KEY = 1
    DSS_SIG = 2
    RSA_SIG = 3
    RSA_ENC = 4
    RSA_REV_ENC = 5
    # XAUTH variants (draft-ietf-ipsec-isakmp-xauth): initiator authenticates with XAUTH.
    XAUTH_INIT_PRESHARED = 65001
    XAUTH_RESP_PRESHARED = 65002
    XAUTH_INIT_DSS = 65003
    XAUTH_RESP_DSS = 65004
    XAUTH_INIT_RSA = 65005
    XAUTH_RESP_RSA = 65006


class LifeType(IntEnum):
    SECONDS = 1
    KILOBYTES = 2


class EncapsulationMode(IntEnum):
    TUNNEL = 1
    TRANSPORT = 2
    UDP_ENCAPSULATED_TUNNEL = 3  # RFC 3947
    UDP_ENCAPSULATED_TRANSPORT = 4
    UDP_ENCAPSULATED_TUNNEL_DRAFT = 61443  # draft-ietf-ipsec-nat-t-ike-00..03
    UDP_ENCAPSULATED_TRANSPORT_DRAFT = 61444


class AuthAlgorithm(IntEnum):
    """IPsec DOI authentication algorithm attribute values (RFC 2407 4.5)."""

    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class IdType(IntEnum):
    IPV4_ADDR = 1
    FQDN = 2
    USER_FQDN = 3
    IPV4_ADDR_SUBNET = 4
    IPV6_ADDR = 5
    IPV6_ADDR_SUBNET = 6
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


class ConfigType(IntEnum):
    """Transaction exchange message types (ISAKMP_CFG_*)."""

    REQUEST = 1
    REPLY = 2
    SET = 3
    ACK = 4


CONFIG_TYPE_LOG_NAMES: dict[int, str] = {
    ConfigType.REQUEST: "MODE_CFG_REQUEST",
    ConfigType.REPLY: "MODE_CFG_REPLY",
    ConfigType.SET: "MODE_CFG_SET",
    ConfigType.ACK: "MODE_CFG_ACK",
}


class ConfigAttr(IntEnum):
    """Mode Config, XAUTH and Cisco Unity attributes."""

    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_ADDRESS_EXPIRY = 5
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_NETMASK = 9
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_NBNS = 11
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15
    # XAUTH (draft-ietf-ipsec-isakmp-xauth-06)
    XAUTH_TYPE = 16520
    XAUTH_USER_NAME = 16521
    XAUTH_USER_PASSWORD = 16522
    XAUTH_PASSCODE = 16523
    XAUTH_MESSAGE = 16524
    XAUTH_CHALLENGE = 16525
    XAUTH_DOMAIN = 16526
    XAUTH_STATUS = 16527
    XAUTH_NEXT_PIN = 16528
    XAUTH_ANSWER = 16529
    # Cisco Unity
    UNITY_BANNER = 28672
    UNITY_SAVE_PASSWD = 28673
    UNITY_DEF_DOMAIN = 28674
    UNITY_SPLITDNS_NAME = 28675
    UNITY_SPLIT_INCLUDE = 28676
    UNITY_NATT_PORT = 28677
    UNITY_LOCAL_LAN = 28678
    UNITY_PFS = 28679
    UNITY_FW_TYPE = 28680
    UNITY_BACKUP_SERVERS = 28681
    UNITY_DDNS_HOSTNAME = 28682


# The Cisco client prints these names for received Mode Config attributes.
CONFIG_ATTR_LOG_NAMES: dict[int, str] = {
    ConfigAttr.INTERNAL_IP4_ADDRESS: "INTERNAL_IPV4_ADDRESS",
    ConfigAttr.INTERNAL_IP4_NETMASK: "INTERNAL_IPV4_NETMASK",
    ConfigAttr.INTERNAL_IP4_DNS: "INTERNAL_IPV4_DNS",
    ConfigAttr.INTERNAL_IP4_NBNS: "INTERNAL_IPV4_NBNS",
    ConfigAttr.APPLICATION_VERSION: "APPLICATION_VERSION",
    ConfigAttr.UNITY_BANNER: "MODECFG_UNITY_BANNER",
    ConfigAttr.UNITY_SAVE_PASSWD: "MODECFG_UNITY_SAVEPWD",
    ConfigAttr.UNITY_DEF_DOMAIN: "MODECFG_UNITY_DEFDOMAIN",
    ConfigAttr.UNITY_SPLIT_INCLUDE: "MODECFG_UNITY_SPLIT_INCLUDE",
    ConfigAttr.UNITY_NATT_PORT: "MODECFG_UNITY_NATT_PORT",
    ConfigAttr.UNITY_PFS: "MODECFG_UNITY_PFS",
    ConfigAttr.UNITY_FW_TYPE: "MODECFG_UNITY_FW_TYPE",
    ConfigAttr.UNITY_BACKUP_SERVERS: "MODECFG_UNITY_BACKUPSERVERS",
}


def config_attr_name(value: int) -> str:
    if value in CONFIG_ATTR_LOG_NAMES:
        return CONFIG_ATTR_LOG_NAMES[value]
    try:
        return ConfigAttr(value).name
    except ValueError:
        return f"ATTR_{value}"


class XauthType(IntEnum):
    GENERIC = 0
    RADIUS_CHAP = 1
    OTP = 2
    S_KEY = 3


class XauthStatus(IntEnum):
    FAIL = 0
    OK = 1


# Attribute values whose payload is TV (short) rather than TLV: the AF bit is set on encode.
CONFIG_SHORT_ATTRS = frozenset(
    {
        ConfigAttr.XAUTH_TYPE,
        ConfigAttr.XAUTH_STATUS,
        ConfigAttr.UNITY_SAVE_PASSWD,
        ConfigAttr.UNITY_NATT_PORT,
        ConfigAttr.UNITY_PFS,
    }
)


class VendorId:
    """Vendor ID payload contents, with their names (the seed log prints them)."""

    CISCO_UNITY = bytes.fromhex("12f5f28c457168a9702d9fe274cc0100")
    XAUTH = bytes.fromhex("09002689dfd6b712")
    DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
    NATT_RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")
    NATT_DRAFT_02 = bytes.fromhex("cd60464335df21f87cfdb2fc68b6a448")
    NATT_DRAFT_02_N = bytes.fromhex("90cb80913ebb696e086381b5ec427b1f")
    NATT_DRAFT_03 = bytes.fromhex("7d9419a65310ca6f2c179d9215529d56")
    CISCO_FRAGMENTATION = bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d3c0000000")
    # "Cisco VPN Concentrator" (the seed shows this one with a varying version suffix).
    CISCO_CONCENTRATOR = bytes.fromhex("1f07f70eaa6514d3b0fa96542a500306")
    CISCO_CONCENTRATOR_PREFIX = bytes.fromhex("1f07f70eaa6514d3b0fa96542a")
    # Cisco Unity clients append version bytes after the "Cisco Unity" prefix.
    CISCO_UNITY_PREFIX = bytes.fromhex("12f5f28c457168a9702d9fe274cc")


VENDOR_ID_NAMES: list[tuple[bytes, str, bool]] = [
    # (bytes, name as the Cisco client logs it, match as prefix)
    (VendorId.CISCO_UNITY, "Unity Protocol Support", False),
    (VendorId.XAUTH, "XAUTH", False),
    (VendorId.DPD, "DPD", False),
    (VendorId.NATT_RFC3947, "NAT-T (RFC 3947)", False),
    (VendorId.NATT_DRAFT_02_N, "NAT-T (draft-02\\n)", False),
    (VendorId.NATT_DRAFT_02, "NAT-T (draft-02)", False),
    (VendorId.NATT_DRAFT_03, "NAT-T (draft-03)", False),
    (VendorId.CISCO_FRAGMENTATION, "IOS Vendor ID Contruction successful (Fragmentation)", False),
    (VendorId.CISCO_CONCENTRATOR_PREFIX, "Cisco VPN Concentrator", True),
    (VendorId.CISCO_UNITY_PREFIX, "Unity Protocol Support", True),
]


def vendor_id_name(data: bytes) -> str | None:
    for value, name, prefix in VENDOR_ID_NAMES:
        if data == value or (prefix and data.startswith(value)):
            return name
    return None


class DeleteProtocol(IntEnum):
    ISAKMP = 1
    IPSEC_ESP = 3
