"""The concentrator's TOML file → a ConcentratorPolicy for the core and settings for the daemon."""

from __future__ import annotations

import grp
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natt.errors import UnsupportedAlgorithm
from natt.ike import suites
from natt.ike.admission import AdmissionSettings
from natt.ike.config import ConcentratorPolicy, GroupPolicy, Timers
from natt.ike.throttle import ThrottleSettings
from natt.wire.constants import CISCO_UDP_PORT, NATT_PORT
from natt_daemons.common.config import (
    ALLOW_INSECURE_SECRETS,
    ConfigError,
    Document,
    ListenAddress,
    SecretAudit,
    host_network,
    interface_name,
    listen_address,
    network,
    number,
    optional,
    read_document,
    read_secret,
    require,
    secret_audit,
    socket_path,
    strict_table,
    subtable,
    table_label,
    unicast_address,
)
from natt_daemons.common.control import SocketAccess
from natt_daemons.common.passwords import CachingVerifier, PasswordFormatError, dummy_hash, verify_unknown_user

DEFAULT_SOCKET = "/run/natt/concentrator.sock"


def _admission(c: dict[str, Any], where: str) -> AdmissionSettings:
    """Call admission: new phase 1 negotiations (each a DH) per second, in all and per source address."""
    d = AdmissionSettings()
    rate = float(number(c, "half_open_rate", (int, float), d.rate, 1, 100_000, where))
    per_source = float(number(c, "half_open_per_source_rate", (int, float), d.per_source_rate, 0.1, 100_000, where))
    return AdmissionSettings(rate=rate, burst=max(1, int(rate / 10)), per_source_rate=per_source,
                             per_source_burst=max(1, int(per_source * 2)), newcomer_rate=max(1.0, rate / 4))

# The keys each table may hold: the one list a reader (and the unknown-key check) goes by. [users] maps user names
# to hashes, so any name is a key there.
TOP_KEYS = frozenset({"concentrator", "groups", "users", ALLOW_INSECURE_SECRETS})
CONCENTRATOR_KEYS = frozenset({
    "address", "nat_traversal", "tun", "tun_offload", "control_socket", "session_limit", "half_open_limit",
    "half_open_per_source", "half_open_rate", "half_open_per_source_rate", "log_rate_limit", "keepalive_interval",
    "dpd_interval", "phase1_lifetime", "phase2_lifetime", "rekey_margin",
    "xauth_max_tries", "xauth_free_failures", "xauth_backoff", "xauth_backoff_max", "xauth_lockout_failures",
    "xauth_lockout_seconds", "modecfg", "version", "log_capacity", "log_secrets", "log_severity",
    "control_group", "control_admin_group",
    "metrics_listen",
})
GROUP_KEYS = frozenset({
    "psk", "psk_file", "pool", "dns", "nbns", "domain", "banner", "split_networks", "save_password", "pfs", "phase1",
    "phase2", "xauth", "main_mode", "ipsec_over_udp", "ipsec_over_udp_port", "max_logins", "login_limit_action",
})
# A key written in the wrong table is told where it belongs.
_IN_GROUP = {k: f"'{k}' belongs in a [groups.NAME] table" for k in GROUP_KEYS}
_IN_CONCENTRATOR = {k: f"'{k}' belongs in [concentrator]" for k in CONCENTRATOR_KEYS}
MODECFG = ("pull", "push")
# Lifetimes (seconds): below these a rekey cannot be counted on (the client's bounds); above 24 h peers refuse.
LIFETIME_BOUNDS = {"phase1_lifetime": (60, 86400), "phase2_lifetime": (30, 86400)}


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
    log_rate_limit: float = 20.0  # event-log entries a second per event (class/id); 0 = no limit
    ike_port: int = 500
    natt_port: int = 4500
    tun_offload: bool = True
    # Files holding a psk that others can read: `secrets.enforce()` refuses them (run, check, and should on reload).
    secrets: SecretAudit = field(default_factory=SecretAudit, repr=False)
    # control_group / control_admin_group, resolved to gids (None: the socket stays 0600, admin is root only).
    control_access: SocketAccess = field(default_factory=SocketAccess)
    control_groups: dict[str, str] = field(default_factory=dict)  # key → the group name as written
    metrics_listen: ListenAddress | None = None  # the Prometheus endpoint (read at start only); None: none


def _system_group(c: dict[str, Any], key: str, where: str) -> tuple[str, int] | None:
    """A group of this system named by the config (its name and gid), or None when the key is absent."""
    name = optional(c, key, str, "", where)
    if not name:
        return None
    try:
        return name, grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"{where}: {key} {name!r}: no such group on this system (create it, e.g. "
                          f"'groupadd --system {name}', or remove the key)") from None


