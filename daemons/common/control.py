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


def call(path: str, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """Blocking client for the CLI: one request, one reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ControlError(f"daemon not running (no control socket at {path})") from e
        s.sendall(_line({"cmd": cmd, "args": args or {}}))
        f = s.makefile("rb")
        line = f.readline()
    if not line:
        raise ControlError("daemon closed the connection without a reply")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "failed"))
    return reply.get("result")


def follow(path: str, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """Blocking client for streams: yields each item until the daemon or the user stops."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ControlError(f"daemon not running (no control socket at {path})") from e
        s.sendall(_line({"cmd": cmd, "args": args or {}}))
        for line in s.makefile("rb"):
            reply = json.loads(line)
            if not reply.get("ok"):
                raise ControlError(reply.get("error", "failed"))
            yield reply.get("result")
