"""Reading the daemons' TOML files into plain dictionaries with typed errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration file is missing, unreadable or wrong; the message says where."""


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: no such file") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: {e}") from e


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
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: '{key}' must be {name}, not {type(value).__name__}")
    return value


def read_secret(table: dict[str, Any], key: str, base: Path, where: str, *, required: bool) -> str:
    """`key = "..."` inline, or `key_file = "name"` relative to the config file (kept out of the config)."""
    value = table.get(key)
    file_key = f"{key}_file"
    if file_key in table:
        try:
            value = (base.parent / str(table[file_key])).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}: {file_key}: {e}") from e
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ConfigError(f"{where}: '{key}' (or '{file_key}') is required")
    return value
