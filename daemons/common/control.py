"""The control socket every daemon serves: JSON lines over a root-only Unix socket.

Request:  {"cmd": "sessions", "args": {...}}\\n
Reply:    {"ok": true, "result": ...}\\n            or {"ok": false, "error": "..."}\\n
Streams (log --follow) send one {"ok": true, "result": ...} line per item until the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
StreamHandler = Callable[[dict[str, Any]], AsyncIterator[Any]]
MAX_REQUEST = 64 * 1024


class ControlError(Exception):
    """A control command failed; the message goes back to the CLI as is."""


class Unreachable(ControlError):
    """The CLI could not talk to the daemon at all: no socket, no permission, a path a socket cannot have."""


# struct sockaddr_un's sun_path is 108 bytes, and the path needs its terminating NUL.
MAX_SOCKET_PATH = 107


class ControlServer:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.handlers: dict[str, Handler] = {}
        self.streams: dict[str, StreamHandler] = {}
        self._server: asyncio.base_events.Server | None = None

    def command(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def stream(self, name: str, handler: StreamHandler) -> None:
        self.streams[name] = handler

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o077)  # root-only from the first instant, not chmod'ed after
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10.0)
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ControlError("request must be an object with a 'cmd'")
            cmd, args = req["cmd"], req.get("args") or {}
            if cmd in self.streams:
                async for item in self.streams[cmd](args):
                    writer.write(_line({"ok": True, "result": item}))
                    await writer.drain()
                return
            handler = self.handlers.get(cmd)
            if handler is None:
                raise ControlError(f"unknown command {cmd!r}")
            writer.write(_line({"ok": True, "result": await handler(args)}))
        except (ControlError, ValueError, KeyError, TypeError) as e:
            writer.write(_line({"ok": False, "error": str(e)}))
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except Exception as e:  # a bug in a handler must not take the daemon down
            log.exception("control command failed")
            writer.write(_line({"ok": False, "error": f"internal error: {e}"}))
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()


def _line(obj: object) -> bytes:
    return (json.dumps(obj, default=str) + "\n").encode()


def _why(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied (run as root, or as the user the daemon runs as)"
    if isinstance(e, FileNotFoundError):
        return "no control socket there (is it running? --socket or --config names another)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (not running: the socket is left from an earlier run)"
    if isinstance(e, NotADirectoryError):
        return "a part of the path is not a directory"
    if isinstance(e, TimeoutError):
        return "it does not accept the connection"
    return (e.strerror or str(e)).lower()


def _connect(path: str, timeout: float | None, daemon: str) -> socket.socket:
    """A connected socket to the daemon, or Unreachable with one line that says why."""
    where = f"cannot reach {daemon} at {path}"
    if not path or "\0" in path:
        raise Unreachable(f"{where}: not a socket path")
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise Unreachable(f"{where}: the path is {size} bytes long, a Unix socket path holds at most "
                          f"{MAX_SOCKET_PATH}")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
    except (OSError, ValueError) as e:
        s.close()
        raise Unreachable(f"{where}: {_why(e) if isinstance(e, OSError) else e}") from e
    return s


def _reply(line: bytes, daemon: str) -> Any:
    try:
        reply = json.loads(line)
    except ValueError as e:
        raise ControlError(f"{daemon} sent a reply that is not JSON: {line[:80]!r}") from e
    if not isinstance(reply, dict):
        raise ControlError(f"{daemon} sent a reply that is not an object: {line[:80]!r}")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "failed")))
    return reply.get("result")


def call(path: str, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10.0, *,
         daemon: str = "the daemon") -> Any:
    """Blocking client for the CLI: one request, one reply. Every failure is a ControlError with one line."""
    with _connect(path, timeout, daemon) as s:
        try:
            s.sendall(_line({"cmd": cmd, "args": args or {}}))
            line = s.makefile("rb").readline()
        except TimeoutError as e:
            raise ControlError(f"{daemon} at {path} did not answer within {timeout:g} s") from e
        except OSError as e:
            raise ControlError(f"{daemon} at {path} dropped the connection: {_why(e)}") from e
    if not line:
        raise ControlError(f"{daemon} closed the connection without a reply")
    return _reply(line, daemon)


def follow(path: str, cmd: str, args: dict[str, Any] | None = None, *, daemon: str = "the daemon") -> Any:
    """Blocking client for streams: yields each item until the daemon or the user stops."""
    with _connect(path, 10.0, daemon) as s:
        try:
            s.sendall(_line({"cmd": cmd, "args": args or {}}))
            s.settimeout(None)  # a quiet log is not a dead daemon
            for line in s.makefile("rb"):
                yield _reply(line, daemon)
        except OSError as e:
            raise ControlError(f"{daemon} at {path} dropped the connection: {_why(e)}") from e
