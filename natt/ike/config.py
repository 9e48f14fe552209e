"""What each side is configured to do: proposals, the client profile, the concentrator policy.

Plain data, no I/O: the daemons build these from their TOML files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from natt.ike.admission import AdmissionSettings
from natt.ike.throttle import ThrottleSettings
from natt.wire.constants import (
    CISCO_UDP_PORT,
    AuthAlgorithm,
    AuthMethod,
    EspTransformId,
    IkeEncryption,
    IkeHash,
    VendorId,
)


@dataclass(frozen=True)
class Phase1Proposal:
    cipher: int = IkeEncryption.AES_CBC
    key_bits: int | None = 256
    hash: int = IkeHash.SHA2_256
    group: int = 14
    auth: int = AuthMethod.XAUTH_INIT_PRESHARED
    lifetime: int = 86400


@dataclass(frozen=True)
class Phase2Proposal:
    transform: int = EspTransformId.AES_GCM_16
    key_bits: int | None = 128
    auth: int | None = None
    pfs_group: int | None = None
    lifetime: int = 28800


# Modern defaults first; the seed's legacy suite is available when configured.
DEFAULT_PHASE1 = (
    Phase1Proposal(IkeEncryption.AES_CBC, 256, IkeHash.SHA2_256, 14),
    Phase1Proposal(IkeEncryption.AES_CBC, 128, IkeHash.SHA2_256, 14),
)
DEFAULT_PHASE2 = (
    Phase2Proposal(EspTransformId.AES_GCM_16, 128, None),
    Phase2Proposal(EspTransformId.AES_CBC, 256, AuthAlgorithm.HMAC_SHA2_256),
    Phase2Proposal(EspTransformId.AES_CBC, 256, AuthAlgorithm.HMAC_SHA1),
)
SEED_PHASE1 = Phase1Proposal(IkeEncryption.TRIPLE_DES_CBC, None, IkeHash.MD5, 2)
SEED_PHASE2 = Phase2Proposal(EspTransformId.TRIPLE_DES, None, AuthAlgorithm.HMAC_MD5)


@dataclass(frozen=True)
class Timers:
    retransmit_base: float = 2.0
    retransmit_tries: int = 5
    dpd_interval: float = 30.0  # idle time before R-U-THERE
    dpd_retries: int = 5
    keepalive_interval: float = 20.0  # NAT keepalive from the side behind NAT
    heartbeat_interval: float = 0.0  # Cisco "Altiga keep-alive" notify; 0 = off
    rekey_margin: float = 0.1  # rekey phase 2 when this fraction of its lifetime is left


@dataclass
class ClientProfile:
    """The initiator's side (the VPN client)."""

    peer: str
    group: str
    psk: bytes
    username: str = ""
    password: str = ""
    mode: str = "aggressive"  # or "main"
    nat_traversal: bool = True  # "Enable Transparent Tunneling"
    force_natt: bool = False  # float to 4500 and encapsulate even without NAT
    # With transparent tunneling on, also ask for Cisco "IPsec over UDP"; used only if NAT-T is not negotiated.
    ipsec_over_udp: bool = True
    natt_vendor_ids: tuple[bytes, ...] = (VendorId.NATT_RFC3947, VendorId.NATT_DRAFT_02_N)
    phase1: tuple[Phase1Proposal, ...] = DEFAULT_PHASE1
    phase2: tuple[Phase2Proposal, ...] = DEFAULT_PHASE2
    # Quick Modes to run after Mode Config: remote networks; "self" means the peer's address.
    remote_networks: tuple[str, ...] = ("self", "0.0.0.0/0")
    app_version: str = "natt client 0.1"
    timers: Timers = field(default_factory=Timers)
    send_initial_contact: bool = True
    xauth_max_tries: int = 1


@dataclass
class GroupPolicy:
    name: str
    psk: bytes
    pool: str = "10.40.1.0/24"
    dns: tuple[str, ...] = ()
    nbns: tuple[str, ...] = ()
    domain: str = ""
    banner: str = ""
    split_networks: tuple[str, ...] = ()
    save_password: bool = False
    pfs: bool = False
    phase1: tuple[Phase1Proposal, ...] = DEFAULT_PHASE1
    phase2: tuple[Phase2Proposal, ...] = DEFAULT_PHASE2
    xauth: bool = True
    main_mode: bool = True
    # Cisco "IPsec over UDP": ESP in plain UDP on this port, announced in Mode Config to a client that asks
    # (vpnc --natt-mode cisco-udp). Used only when NAT-T was not negotiated: NAT-T is preferred.
    ipsec_over_udp: bool = False
    ipsec_over_udp_port: int = CISCO_UDP_PORT
    # Simultaneous logins of one user (the VPN 3000's per-group limit): how many sessions at once (0 = no limit),
    # and at the limit "refuse" the new login (an XAUTH failure that says why) or "replace" the oldest session
    # (a DELETE, with its reason, sent to it). Never a silent kick.
    max_logins: int = 1
    login_limit_action: str = "refuse"


@dataclass
class ConcentratorPolicy:
    """The responder's side (the VPN concentrator)."""

    address: str
    groups: dict[str, GroupPolicy]
    verify_user: Callable[[str, str], bool] = field(default=lambda u, p: False, repr=False)
    nat_traversal: bool = False  # "NAT Transparency": OFF by default, as on the real device
    phase1_lifetime: int = 86400
    phase2_lifetime: int = 28800
    session_limit: int = 100
    # Half-open IKE SAs (phase 1 not yet complete): past these a new first message is dropped before any DH work
    # (strongSwan's init_limit_half_open, Cisco's "call admission limit ike in-negotiation-sa").
    half_open_limit: int = 2000
    half_open_per_source: int = 50  # per source address: one host cannot take the whole budget
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)  # DH work per second (admission.py)
    xauth_max_tries: int = 3
    xauth_throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    modecfg_push: bool = False
    version: str = "natt concentrator 0.1"
    timers: Timers = field(default_factory=Timers)