def _control_access(c: dict[str, Any], where: str) -> tuple[SocketAccess, dict[str, str]]:
    """Who may use the control socket: members of control_group connect (view commands), holders of
    control_admin_group also run admin commands; without them the socket is root-only (0600)."""
    group = _system_group(c, "control_group", where)
    admin = _system_group(c, "control_admin_group", where)
    names = {k: v[0] for k, v in (("control_group", group), ("control_admin_group", admin)) if v is not None}
    # An admin group alone: its members must reach the socket, so it is the socket's group too.
    socket_group = group or admin
    return SocketAccess(group=socket_group[1] if socket_group else None,
                        admin_group=admin[1] if admin else None), names


def _severity(value: int, where: str) -> int:
    if isinstance(value, bool) or not 1 <= value <= 13:
        raise ConfigError(f"{where}: log_severity {value} must be 1..13 (the VPN 3000 scale; 5 keeps its default)")
    return value


def _udp_port(port: int, where: str) -> int:
    # 4001-49151 as on the VPN 3000; 500 and 4500 belong to IKE and NAT-T.
    if isinstance(port, bool) or not 4001 <= port <= 49151 or port == NATT_PORT:
        raise ConfigError(f"{where}: ipsec_over_udp_port {port} must be in 4001..49151 and not {NATT_PORT}")
    return port


def _strings(t: dict[str, Any], key: str, default: list[str], where: str) -> list[str]:
    value = optional(t, key, list, default, where)
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: '{key}' must be a list of strings, not {value!r}")
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
    backoff = float(number(c, "xauth_backoff", real, d.backoff_base, 0.1, 3600, where))
    backoff_max = float(number(c, "xauth_backoff_max", real, d.backoff_max, 0.1, 86400, where))
    if backoff_max < backoff:
        raise ConfigError(f"{where}: 'xauth_backoff_max' ({backoff_max:g}) must not be below 'xauth_backoff' "
                          f"({backoff:g})")
    return ThrottleSettings(
        free_failures=number(c, "xauth_free_failures", int, d.free_failures, 0, 1000, where),
        backoff_base=backoff,
        backoff_max=backoff_max,
        # 0: never lock out (backoff only); lockout_seconds 0: locked until 'natt-concentrator unlock'.
        lockout_failures=number(c, "xauth_lockout_failures", int, d.lockout_failures, 0, 100_000, where),
        lockout_seconds=float(number(c, "xauth_lockout_seconds", real, d.lockout_seconds, 0, 365 * 86400, where)),
    )


