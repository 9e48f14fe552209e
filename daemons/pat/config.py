"""The PAT gateway's TOML file → PatSettings.

    [pat]
    table = "natt_pat"                 # the one nftables table (family ip) the daemon owns
    control_socket = "/run/natt/pat.sock"
    esp_passthrough = false            # true: forward plain ESP from the inside (one client at most)
    port_range = [1025, 65535]         # translated source ports; omit for the kernel's choice
    gateway = "203.0.113.1"            # default route via the outside; omit to leave routes alone
    poll_interval = 3                  # seconds between conntrack polls ("most used", counters)

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natt_daemons.common.config import ConfigError, load_toml, optional, require

DEFAULT_SOCKET = "/run/natt/pat.sock"
DEFAULT_TABLE = "natt_pat"
DEFAULT_POLL = 3.0
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_IFNAME_RE = re.compile(r"^[^\s/:]{1,15}$")


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

    @property
    def inside_network(self) -> str:
        return self.inside.network

    @property
    def outside_address(self) -> str:
        return self.outside.address


def _interface(doc: dict[str, Any], key: str, path: Path) -> Interface:
    t = require(doc, key, dict, str(path))
    where = f"{path} [{key}]"
    name = require(t, "interface", str, where)
    if not _IFNAME_RE.match(name):
        raise ConfigError(f"{where}: interface {name!r} is not a Linux interface name (1-15 characters, no '/', ':'"
                          " or spaces)")
    text = require(t, "address", str, where)
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError as e:
        raise ConfigError(f"{where}: address {text!r} is not an IPv4 address with prefix, e.g. '10.10.10.1/24'") from e
    if "/" not in text:
        raise ConfigError(f"{where}: address {text!r} needs a prefix length, e.g. '{text}/24'")
    network = str(iface.network)
    if "network" in t:
        net_text = require(t, "network", str, where)
        try:
            network = str(ipaddress.IPv4Network(net_text, strict=False))
        except ValueError as e:
            raise ConfigError(f"{where}: network {net_text!r} is not an IPv4 network") from e
    unknown = set(t) - {"interface", "address", "network"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return Interface(name=name, address=str(iface.ip), prefixlen=iface.network.prefixlen, network=network)


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
    path = Path(path)
    doc = load_toml(path)
    p = require(doc, "pat", dict, str(path))
    where = f"{path} [pat]"
    table = optional(p, "table", str, DEFAULT_TABLE, where)
    if not _TABLE_RE.match(table):
        raise ConfigError(f"{where}: table {table!r}: letters, digits, '_' or '-', at most 64, "
                          "not starting with a digit or '-'")
    inside = _interface(doc, "inside", path)
    outside = _interface(doc, "outside", path)
    if inside.name == outside.name:
        raise ConfigError(f"{path}: [inside] and [outside] use the same interface {inside.name!r}")
    if ipaddress.IPv4Network(inside.network).overlaps(ipaddress.IPv4Network(outside.network)):
        raise ConfigError(f"{path}: inside network {inside.network} overlaps outside network {outside.network}")
    gateway = optional(p, "gateway", str, None, where)
    if gateway is not None:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError as e:
            raise ConfigError(f"{where}: gateway {gateway!r} is not an IPv4 address") from e
        if gw not in ipaddress.IPv4Network(outside.network):
            raise ConfigError(f"{where}: gateway {gateway} is not on the outside network {outside.network}")
        gateway = str(gw)
    poll = optional(p, "poll_interval", (int, float), DEFAULT_POLL, where)
    if isinstance(poll, bool) or not 0.2 <= poll <= 3600:
        raise ConfigError(f"{where}: 'poll_interval' must be between 0.2 and 3600 seconds")
    unknown = set(p) - {"table", "control_socket", "esp_passthrough", "port_range", "gateway", "poll_interval"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return PatSettings(
        path=path,
        table=table,
        inside=inside,
        outside=outside,
        gateway=gateway,
        esp_passthrough=optional(p, "esp_passthrough", bool, False, where),
        port_range=_port_range(p, where),
        control_socket=optional(p, "control_socket", str, DEFAULT_SOCKET, where),
        poll_interval=float(poll),
    )
