"""Reading the daemons' TOML files strictly: typed errors that name the file, the line and the key.

Every table a loader reads declares its keys in one place (a frozenset in the daemon's config module); a key the
list lacks is refused with its line and the nearest known key, before any value is looked at, so that a typo
(`nat_travesal = true`) never quietly leaves a setting at its default. The loader reads the table through a
`Table`, which treats reading an undeclared key as a bug in the loader: the list cannot fall behind the code.
"""

from __future__ import annotations

import difflib
import grp
import ipaddress
import logging
import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natt_daemons.common.control import MAX_SOCKET_PATH

log = logging.getLogger(__name__)

# The top-level setting that turns the refusal of readable secrets into a warning, in every daemon's file.
ALLOW_INSECURE_SECRETS = "allow_insecure_secrets"
_IFNAME_RE = re.compile(r"^[^\s/:]{1,15}$")


class ConfigError(Exception):
    """The configuration file is missing, unreadable or wrong; the message says where."""


# -- the document and its lines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """A parsed TOML file with its text, to find the line a key is on (tomllib gives no positions)."""

    path: Path
    text: str
    data: dict[str, Any]

    def line_of(self, keys: Sequence[str]) -> int | None:
        return find_line(self.text, keys)

    def at(self, keys: Sequence[str]) -> str:
        """`FILE:LINE` for the key at this path, or `FILE` when it cannot be found."""
        line = self.line_of(keys)
        return f"{self.path}:{line}" if line else str(self.path)


def read_document(path: str | Path) -> Document:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: no such file") from e
    except OSError as e:
        raise ConfigError(f"{p}: cannot read it: {e.strerror or e}") from e
    try:
        text = raw.decode()
        return Document(p, text, tomllib.loads(text))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: {e}") from e