def _group(doc: Document, name: str, raw: dict[str, Any], p1_life: int, p2_life: int,
           audit: SecretAudit) -> GroupPolicy:
    keys = ("groups", name)
    t = strict_table(doc, keys, raw, GROUP_KEYS, hints=_IN_CONCENTRATOR)
    where = f"{doc.path} {table_label(keys)}"
    psk = read_secret(t, "psk", doc.path, where, required=True, audit=audit, label=table_label(keys))
    try:
        p1 = tuple(suites.phase1(s, p1_life) for s in _strings(t, "phase1", ["aes256-sha256-modp2048"], where))
        p2 = tuple(suites.phase2(s, p2_life) for s in _strings(t, "phase2",
                                                               ["aes128gcm16", "aes256-sha256", "aes256-sha1"], where))
    except UnsupportedAlgorithm as e:
        raise ConfigError(f"{where}: {e}") from e
    return GroupPolicy(
        name=name,
        psk=psk.encode(),
        pool=str(host_network(optional(t, "pool", str, "10.40.1.0/24", where), where, "pool")),
        dns=tuple(str(unicast_address(a, where, "dns")) for a in _strings(t, "dns", [], where)),
        nbns=tuple(str(unicast_address(a, where, "nbns")) for a in _strings(t, "nbns", [], where)),
        domain=optional(t, "domain", str, "", where),
        banner=optional(t, "banner", str, "", where),
        split_networks=tuple(str(network(n, where, "split_networks"))
                             for n in _strings(t, "split_networks", [], where)),
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


def check_addresses(path: Path, address: str, groups: dict[str, GroupPolicy]) -> None:
    """The pools hand out addresses no one else has: not the concentrator's own, not another group's, not a DNS or
    WINS server's; and no split network sends the clients' own IKE and ESP back into their tunnel."""
    own = ipaddress.IPv4Address(address)
    pools = {name: ipaddress.IPv4Network(g.pool) for name, g in groups.items()}
    for name, pool in pools.items():
        where = f"{path} [groups.{name}]"
        if own in pool:
            raise ConfigError(f"{where}: pool {pool} contains the concentrator's own address {own}")
    names = list(pools)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if pools[a].overlaps(pools[b]):
                raise ConfigError(f"{path}: the pools of [groups.{a}] ({pools[a]}) and [groups.{b}] ({pools[b]}) "
                                  "overlap: one address could be given to two clients")
    for name, g in groups.items():
        where = f"{path} [groups.{name}]"
        for key, servers in (("dns", g.dns), ("nbns", g.nbns)):
            for server in servers:
                holder = next((p for p, pool in pools.items() if ipaddress.IPv4Address(server) in pool), None)
                if holder is not None:
                    raise ConfigError(f"{where}: {key} server {server} is inside [groups.{holder}] pool "
                                      f"{pools[holder]}: it would be given to a client")
        for net in g.split_networks:
            if own in ipaddress.IPv4Network(net):
                raise ConfigError(f"{where}: split_networks {net} contains the concentrator's address {own}: the "
                                  "clients would send their IKE and ESP into the tunnel itself")


def _users(doc: Document) -> dict[str, str]:
    users = optional(doc.data, "users", dict, {}, str(doc.path))
    for u, h in users.items():
        if not isinstance(h, str) or not h.startswith("scrypt$"):
            raise ConfigError(f"{doc.at(['users', u])}: [users] {u}: store a hash written by "
                              "'natt-concentrator passwd', not a password")
    return users


def load(path: str | Path) -> ConcentratorSettings:
    doc = read_document(path)
    path = doc.path
    strict_table(doc, (), doc.data, TOP_KEYS, hints=_IN_CONCENTRATOR | _IN_GROUP)
    audit = secret_audit(doc)
    c = strict_table(doc, ("concentrator",), subtable(doc, doc.data, ("concentrator",), required=True),
                     CONCENTRATOR_KEYS, hints=_IN_GROUP)
    where = f"{path} [concentrator]"
    address = str(unicast_address(require(c, "address", str, where), where, "address"))
    p1_life = number(c, "phase1_lifetime", int, 86400, *LIFETIME_BOUNDS["phase1_lifetime"], where)
    p2_life = number(c, "phase2_lifetime", int, 28800, *LIFETIME_BOUNDS["phase2_lifetime"], where)
    groups_t = subtable(doc, doc.data, ("groups",), required=True)
    groups = {name: _group(doc, name, subtable(doc, groups_t, ("groups", name), required=True), p1_life, p2_life,
                           audit)
              for name in groups_t}
    if not groups:
        raise ConfigError(f"{path}: at least one [groups.NAME] is required")
    check_addresses(path, address, groups)
    users = _users(doc)

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

    real = (int, float)
    timers = Timers(
        keepalive_interval=float(number(c, "keepalive_interval", real, 20, 1, 3600, where, zero_means="off")),
        dpd_interval=float(number(c, "dpd_interval", real, 30, 1, 86400, where, zero_means="off")),
        # Phase 2 soft lifetime: the concentrator rekeys a child SA when half this fraction of its lifetime is
        # left (a client rekeys at the whole fraction, so one that does goes first).
        rekey_margin=float(number(c, "rekey_margin", real, Timers.rekey_margin, 0, 0.5, where)),
    )
    access, group_names = _control_access(c, where)
    modecfg = optional(c, "modecfg", str, "pull", where)
    if modecfg not in MODECFG:
        raise ConfigError(f"{where}: modecfg {modecfg!r} must be \"pull\" (the client asks) or \"push\" "
                          "(Mode Config SET/ACK)")
    policy = ConcentratorPolicy(
        address=address,
        groups=groups,
        verify_user=verify,
        nat_traversal=optional(c, "nat_traversal", bool, False, where),
        phase1_lifetime=p1_life,
        phase2_lifetime=p2_life,
        session_limit=number(c, "session_limit", int, 100, 1, 1_000_000, where),
        half_open_limit=number(c, "half_open_limit", int, ConcentratorPolicy.half_open_limit, 1, 1_000_000, where),
        half_open_per_source=number(c, "half_open_per_source", int, ConcentratorPolicy.half_open_per_source, 1,
                                    1_000_000, where),
        admission=_admission(c, where),
        xauth_max_tries=number(c, "xauth_max_tries", int, 3, 1, 100, where),
        xauth_throttle=_throttle(c, where),
        modecfg_push=modecfg == "push",
        version=optional(c, "version", str, "natt concentrator 0.1", where),
        timers=timers,
    )
    return ConcentratorSettings(
        path=path,
        address=address,
        tun=interface_name(optional(c, "tun", str, "natt0", where), where, "tun"),
        tun_offload=optional(c, "tun_offload", bool, True, where),
        control_socket=socket_path(optional(c, "control_socket", str, DEFAULT_SOCKET, where), where),
        policy=policy,
        users=dict(users),
        log_capacity=number(c, "log_capacity", int, 10000, 1, 10_000_000, where),
        log_secrets=optional(c, "log_secrets", bool, False, where),
        log_severity=_severity(optional(c, "log_severity", int, 5, where), where),
        log_rate_limit=float(number(c, "log_rate_limit", (int, float), 20, 0, 1_000_000, where, zero_means="off")),
        secrets=audit,
        control_access=access,
        control_groups=group_names,
        metrics_listen=listen_address(c, "metrics_listen", where),
    )
