"""The PAT gateway's TOML file → PatSettings.

    [pat]
    table = "natt_pat"                 # the one nftables table (family ip) the daemon owns
    control_socket = "/run/natt/pat.sock"
    esp_passthrough = false            # true: forward plain ESP from the inside (one client at most)
    port_range = [1025, 65535]         # translated source ports; omit for the kernel's choice
    gateway = "203.0.113.1"            # default route via the outside; omit to leave routes alone
    poll_interval = 3                  # seconds between conntrack polls ("most used", counters)
    metrics_listen = "127.0.0.1:9102"  # Prometheus endpoint (GET /metrics); omit for none

    [inside]
    interface = "inside"
    address = "10.10.10.1/24"          # network = the hosts that are translated (or set network = "...")

    [outside]
    interface = "outside"
    address = "203.0.113.78/24"        # the one global address
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natt_daemons.common.config import (
    ALLOW_INSECURE_SECRETS,
    ConfigError,
    Document,
    ListenAddress,
    SecretAudit,
    interface_name,
    listen_address,
    optional,
    read_document,
    require,
    secret_audit,
    socket_path,
    strict_table,
    subtable,
    unicast_address,
)

DEFAULT_SOCKET = "/run/natt/pat.sock"
DEFAULT_TABLE = "natt_pat"
DEFAULT_POLL = 3.0
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
# The keys each table may hold: the one list a reader (and the unknown-key check) goes by. The PAT holds no
# secret; allow_insecure_secrets is accepted so that one line can go at the top of every natt file.
TOP_KEYS = frozenset({"pat", "inside", "outside", ALLOW_INSECURE_SECRETS})
PAT_KEYS = frozenset({"table", "control_socket", "esp_passthrough", "port_range", "gateway", "poll_interval",
                      "metrics_listen"})
INTERFACE_KEYS = frozenset({"interface", "address", "network"})
_IN_INTERFACE = {k: f"'{k}' belongs in [inside] or [outside]" for k in INTERFACE_KEYS}
_IN_PAT = {k: f"'{k}' belongs in [pat]" for k in PAT_KEYS}


@dataclass(frozen=True)
class Interface:
    name: str
    address: str  # the interface's own address, without prefix
    prefixlen: int
    network: str  # CIDR

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class PatSettings:
    path: Path
    table: str
    inside: Interface
    outside: Interface
    gateway: str | None
    esp_passthrough: bool
    port_range: tuple[int, int] | None
    control_socket: str
    poll_interval: float
    secrets: SecretAudit = field(default_factory=SecretAudit, repr=False)  # nothing to hold; here for uniformity
    metrics_listen: ListenAddress | None = None  # the Prometheus endpoint (read at start only); None: none

    @property
    def inside_network(self) -> str:
        return self.inside.network

    @property
    def outside_address(self) -> str:
        return self.outside.address


def _interface(doc: Document, key: str) -> Interface:
    t = strict_table(doc, (key,), subtable(doc, doc.data, (key,), required=True), INTERFACE_KEYS, hints=_IN_PAT)
    where = f"{doc.path} [{key}]"
    name = interface_name(require(t, "interface", str, where), where, "interface")
    text = require(t, "address", str, where)
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError as e:
        raise ConfigError(f"{where}: address {text!r} is not an IPv4 address with prefix, e.g. '10.10.10.1/24'") from e
    if "/" not in text:
        raise ConfigError(f"{where}: address {text!r} needs a prefix length, e.g. '{text}/24'")
    unicast_address(str(iface.ip), where, "address")
    net = iface.network
    if net.prefixlen <= 30 and iface.ip in (net.network_address, net.broadcast_address):
        what = "network" if iface.ip == net.network_address else "broadcast"
        raise ConfigError(f"{where}: address {text} is the {what} address of {net}, not a host's")
    network = str(net)
    if "network" in t:
        net_text = require(t, "network", str, where)
        try:
            network = str(ipaddress.IPv4Network(net_text, strict=False))
        except ValueError as e:
            raise ConfigError(f"{where}: network {net_text!r} is not an IPv4 network") from e
    return Interface(name=name, address=str(iface.ip), prefixlen=net.prefixlen, network=network)


def _port_range(p: dict[str, Any], where: str) -> tuple[int, int] | None:
    value = optional(p, "port_range", list, None, where)
    if value is None:
        return None
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: 'port_range' must be two integers, e.g. [1025, 65535]")
    lo, hi = value
    if not 1 <= lo <= hi <= 65535:
        raise ConfigError(f"{where}: 'port_range' [{lo}, {hi}] must satisfy 1 <= low <= high <= 65535")
    return lo, hi


def load(path: str | Path) -> PatSettings:
    doc = read_document(path)
    path = doc.path
    strict_table(doc, (), doc.data, TOP_KEYS, hints=_IN_PAT | _IN_INTERFACE)
    audit = secret_audit(doc)
    p = strict_table(doc, ("pat",), subtable(doc, doc.data, ("pat",), required=True), PAT_KEYS, hints=_IN_INTERFACE)
    where = f"{path} [pat]"
    table = optional(p, "table", str, DEFAULT_TABLE, where)
    if not _TABLE_RE.match(table):
        raise ConfigError(f"{where}: table {table!r}: letters, digits, '_' or '-', at most 64, "
                          "not starting with a digit or '-'")
    inside = _interface(doc, "inside")
    outside = _interface(doc, "outside")
    if inside.name == outside.name:
        raise ConfigError(f"{path}: [inside] and [outside] use the same interface {inside.name!r}")
    inside_net, outside_net = ipaddress.IPv4Network(inside.network), ipaddress.IPv4Network(outside.network)
    if inside_net.overlaps(outside_net):
        raise ConfigError(f"{path}: inside network {inside.network} overlaps outside network {outside.network}")
    if ipaddress.IPv4Address(outside.address) in inside_net:
        raise ConfigError(f"{path}: the outside address {outside.address} is inside the translated network "
                          f"{inside.network}")
    gateway = optional(p, "gateway", str, None, where)
    if gateway is not None:
        gw = unicast_address(gateway, where, "gateway")
        if gw not in outside_net:
            raise ConfigError(f"{where}: gateway {gateway} is not on the outside network {outside.network}")
        if str(gw) == outside.address:
            raise ConfigError(f"{where}: gateway {gateway} is the outside address itself")
        gateway = str(gw)
    poll = optional(p, "poll_interval", (int, float), DEFAULT_POLL, where)
    if isinstance(poll, bool) or not 0.2 <= poll <= 3600:
        raise ConfigError(f"{where}: 'poll_interval' must be between 0.2 and 3600 seconds")
    return PatSettings(
        path=path,
        table=table,
        inside=inside,
        outside=outside,
        gateway=gateway,
        esp_passthrough=optional(p, "esp_passthrough", bool, False, where),
        port_range=_port_range(p, where),
        control_socket=socket_path(optional(p, "control_socket", str, DEFAULT_SOCKET, where), where),
        poll_interval=float(poll),
        secrets=audit,
        metrics_listen=listen_address(p, "metrics_listen", where),
    )
