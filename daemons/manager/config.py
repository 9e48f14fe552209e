"""The manager's TOML file (/etc/natt/manager.toml), read as strictly as the daemons' own.

[manager] says where it listens (one address and port: nothing else is bound), which certificate it serves (or
where the self-signed one made at first start is kept), which concentrator it manages and how long an
administrator's login lasts. [admins] maps each login to an scrypt hash written by `natt-manager passwd`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natt_daemons.common.config import (
    ALLOW_INSECURE_SECRETS,
    ConfigError,
    Document,
    SecretAudit,
    number,
    optional,
    read_document,
    require,
    secret_audit,
    socket_path,
    strict_table,
    subtable,
)
from natt_daemons.common.passwords import PasswordFormatError, verify_password

DEFAULT_CONFIG = "/etc/natt/manager.toml"
DEFAULT_STATE_DIR = "/var/lib/natt-manager"
DEFAULT_PORT = 8443  # not 443: the unit holds no CAP_NET_BIND_SERVICE

TOP_KEYS = frozenset({"manager", "admins", ALLOW_INSECURE_SECRETS})
MANAGER_KEYS = frozenset({
    "address", "port", "tls_cert", "tls_key", "state_dir", "control_socket", "session_lifetime", "idle_timeout",
    "login_free_failures", "login_backoff", "login_backoff_max", "log_entries",
})
_IN_MANAGER = {k: f"'{k}' belongs in [manager]" for k in MANAGER_KEYS}
_LOGIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


@dataclass(frozen=True)
class Throttle:
    """Failed manager logins: `free` failures per source and per login, then a wait that doubles from `backoff`
    up to `backoff_max` seconds before the next attempt is even checked."""

    free: int = 3
    backoff: float = 1.0
    backoff_max: float = 300.0


@dataclass
class ManagerSettings:
    path: Path
    address: str
    port: int
    control_socket: str
    state_dir: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_lifetime: float = 8 * 3600.0  # a login ends this long after it began, whatever it does
    idle_timeout: float = 1800.0  # ... or after this long without a page or an action (polls do not count)
    throttle: Throttle = field(default_factory=Throttle)
    log_entries: int = 1000  # event log lines a page shows at most (the newest)
    admins: dict[str, str] = field(default_factory=dict, repr=False)
    secrets: SecretAudit = field(default_factory=SecretAudit, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}/"

    def verify(self, login: str, password: str) -> bool:
        """Slow on purpose (scrypt); an unknown login costs the same, so timing does not tell who exists."""
        from natt_daemons.common.passwords import verify_unknown_user

        stored = self.admins.get(login)
        if stored is None:
            return verify_unknown_user(password)
        try:
            return verify_password(stored, password)
        except PasswordFormatError:
            return verify_unknown_user(password)


def valid_login(login: str) -> bool:
    return 0 < len(login) <= 64 and set(login) <= _LOGIN_CHARS


def _listen_address(value: str, where: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError as e:
        raise ConfigError(f"{where}: address {value!r} is not an IP address (the manager listens on exactly the "
                          "address given; name the private side's, e.g. 192.168.2.251)") from e
    if addr.is_multicast:
        raise ConfigError(f"{where}: address {value} is a multicast address")
    return str(addr)


def _path(t: dict[str, Any], key: str, base: Path, where: str) -> Path | None:
    value = optional(t, key, str, None, where)
    if value is None:
        return None
    if not value:
        raise ConfigError(f"{where}: '{key}' must be a file name")
    return base.parent / value


def _admins(doc: Document, audit: SecretAudit) -> dict[str, str]:
    admins = subtable(doc, doc.data, ("admins",), required=True)
    if not admins:
        raise ConfigError(f"{doc.path}: [admins] is empty: add one with 'natt-manager passwd LOGIN'")
    for login, stored in admins.items():
        if not valid_login(login):
            raise ConfigError(f"{doc.at(['admins', login])}: admin login {login!r} must be 1-64 of letters, digits "
                              "and . _ - @")
        if not isinstance(stored, str) or not stored.startswith("scrypt$"):
            raise ConfigError(f"{doc.at(['admins', login])}: [admins] {login}: store a hash written by "
                              "'natt-manager passwd', not a password")
    audit.note(doc.path, "the admins' password hashes")
    return dict(admins)


def load(path: str | Path) -> ManagerSettings:
    doc = read_document(path)
    strict_table(doc, (), doc.data, TOP_KEYS, hints=_IN_MANAGER)
    audit = secret_audit(doc)
    m = strict_table(doc, ("manager",), subtable(doc, doc.data, ("manager",), required=True), MANAGER_KEYS)
    where = f"{doc.path} [manager]"
    cert, key = _path(m, "tls_cert", doc.path, where), _path(m, "tls_key", doc.path, where)
    if (cert is None) != (key is None):
        raise ConfigError(f"{where}: set both 'tls_cert' and 'tls_key' (or neither, for a self-signed "
                          "certificate made at first start)")
    real = (int, float)
    lifetime = float(number(m, "session_lifetime", real, 8 * 3600, 60, 7 * 86400, where))
    idle = float(number(m, "idle_timeout", real, 1800, 30, 7 * 86400, where))
    if idle > lifetime:
        raise ConfigError(f"{where}: 'idle_timeout' ({idle:g}) must not be above 'session_lifetime' ({lifetime:g})")
    backoff = float(number(m, "login_backoff", real, Throttle.backoff, 0.1, 3600, where))
    backoff_max = float(number(m, "login_backoff_max", real, Throttle.backoff_max, 0.1, 86400, where))
    if backoff_max < backoff:
        raise ConfigError(f"{where}: 'login_backoff_max' ({backoff_max:g}) must not be below 'login_backoff' "
                          f"({backoff:g})")
    settings = ManagerSettings(
        path=doc.path,
        address=_listen_address(require(m, "address", str, where), where),
        port=number(m, "port", int, DEFAULT_PORT, 1, 65535, where, zero_means="any free port, for tests"),
        control_socket=socket_path(optional(m, "control_socket", str, "/run/natt/concentrator.sock", where), where),
        state_dir=Path(optional(m, "state_dir", str, DEFAULT_STATE_DIR, where)),
        tls_cert=cert,
        tls_key=key,
        session_lifetime=lifetime,
        idle_timeout=idle,
        throttle=Throttle(number(m, "login_free_failures", int, Throttle.free, 0, 1000, where), backoff, backoff_max),
        log_entries=number(m, "log_entries", int, 1000, 10, 100_000, where),
        admins=_admins(doc, audit),
        secrets=audit,
    )
    if key is not None:
        audit.note(key, "the TLS private key")
    return settings
