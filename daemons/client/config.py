"""The client's profile (TOML) → a ClientProfile for the core and settings for the daemon."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natt.errors import UnsupportedAlgorithm
from natt.ike import suites
from natt.ike.config import ClientProfile, Timers
from natt.ike.natd import NATT_VERSIONS
from natt_daemons.common.config import (
    ALLOW_INSECURE_SECRETS,
    ConfigError,
    ListenAddress,
    SecretAudit,
    interface_name,
    listen_address,
    number,
    optional,
    read_document,
    read_secret,
    require,
    secret_audit,
    socket_path,
    strict_table,
    subtable,
    unicast_address,
)

# The keys each table may hold: the one list a reader (and the unknown-key check) goes by.
TOP_KEYS = frozenset({"client", ALLOW_INSECURE_SECRETS})
CLIENT_KEYS = frozenset({
    "name", "concentrator", "group", "psk", "psk_file", "username", "password", "password_file", "mode",
    "transparent_tunneling", "force_natt", "ipsec_over_udp", "natt_versions", "phase1", "phase2", "phase1_lifetime",
    "phase2_lifetime", "rekey_margin", "keepalive_interval", "dpd_interval", "heartbeat_interval", "app_version",
    "ike_port", "tun", "tun_offload", "control_socket", "fail_closed", "reconnect", "autoconnect", "log_capacity",
    "log_secrets", "metrics_listen",
})
# Names from the concentrator's file, or from other clients, that mean something else here.
_HINTS = {
    "nat_traversal": "the client offers NAT-T with 'transparent_tunneling'",
    "peer": "the concentrator's address goes in 'concentrator'",
    "address": "the concentrator's address goes in 'concentrator'",
    "gateway": "the concentrator's address goes in 'concentrator'",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


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
    # Files holding the psk or password that others can read: `secrets.enforce()` refuses them.
    secrets: SecretAudit = field(default_factory=SecretAudit, repr=False)
    metrics_listen: ListenAddress | None = None  # the Prometheus endpoint (read at start only); None: none


def _port(value: int, where: str) -> int:
    if isinstance(value, bool) or not 0 <= value <= 65535:
        raise ConfigError(f"{where}: ike_port {value} is not a UDP port (0 = any free port)")
    return value


def _natt_versions(names: list[Any], where: str) -> tuple[bytes, ...]:
    unknown = [n for n in names if not isinstance(n, str) or n not in NATT_VERSIONS]
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


def _strings(c: dict[str, Any], key: str, default: list[str], where: str) -> list[str]:
    value = optional(c, key, list, default, where)
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: '{key}' must be a list of strings, not {value!r}")
    return value


def load(path: str | Path, password: str | None = None) -> ClientSettings:
    """The profile at `path`; `password` (typed, or read from stdin) replaces the file's."""
    doc = read_document(path)
    path = doc.path
    strict_table(doc, (), doc.data, TOP_KEYS, hints=_HINTS)
    audit = secret_audit(doc)
    c = strict_table(doc, ("client",), subtable(doc, doc.data, ("client",), required=True), CLIENT_KEYS,
                     hints=_HINTS)
    where = f"{path} [client]"
    peer = str(unicast_address(require(c, "concentrator", str, where), where, "concentrator"))
    psk = read_secret(c, "psk", path, where, required=True, audit=audit)
    from_file = read_secret(c, "password", path, where, required=False, audit=audit)
    if password is None:
        password = from_file
    mode = optional(c, "mode", str, "aggressive", where)
    if mode not in ("aggressive", "main"):
        raise ConfigError(f"{where}: mode must be 'aggressive' or 'main'")
    p1_life = _lifetime(optional(c, "phase1_lifetime", int, 86400, where), "phase1_lifetime", where)
    p2_life = _lifetime(optional(c, "phase2_lifetime", int, 28800, where), "phase2_lifetime", where)
    try:
        p1 = tuple(suites.phase1(s, p1_life)
                   for s in _strings(c, "phase1", ["aes256-sha256-modp2048"], where))
        p2 = tuple(suites.phase2(s, p2_life)
                   for s in _strings(c, "phase2", ["aes128gcm16", "aes256-sha256", "aes256-sha1"], where))
    except UnsupportedAlgorithm as e:
        raise ConfigError(f"{where}: {e}") from e
    real = (int, float)
    timers = Timers(
        keepalive_interval=float(number(c, "keepalive_interval", real, 20, 1, 3600, where, zero_means="off")),
        dpd_interval=float(number(c, "dpd_interval", real, 30, 1, 86400, where, zero_means="off")),
        heartbeat_interval=float(number(c, "heartbeat_interval", real, 0, 1, 3600, where, zero_means="off")),
        rekey_margin=_rekey_margin(c.get("rekey_margin", Timers.rekey_margin), where),
    )
    name = optional(c, "name", str, path.stem, where)
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name {name!r}: letters, digits, '_', '.', '@' or '-', at most 64, starting "
                          "with a letter or digit (it names the control socket and the unit)")
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
        tun=interface_name(optional(c, "tun", str, "natt-vpn0", where), where, "tun"),
        tun_offload=optional(c, "tun_offload", bool, True, where),
        fail_closed=optional(c, "fail_closed", bool, True, where),
        control_socket=socket_path(optional(c, "control_socket", str, f"/run/natt/client-{name}.sock", where), where),
        autoconnect=optional(c, "autoconnect", bool, True, where),
        reconnect=optional(c, "reconnect", bool, True, where),
        ike_port=_port(optional(c, "ike_port", int, 500, where), where),
        log_capacity=number(c, "log_capacity", int, 5000, 1, 10_000_000, where),
        log_secrets=optional(c, "log_secrets", bool, False, where),
        secrets=audit,
        metrics_listen=listen_address(c, "metrics_listen", where),
    )
