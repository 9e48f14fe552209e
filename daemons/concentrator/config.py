"""The concentrator's TOML file → a ConcentratorPolicy for the core and settings for the daemon."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natt.errors import UnsupportedAlgorithm
from natt.ike import suites
from natt.ike.config import ConcentratorPolicy, GroupPolicy, Timers
from natt.ike.throttle import ThrottleSettings
from natt.wire.constants import CISCO_UDP_PORT, NATT_PORT
from natt_daemons.common.config import ConfigError, load_toml, optional, read_secret, require
from natt_daemons.common.passwords import CachingVerifier, PasswordFormatError, dummy_hash, verify_unknown_user

DEFAULT_SOCKET = "/run/natt/concentrator.sock"


@dataclass
class ConcentratorSettings:
    path: Path
    address: str
    tun: str
    control_socket: str
    policy: ConcentratorPolicy
    users: dict[str, str] = field(repr=False, default_factory=dict)
    log_capacity: int = 10000
    log_secrets: bool = False
    log_severity: int = 5
    ike_port: int = 500
    natt_port: int = 4500
    tun_offload: bool = True


def _ip(value: str, where: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError as e:
        raise ConfigError(f"{where}: {value!r} is not an IPv4 address") from e


def _net(value: str, where: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=False))
    except ValueError as e:
        raise ConfigError(f"{where}: {value!r} is not an IPv4 network") from e


def _severity(value: int, where: str) -> int:
    if not 1 <= value <= 13:
        raise ConfigError(f"{where}: log_severity {value} must be 1..13 (the VPN 3000 scale; 5 keeps its default)")
    return value


def _udp_port(port: int, where: str) -> int:
    # 4001-49151 as on the VPN 3000; 500 and 4500 belong to IKE and NAT-T.
    if not 4001 <= port <= 49151 or port == NATT_PORT:
        raise ConfigError(f"{where}: ipsec_over_udp_port {port} must be in 4001..49151 and not {NATT_PORT}")
    return port


def _number(c: dict[str, Any], key: str, kind: type | tuple[type, ...], default: float, low: float, high: float,
            where: str) -> Any:
    value = optional(c, key, kind, default, where)
    if isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{where}: '{key}' must be a number in {low:g}..{high:g}, not {value!r}")
    return value


LOGIN_LIMIT_ACTIONS = ("refuse", "replace")


def _max_logins(t: dict[str, Any], where: str) -> int:
    """Simultaneous logins of one user in the group (the VPN 3000's "Simultaneous Logins"); 0 = no limit."""
    value = t.get("max_logins", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: 'max_logins' must be a whole number >= 0 (0 = no limit), not {value!r}")
    return value


def _login_limit_action(t: dict[str, Any], where: str) -> str:
    value = t.get("login_limit_action", "refuse")
    if value not in LOGIN_LIMIT_ACTIONS:
        raise ConfigError(f"{where}: 'login_limit_action' must be \"refuse\" (the new login is refused) or "
                          f"\"replace\" (the oldest session is ended, and told why), not {value!r}")
    return str(value)


def _throttle(c: dict[str, Any], where: str) -> ThrottleSettings:
    """Failed XAUTH logins: free failures, then a doubling wait, then a lockout (per user and per source)."""
    d = ThrottleSettings()
    real = (int, float)
    backoff = float(_number(c, "xauth_backoff", real, d.backoff_base, 0.1, 3600, where))
    backoff_max = float(_number(c, "xauth_backoff_max", real, d.backoff_max, 0.1, 86400, where))
    if backoff_max < backoff:
        raise ConfigError(f"{where}: 'xauth_backoff_max' ({backoff_max:g}) must not be below 'xauth_backoff' "
                          f"({backoff:g})")
    return ThrottleSettings(
        free_failures=_number(c, "xauth_free_failures", int, d.free_failures, 0, 1000, where),
        backoff_base=backoff,
        backoff_max=backoff_max,
        # 0: never lock out (backoff only); lockout_seconds 0: locked until 'natt-concentrator unlock'.
        lockout_failures=_number(c, "xauth_lockout_failures", int, d.lockout_failures, 0, 100_000, where),
        lockout_seconds=float(_number(c, "xauth_lockout_seconds", real, d.lockout_seconds, 0, 365 * 86400, where)),
    )


def _group(name: str, t: dict[str, Any], base: Path, p1_life: int, p2_life: int) -> GroupPolicy:
    where = f"[groups.{name}]"
    psk = read_secret(t, "psk", base, where, required=True)
    try:
        p1 = tuple(suites.phase1(s, p1_life) for s in optional(t, "phase1", list, ["aes256-sha256-modp2048"], where))
        p2 = tuple(suites.phase2(s, p2_life) for s in optional(t, "phase2", list,
                                                               ["aes128gcm16", "aes256-sha256", "aes256-sha1"], where))
    except UnsupportedAlgorithm as e:
        raise ConfigError(f"{where}: {e}") from e
    return GroupPolicy(
        name=name,
        psk=psk.encode(),
        pool=_net(optional(t, "pool", str, "10.40.1.0/24", where), f"{where} pool"),
        dns=tuple(_ip(a, f"{where} dns") for a in optional(t, "dns", list, [], where)),
        nbns=tuple(_ip(a, f"{where} nbns") for a in optional(t, "nbns", list, [], where)),
        domain=optional(t, "domain", str, "", where),
        banner=optional(t, "banner", str, "", where),
        split_networks=tuple(_net(n, f"{where} split_networks")
                             for n in optional(t, "split_networks", list, [], where)),
        save_password=optional(t, "save_password", bool, False, where),
        pfs=optional(t, "pfs", bool, False, where),
        phase1=p1,
        phase2=p2,
        xauth=optional(t, "xauth", bool, True, where),
        main_mode=optional(t, "main_mode", bool, True, where),
        ipsec_over_udp=optional(t, "ipsec_over_udp", bool, False, where),
        ipsec_over_udp_port=_udp_port(optional(t, "ipsec_over_udp_port", int, CISCO_UDP_PORT, where), where),
        max_logins=_max_logins(t, where),
        login_limit_action=_login_limit_action(t, where),
    )


def load(path: str | Path) -> ConcentratorSettings:
    path = Path(path)
    doc = load_toml(path)
    c = require(doc, "concentrator", dict, str(path))
    where = f"{path} [concentrator]"
    address = _ip(require(c, "address", str, where), where)
    p1_life = optional(c, "phase1_lifetime", int, 86400, where)
    p2_life = optional(c, "phase2_lifetime", int, 28800, where)
    groups_t = require(doc, "groups", dict, str(path))
    groups = {name: _group(name, t, path, p1_life, p2_life) for name, t in groups_t.items()}
    if not groups:
        raise ConfigError(f"{path}: at least one [groups.NAME] is required")
    users = optional(doc, "users", dict, {}, str(path))
    for u, h in users.items():
        if not isinstance(h, str) or not h.startswith("scrypt$"):
            raise ConfigError(f"{path} [users] {u}: store a hash written by 'natt-concentrator passwd', not a password")

    verifier = CachingVerifier()
    dummy_hash()  # made now, not on the first unknown user's login

    def verify(user: str, password: str) -> bool:
        """Slow on purpose (scrypt): the daemon calls it on a worker thread. An unknown user, or a stored hash
        that does not parse, costs one scrypt too, so that timing does not tell which users exist."""
        stored = users.get(user)
        if stored is None:
            return verify_unknown_user(password)
        try:
            return verifier.verify(user, stored, password)
        except PasswordFormatError:
            return verify_unknown_user(password)

    timers = Timers(
        keepalive_interval=float(optional(c, "keepalive_interval", (int, float), 20, where)),
        dpd_interval=float(optional(c, "dpd_interval", (int, float), 30, where)),
        # Phase 2 soft lifetime: the concentrator rekeys a child SA when half this fraction of its lifetime is
        # left (a client rekeys at the whole fraction, so one that does goes first).
        rekey_margin=float(_number(c, "rekey_margin", (int, float), Timers.rekey_margin, 0, 0.5, where)),
    )
    policy = ConcentratorPolicy(
        address=address,
        groups=groups,
        verify_user=verify,
        nat_traversal=optional(c, "nat_traversal", bool, False, where),
        phase1_lifetime=p1_life,
        phase2_lifetime=p2_life,
        session_limit=optional(c, "session_limit", int, 100, where),
        half_open_limit=_number(c, "half_open_limit", int, ConcentratorPolicy.half_open_limit, 1, 1_000_000, where),
        half_open_per_source=_number(c, "half_open_per_source", int, ConcentratorPolicy.half_open_per_source, 1,
                                     1_000_000, where),
        xauth_max_tries=optional(c, "xauth_max_tries", int, 3, where),
        xauth_throttle=_throttle(c, where),
        modecfg_push=optional(c, "modecfg", str, "pull", where) == "push",
        version=optional(c, "version", str, "natt concentrator 0.1", where),
        timers=timers,
    )
    return ConcentratorSettings(
        path=path,
        address=address,
        tun=optional(c, "tun", str, "natt0", where),
        tun_offload=optional(c, "tun_offload", bool, True, where),
        control_socket=optional(c, "control_socket", str, DEFAULT_SOCKET, where),
        policy=policy,
        users=dict(users),
        log_capacity=optional(c, "log_capacity", int, 10000, where),
        log_secrets=optional(c, "log_secrets", bool, False, where),
        log_severity=_severity(optional(c, "log_severity", int, 5, where), where),
    )
