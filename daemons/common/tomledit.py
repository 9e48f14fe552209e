"""Changing one setting in a daemon's TOML file the way an operator would: that line only, comments kept.

tomllib reads TOML but cannot write it, and writing the parsed data back would lose every comment the example
configs explain themselves with. So a switch (`nat_traversal = true`) is changed on its own line, its trailing
comment kept; a key the table lacks is added under the table's header. The result is parsed again and must hold
the value asked for, or nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from natt_daemons.common.config import ConfigError, find_line, table_label

_BOOL_VALUE = re.compile(r"^(?P<head>\s*(?P<key>[A-Za-z0-9_-]+)\s*=\s*)(?P<value>true|false)(?P<tail>\s*(?:#.*)?)$")
_HEADER = re.compile(r"^\s*\[(?!\[)")


def _lookup(data: dict[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            return None
        data = data[k]
    return data


def set_bool(text: str, table: Sequence[str], key: str, value: bool, *, where: str = "the config") -> str:
    """`text` with `key = true|false` under [table] set to `value` (added under the header when missing)."""
    table = tuple(table)
    word = "true" if value else "false"
    lines = text.splitlines(keepends=True)
    header = find_line(text, table)
    if header is None or not _HEADER.match(lines[header - 1]):
        raise ConfigError(f"{where}: no {table_label(table)} table to set '{key}' in")
    at = find_line(text, (*table, key))
    if at is not None and at != header:
        line = lines[at - 1]
        body = line.rstrip("\r\n")
        m = _BOOL_VALUE.match(body)
        if m is None or m["key"] != key:
            raise ConfigError(f"{where}:{at}: '{key}' is not written as `{key} = true|false` on one line; "
                              "change it by hand")
        lines[at - 1] = f"{m['head']}{word}{m['tail']}{line[len(body):]}"
    else:
        ending = "\r\n" if lines[header - 1].endswith("\r\n") else "\n"
        if not lines[header - 1].endswith(("\n", "\r")):
            lines[header - 1] += ending
        lines.insert(header, f"{key} = {word}{ending}")
    new = "".join(lines)
    try:
        parsed = tomllib.loads(new)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: setting '{key}' would break the file ({e}); change it by hand") from e
    if _lookup(parsed, (*table, key)) is not value:
        raise ConfigError(f"{where}: could not set {table_label(table)} '{key}' (written in a form this edit does "
                          "not know); change it by hand")
    return new


def write_config(path: Path, text: str) -> None:
    """Replace the file's content, keeping its owner and mode: a new file renamed over it when the directory lets
    this process create one (never half-written), else the file rewritten in place. A symlink stays one."""
    path = path.resolve()
    st = path.stat()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except PermissionError:
        with path.open("r+", encoding="utf-8") as f:
            f.write(text)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), st.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):  # not root: the file stays ours, as it was
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