_BARE = r"[A-Za-z0-9_-]+"
_PART = rf"""(?:{_BARE}|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?")
_KEYVAL_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART_RE = re.compile(_PART)


def _key_parts(dotted: str) -> tuple[str, ...]:
    parts = []
    for raw in _PART_RE.findall(dotted):
        if raw.startswith('"'):
            parts.append(tomllib.loads(f"k = {raw}")["k"])  # the escapes as TOML reads them
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return tuple(parts)


def find_line(text: str, keys: Sequence[str]) -> int | None:
    """The 1-based line where the key at this path (("groups", "g", "psk")) is written: `psk = ...` under
    `[groups.g]`, a dotted `g.psk = ...` under `[groups]`, or a header `[groups.g.psk]`. A key inside an inline
    table is not found itself; the line of its nearest enclosing key is given instead. None when nothing fits."""
    target = tuple(keys)
    found: dict[tuple[str, ...], int] = {}  # the first line of every key path seen, and of its prefixes
    table: tuple[str, ...] = ()
    closing: str | None = None  # inside a multi-line string: its delimiter
    for lineno, line in enumerate(text.splitlines(), 1):
        if closing is not None:
            if closing in line:
                closing = None
            continue
        if m := _HEADER_RE.match(line):
            table = _key_parts(m.group(1))
            path = table
        elif m := _KEYVAL_RE.match(line):
            path = table + _key_parts(m.group(1))
            rest = line[m.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    closing = quote
                    break
        else:
            continue
        for i in range(1, len(path) + 1):
            found.setdefault(path[:i], lineno)
    for i in range(len(target), 0, -1):
        if target[:i] in found:
            return found[target[:i]]
    return None


def table_label(keys: Sequence[str]) -> str:
    if not keys:
        return "the top level"
    return "[" + ".".join(k if re.fullmatch(_BARE, k) else f'"{k}"' for k in keys) + "]"


# -- unknown keys -----------------------------------------------------------------------------------------------


class Table(dict[str, Any]):
    """A TOML table whose keys were checked against the loader's list. Reading a key the list lacks is a bug in
    the loader (the list is where a reader of the code learns what the file may hold), so it fails loudly."""

    def __init__(self, data: Mapping[str, Any], known: Collection[str], label: str) -> None:
        super().__init__(data)
        self.known = frozenset(known)
        self.label = label

    def _declared(self, key: object) -> None:
        if key not in self.known:
            raise AssertionError(f"the loader reads '{key}' from {self.label}, which its list of keys lacks")

    def __getitem__(self, key: str) -> Any:
        self._declared(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._declared(key)
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._declared(key)
        return super().get(key, default)


def unknown_key_message(doc: Document, keys: Sequence[str], key: str, known: Collection[str],
                        hints: Mapping[str, str]) -> str:
    where = doc.at((*keys, key))
    why = f"unknown key '{key}' " + (f"in {table_label(keys)}" if keys else "at the top level")
    if key in hints:
        return f"{where}: {why} ({hints[key]})"
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"{where}: {why}" + (f" (did you mean '{close[0]}'?)" if close else "")


def strict_table(doc: Document, keys: Sequence[str], table: Mapping[str, Any], known: Collection[str], *,
                 hints: Mapping[str, str] | None = None) -> Table:
    """The table at `keys` (() for the top level), refused when it holds a key not in `known`. `hints` maps a
    likely wrong key to advice ("nat_traversal" in the client: "the client's key is transparent_tunneling")."""
    unknown = [k for k in table if k not in known]
    if unknown:
        message = unknown_key_message(doc, keys, unknown[0], known, hints or {})
        if len(unknown) > 1:
            others = ", ".join(f"'{k}' (line {doc.line_of((*keys, k)) or '?'})" for k in unknown[1:])
            message += f"; also unknown: {others}"
        raise ConfigError(message)
    return Table(table, known, f"{doc.path} {table_label(keys)}")


def subtable(doc: Document, parent: Mapping[str, Any], keys: Sequence[str], *, required: bool) -> dict[str, Any]:
    """The table under the last of `keys` in `parent` ({} when it is optional and absent), refused when it is a
    plain value instead."""
    key = keys[-1]
    if key not in parent:
        if required:
            raise ConfigError(f"{doc.path}: {table_label(keys)} is required")
        return {}
    value = parent[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{doc.at(keys)}: '{key}' must be a table ({table_label(keys)}), "
                          f"not {type(value).__name__}")
    return value


# -- values -----------------------------------------------------------------------------------------------------


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)


def require(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: '{key}' is required")
    value = table[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' must be {kind.__name__}, not {type(value).__name__}")
    return value


def optional(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    value = table.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' must be {_kind_name(kind)}, not {type(value).__name__}")
    return value


def number(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: float, low: float, high: float,
           where: str, *, zero_means: str = "") -> Any:
    """A number in low..high; with `zero_means` ("off"), 0 is allowed too and the message says what it does."""
    value = optional(table, key, kind, default, where)
    if isinstance(value, bool) or not (low <= value <= high or (zero_means and value == 0)):
        zero = f" (or 0: {zero_means})" if zero_means else ""
        raise ConfigError(f"{where}: '{key}' must be a number in {low:g}..{high:g}{zero}, not {value!r}")
    return value


def unicast_address(value: str, where: str, key: str) -> ipaddress.IPv4Address:
    """An IPv4 address a host can have: not 0.0.0.0/8, multicast, or 240.0.0.0/4 (with 255.255.255.255)."""
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError as e:
        raise ConfigError(f"{where}: {key} {value!r} is not an IPv4 address") from e
    if addr in _THIS_NETWORK or addr.is_multicast or addr in _RESERVED:
        raise ConfigError(f"{where}: {key} {value} is not a unicast host address")
    return addr


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_RESERVED = ipaddress.IPv4Network("240.0.0.0/4")
_NOT_FOR_HOSTS = {
    ipaddress.IPv4Network("0.0.0.0/8"): "0.0.0.0/8 (this network)",
    ipaddress.IPv4Network("127.0.0.0/8"): "127.0.0.0/8 (loopback)",
    ipaddress.IPv4Network("169.254.0.0/16"): "169.254.0.0/16 (link-local)",
    ipaddress.IPv4Network("224.0.0.0/4"): "224.0.0.0/4 (multicast)",
    ipaddress.IPv4Network("240.0.0.0/4"): "240.0.0.0/4 (reserved)",
}


def network(value: str, where: str, key: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=False)
    except ValueError as e:
        raise ConfigError(f"{where}: {key} {value!r} is not an IPv4 network") from e


def host_network(value: str, where: str, key: str) -> ipaddress.IPv4Network:
    """A network whose addresses can be given to hosts (an address pool): none of the special ranges."""
    net = network(value, where, key)
    for special, name in _NOT_FOR_HOSTS.items():
        if net.overlaps(special):
            raise ConfigError(f"{where}: {key} {net} overlaps {name}")
    return net


def interface_name(value: str, where: str, key: str) -> str:
    if not _IFNAME_RE.match(value):
        raise ConfigError(f"{where}: {key} {value!r} is not a Linux interface name (1-15 characters, no '/', ':' "
                          "or spaces)")
    return value


def socket_path(value: str, where: str, key: str = "control_socket") -> str:
    size = len(os.fsencode(value))
    if not value or "\0" in value:
        raise ConfigError(f"{where}: {key} {value!r} is not a path")
    if size > MAX_SOCKET_PATH:
        raise ConfigError(f"{where}: {key} {value!r} is {size} bytes long; a Unix socket path holds at most "
                          f"{MAX_SOCKET_PATH}")
    return value


@dataclass(frozen=True)
class ListenAddress:
    """Where a TCP service listens ("ADDR:PORT", IPv6 as "[ADDR]:PORT"), e.g. a daemon's metrics endpoint."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def listen_address(table: dict[str, Any], key: str, where: str) -> ListenAddress | None:
    """An optional "ADDR:PORT" to listen on: a literal address this host can bind (0.0.0.0 or [::] for all), port
    1..65535; absent = None (no listener). Names are refused: where a service listens must not depend on DNS."""
    value = optional(table, key, str, None, where)
    if value is None:
        return None
    example = f"e.g. {key} = \"127.0.0.1:9101\""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{where}: {key} {value!r} must be ADDRESS:PORT ({example}; IPv6 as \"[::1]:9101\")")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        addr = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError as e:
        raise ConfigError(f"{where}: {key} {value!r}: {host!r} is not an IP address ({example})") from e
    if (addr.version == 6) != bracketed:
        raise ConfigError(f"{where}: {key} {value!r}: write an IPv6 address in brackets, an IPv4 one without")
    if addr.is_multicast or (addr.version == 4 and addr in _RESERVED):
        raise ConfigError(f"{where}: {key} {value!r}: {addr} is not an address a host can listen on")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where}: {key} {value!r}: port {port} must be in 1..65535")
    return ListenAddress(str(addr), port)


