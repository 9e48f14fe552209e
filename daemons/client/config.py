"""The client's profile (TOML) → a ClientProfile for the core and settings for the daemon."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from natt.errors import UnsupportedAlgorithm
from natt.ike import suites
from natt.ike.config import ClientProfile, Timers
from natt.ike.natd import NATT_VERSIONS
from natt_daemons.common.config import ConfigError, load_toml, optional, read_secret, require


@dataclass
class ClientSettings:
    path: Path
    name: str
    profile: ClientProfile
    tun: str
    control_socket: str
    autoconnect: bool
    reconnect: bool
    ike_port: int = 500
    log_capacity: int = 5000
    log_secrets: bool = False
    tun_offload: bool = True
    # While the tunnel is down or being re-made, its routes stay on the TUN and traffic for it is dropped there (never
    # sent in the clear). False: the routes go while it is down (split-tunnel users who prefer connectivity).
    fail_closed: bool = True


def _port(value: int, where: str) -> int:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{where}: ike_port {value} is not a UDP port (0 = any free port)")
    return value


def _natt_versions(names: list[str], where: str) -> tuple[bytes, ...]:
    unknown = [n for n in names if n not in NATT_VERSIONS]
    if unknown or not names:
        raise ConfigError(f"{where}: natt_versions {names!r}: choose from {', '.join(NATT_VERSIONS)}")
    return tuple(NATT_VERSIONS[n] for n in names)


# Lifetimes (seconds). Phase 1 re-authenticates (phase 1, XAUTH, Mode Config and its Quick Modes) in the last tenth
# of its lifetime, at least some seconds before expiry: below a minute that cannot be relied on. A phase 2 rekey is
# one Quick Mode (a round trip): 30 s still leaves it seconds (short lifetimes are for tests; peers use hours).
# Above 24 h is beyond what peers accept.
LIFETIME_BOUNDS = {"phase1_lifetime": (60, 86400), "phase2_lifetime": (30, 86400)}
MAX_REKEY_MARGIN = 0.5


def _lifetime(value: int, key: str, where: str) -> int:
    low, high = LIFETIME_BOUNDS[key]
    if isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{where}: {key} {value} is outside {low}..{high} seconds")
    return value


def _rekey_margin(value: object, where: str) -> float:
    """The fraction of a lifetime left when this client rekeys phase 2 and re-authenticates phase 1 (less a random
    fuzz of up to half as much again); 0 = never (SAs simply expire, as vpnc's do)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: 'rekey_margin' must be a number (a fraction of the lifetime, "
                          f"0..{MAX_REKEY_MARGIN}), not {type(value).__name__}")
    if not 0 <= value <= MAX_REKEY_MARGIN:
        raise ConfigError(f"{where}: rekey_margin {value} is outside 0..{MAX_REKEY_MARGIN} (a fraction of the "
                          "lifetime: 0.1 rekeys when a tenth is left; 0 never rekeys)")
    return float(value)


def load(path: str | Path, password: str | None = None) -> ClientSettings:
    path = Path(path)
    doc = load_toml(path)
    c = require(doc, "client", dict, str(path))
    where = f"{path} [client]"
    peer = require(c, "concentrator", str, where)
    try:
        ipaddress.IPv4Address(peer)
    except ValueError as e:
        raise ConfigError(f"{where}: concentrator {peer!r} is not an IPv4 address") from e
    psk = read_secret(c, "psk", path, where, required=True)
    if password is None:
        password = read_secret(c, "password", path, where, required=False)
    mode = optional(c, "mode", str, "aggressive", where)
    if mode not in ("aggressive", "main"):
        raise ConfigError(f"{where}: mode must be 'aggressive' or 'main'")
    p1_life = _lifetime(optional(c, "phase1_lifetime", int, 86400, where), "phase1_lifetime", where)
    p2_life = _lifetime(optional(c, "phase2_lifetime", int, 28800, where), "phase2_lifetime", where)
    try:
        p1 = tuple(suites.phase1(s, p1_life)
                   for s in optional(c, "phase1", list, ["aes256-sha256-modp2048"], where))
        p2 = tuple(suites.phase2(s, p2_life)
                   for s in optional(c, "phase2", list, ["aes128gcm16", "aes256-sha256", "aes256-sha1"], where))
    except UnsupportedAlgorithm as e:
        raise ConfigError(f"{where}: {e}") from e
    timers = Timers(
        keepalive_interval=float(optional(c, "keepalive_interval", (int, float), 20, where)),
        dpd_interval=float(optional(c, "dpd_interval", (int, float), 30, where)),
        heartbeat_interval=float(optional(c, "heartbeat_interval", (int, float), 0, where)),
        rekey_margin=_rekey_margin(c.get("rekey_margin", Timers.rekey_margin), where),
    )
    name = optional(c, "name", str, path.stem, where)
    profile = ClientProfile(
        peer=peer,
        group=require(c, "group", str, where),
        psk=psk.encode(),
        username=optional(c, "username", str, "", where),
        password=password,
        mode=mode,
        nat_traversal=optional(c, "transparent_tunneling", bool, True, where),
        force_natt=optional(c, "force_natt", bool, False, where),
        ipsec_over_udp=optional(c, "ipsec_over_udp", bool, True, where),
        natt_vendor_ids=_natt_versions(optional(c, "natt_versions", list, ["rfc3947", "draft-02n"], where), where),
        phase1=p1,
        phase2=p2,
        app_version=optional(c, "app_version", str, "natt client 0.1", where),
        timers=timers,
    )
    return ClientSettings(
        path=path,
        name=name,
        profile=profile,
        tun=optional(c, "tun", str, "natt-vpn0", where),
        tun_offload=optional(c, "tun_offload", bool, True, where),
        fail_closed=optional(c, "fail_closed", bool, True, where),
        control_socket=optional(c, "control_socket", str, f"/run/natt/client-{name}.sock", where),
        autoconnect=optional(c, "autoconnect", bool, True, where),
        reconnect=optional(c, "reconnect", bool, True, where),
        ike_port=_port(optional(c, "ike_port", int, 500, where), where),
        log_capacity=optional(c, "log_capacity", int, 5000, where),
        log_secrets=optional(c, "log_secrets", bool, False, where),
    )
