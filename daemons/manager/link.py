"""The manager's line to the concentrator: one JSON request per connection on its control socket (asyncio).

Failures are typed for the pages: the concentrator cannot be reached at all (`Unreachable`, from the shared
control module), it lacks a command (`NotAvailable`: an older concentrator), it refuses the manager the command
(`PermissionDenied`: the manager's user is not in control_admin_group), or it refuses the request itself
(`ControlError`, its own words).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from natt_daemons.common.control import MAX_SOCKET_PATH, ControlError, Unreachable, parse_reply

# A whole event log (10,000 entries by default, 1-2 kB each with its fields) comes back as one line.
MAX_REPLY = 256 * 1024 * 1024
TIMEOUT = 10.0


class NotAvailable(ControlError):
    """The concentrator has no such command (it is older than the manager)."""

    def __init__(self, command: str) -> None:
        super().__init__(f"this concentrator has no '{command}' command (not available in its version)")
        self.command = command


class PermissionDenied(ControlError):
    """The concentrator refused the manager this command: its user lacks the access class."""


def _why(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return ("permission denied (the manager's user must be in the socket's group: control_group in the "
                "concentrator's config)")
    if isinstance(e, FileNotFoundError):
        return "no control socket there (is the concentrator running?)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (the concentrator is not running: the socket is left from an earlier run)"
    return (e.strerror or str(e)).lower()


class ConcentratorLink:
    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    async def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        where = f"cannot reach the concentrator at {self.path}"
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise Unreachable(f"{where}: the path is longer than a Unix socket path can be")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=MAX_REPLY), self.timeout)
        except TimeoutError as e:
            raise Unreachable(f"{where}: it does not accept the connection") from e
        except OSError as e:
            raise Unreachable(f"{where}: {_why(e)}") from e
        try:
            writer.write((json.dumps({"cmd": cmd, "args": args or {}}) + "\n").encode())
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), self.timeout)
        except TimeoutError as e:
            raise ControlError(f"the concentrator did not answer '{cmd}' within {self.timeout:g} s") from e
        except (OSError, ValueError) as e:
            raise ControlError(f"the concentrator dropped the connection during '{cmd}': {e}") from e
        finally:
            writer.close()
        return _result(cmd, line)


def _result(cmd: str, line: bytes) -> Any:
    if not line:
        raise ControlError(f"the concentrator closed the connection without answering '{cmd}'")
    try:
        return parse_reply(line, "the concentrator")
    except ControlError as e:
        error = str(e)
        if error.startswith("unknown command"):
            raise NotAvailable(cmd) from e
        if error.startswith("permission denied"):
            raise PermissionDenied(error) from e
        raise