# -- secrets ----------------------------------------------------------------------------------------------------

# The group the systemd units run the daemons as (systemd/sysusers.d/natt.conf): configs there are root:natt 0640,
# so that group reading a secret is how the daemon gets it, not a leak.
SERVICE_GROUP = "natt"


def _service_gid() -> int | None:
    try:
        return grp.getgrnam(SERVICE_GROUP).gr_gid
    except KeyError:
        return None


def _trusted_groups() -> frozenset[int]:
    """Groups whose read access to a secret is not exposure: this process's own, and the service group."""
    service = _service_gid()
    return frozenset({os.getegid(), *os.getgroups(), *([] if service is None else [service])})


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@dataclass
class SecretAudit:
    """Files that hold a secret (a psk or password inline in the config, or a psk_file / password_file) and can be
    read by others than their owner and the daemons' group. `enforce` refuses them, or, with
    allow_insecure_secrets = true at the top of the config, logs a warning for each."""

    config: Path = Path()
    allow_insecure: bool = False
    # file -> (who can read it, its mode, the mode to give it, what it holds)
    readable: dict[Path, tuple[str, int, int, list[str]]] = field(default_factory=dict)

    def note(self, file: Path, holds: str) -> None:
        try:
            st = file.stat()
        except OSError:
            return  # reading it reports the problem
        mode = st.st_mode & 0o777
        who = []
        if mode & 0o040 and st.st_gid not in _trusted_groups():
            who.append(f"group {_group_name(st.st_gid)}")
        if mode & 0o004:
            who.append("everyone")
        if who:
            fix = 0o640 if st.st_gid == _service_gid() else 0o600  # the natt group keeps its read access
            self.readable.setdefault(file, (" and ".join(who), mode, fix, []))[3].append(holds)

    def problems(self) -> list[str]:
        return [f"{file} holds {_and(holds)}, readable by {who} (mode {mode:04o}): chmod {fix:o} {file}"
                for file, (who, mode, fix, holds) in self.readable.items()]

    def enforce(self, logger: logging.Logger | None = log) -> list[str]:
        """Raise ConfigError for readable secrets, unless allowed; then return the warnings (logged to `logger`
        unless it is None)."""
        problems = self.problems()
        if problems and not self.allow_insecure:
            raise ConfigError("; ".join(problems) + f" (or set {ALLOW_INSECURE_SECRETS} = true at the top of "
                              f"{self.config} to only warn)")
        warnings = [f"INSECURE SECRET: {p} ({ALLOW_INSECURE_SECRETS} = true lets it pass)" for p in problems]
        if logger is not None:
            for w in warnings:
                logger.warning("%s", w)
        return warnings


def secret_audit(doc: Document) -> SecretAudit:
    allow = doc.data.get(ALLOW_INSECURE_SECRETS, False)
    if not isinstance(allow, bool):
        raise ConfigError(f"{doc.at([ALLOW_INSECURE_SECRETS])}: '{ALLOW_INSECURE_SECRETS}' must be true or false, "
                          f"not {allow!r}")
    return SecretAudit(doc.path, allow)


def read_secret(table: dict[str, Any], key: str, base: Path, where: str, *, required: bool,
                audit: SecretAudit | None = None, label: str = "") -> str:
    """`key = "..."` inline, or `key_file = "name"` relative to the config file (kept out of the config). Each
    file that holds the secret is noted in `audit`, to refuse it when others can read it."""
    file_key = f"{key}_file"
    holds = f"the {key}" + (f" of {label}" if label else "")
    if key in table and file_key in table:
        raise ConfigError(f"{where}: set '{key}' or '{file_key}', not both")
    if file_key in table:
        name = table[file_key]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: '{file_key}' must be a file name")
        file = base.parent / name
        try:
            value: object = file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}: {file_key} {file}: {e.strerror or e}") from e
        if required and not value:
            raise ConfigError(f"{where}: {file_key} {file} is empty")
        if audit is not None:
            audit.note(file, holds)
        return str(value)
    if key not in table:
        if required:
            raise ConfigError(f"{where}: '{key}' (or '{file_key}') is required")
        return ""
    value = table[key]
    if not isinstance(value, str) or (required and not value):
        raise ConfigError(f"{where}: '{key}' must be a non-empty string (or use '{file_key}')")
    if audit is not None:
        audit.note(base, holds)
    return value
