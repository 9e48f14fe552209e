"""The control socket every daemon serves: JSON lines over a root-only Unix socket.

Request:  {"cmd": "sessions", "args": {...}}\\n
Reply:    {"ok": true, "result": ...}\\n            or {"ok": false, "error": "..."}\\n
Streams (log --follow) send one {"ok": true, "result": ...} line per item until the client leaves.

Access. The socket is 0600, owned by the daemon's user, unless a `SocketAccess` names a group: then it is 0660
with that group, and members may connect. Each command has a class, checked on every connection against the
peer's credentials as the kernel gives them (SO_PEERCRED, SO_PEERGROUPS), never against what the peer says:
  view   whoever may connect (the views and the log);
  admin  uid 0, or a peer holding the admin group (logout, ping, rekey, unlock, nat-transparency);
  root   uid 0 only (keys).
A refused command answers "permission denied: <cmd> needs <class>". Every admin and root command, done, failed
or refused, goes to the `audit` callback with the peer (the concentrator writes it to its event log).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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

Access = Literal["view", "admin", "root"]
ACCESS_CLASSES: tuple[Access, ...] = ("view", "admin", "root")
# <linux/socket.h>: the peer's supplementary groups at connect() (Linux 4.13); Python has no name for it.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
# getsockopt() in Python takes at most 1024 bytes: 256 groups. A peer with more is looked up by its uid instead.
_MAX_PEERGROUPS = 1024


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as the kernel saw it at connect(): not what the peer claims."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()  # the effective gid and the supplementary groups

    @property
    def name(self) -> str:
        """The uid's login name, or "uid N" when it has none."""
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid {self.uid}"


UNKNOWN_PEER = Peer(pid=0, uid=-1, gid=-1)  # credentials that could not be read: view access at most


def peer_of(sock: Any) -> Peer:
    """SO_PEERCRED (pid, uid, gid) and SO_PEERGROUPS of a connected Unix socket."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _MAX_PEERGROUPS)
        groups = set(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError as e:
        if e.errno != errno.ERANGE:
            raise
        groups = set(_groups_of_uid(uid, gid))  # more groups than fit: the group database says which
    return Peer(pid, uid, gid, frozenset(groups | {gid}))


def _groups_of_uid(uid: int, gid: int) -> list[int]:
    try:
        return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        return [gid]


@dataclass(frozen=True)
class SocketAccess:
    """Who may reach the socket and who may run admin commands: gids (the config resolves the names)."""

    group: int | None = None  # the socket is 0660 with this group (None: 0600, the daemon's user and root)
    admin_group: int | None = None  # holders may run admin commands (None: root only)

    def allows(self, peer: Peer, access: Access) -> bool:
        if access == "view" or peer.uid == 0:
            return True
        if access == "admin":
            return self.admin_group is not None and self.admin_group in peer.groups
        return False


@dataclass(frozen=True)
class AuditRecord:
    """One admin or root command: done (error None), failed (error), or refused before it ran."""

    cmd: str
    access: Access
    peer: Peer
    args: dict[str, Any] = field(default_factory=dict)
    refused: bool = False
    error: str | None = None

    @property
    def actor(self) -> str:
        """Who the caller says acts (the manager passes "manager:<login>"), else the peer's login name."""
        claimed = self.args.get("actor")
        return claimed if isinstance(claimed, str) and claimed else self.peer.name


Audit = Callable[[AuditRecord], None]


class ControlServer:
    def __init__(self, path: str, access: SocketAccess | None = None, audit: Audit | None = None) -> None:
        self.path = Path(path)
        self.access = access or SocketAccess()
        self.audit = audit
        self.handlers: dict[str, Handler] = {}
        self.streams: dict[str, StreamHandler] = {}
        self.classes: dict[str, Access] = {}
        self._server: asyncio.base_events.Server | None = None

    def command(self, name: str, handler: Handler, access: Access = "view") -> None:
        self.handlers[name] = handler
        self.classes[name] = _access(access)

    def stream(self, name: str, handler: StreamHandler, access: Access = "view") -> None:
        self.streams[name] = handler
        self.classes[name] = _access(access)

    async def start(self) -> None:
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if self.access.group is None else 0o750)
            if self.access.group is not None:
                os.chown(self.path.parent, -1, self.access.group)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o077)  # root-only from the first instant; the group is given access after
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)
        self.apply_access()

    def set_access(self, access: SocketAccess) -> None:
        """New groups (a reload): the admin group counts from the next command, the socket's mode from now."""
        self.access = access
        if self._server is not None:
            self.apply_access()

    def apply_access(self) -> None:
        group = self.access.group
        if group is None:
            os.chmod(self.path, 0o600)
            return
        try:
            os.chown(self.path, -1, group)
        except PermissionError as e:
            os.chmod(self.path, 0o600)
            raise ControlError(f"cannot give the control socket {self.path} group {group}: {e.strerror} (the "
                               "daemon's user must be a member of control_group)") from e
        os.chmod(self.path, 0o660)
        st = self.path.parent.stat()
        if not (st.st_mode & stat.S_IXOTH or (st.st_gid == group and st.st_mode & stat.S_IXGRP)):
            log.warning("control_group: its members cannot reach %s: the directory %s (mode %04o, group %d) does "
                        "not let them in; give it that group and mode 0750", self.path, self.path.parent,
                        stat.S_IMODE(st.st_mode), st.st_gid)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _check(self, cmd: str, args: dict[str, Any], peer: Peer) -> Access:
        """The command's class, or ControlError (logged, and audited) when the peer may not run it."""
        access = self.classes.get(cmd)
        if access is None:
            raise ControlError(f"unknown command {cmd!r}")
        if not self.access.allows(peer, access):
            log.warning("control: refused %s (needs %s) to uid %d, pid %d", cmd, access, peer.uid, peer.pid)
            self._audit(AuditRecord(cmd, access, peer, args, refused=True, error=f"needs {access}"))
            raise ControlError(f"permission denied: {cmd} needs {access}")
        return access

    def _audit(self, record: AuditRecord) -> None:
        if self.audit is None:
            return
        try:
            self.audit(record)
        except Exception:  # the audit trail failing must not turn a done command into an error
            log.exception("control: audit of %s failed", record.cmd)

    async def _run(self, cmd: str, args: dict[str, Any], access: Access, peer: Peer) -> Any:
        handler = self.handlers[cmd]
        if access == "view":
            return await handler(args)
        try:
            result = await handler(args)
        except Exception as e:
            self._audit(AuditRecord(cmd, access, peer, args, error=str(e) or type(e).__name__))
            raise
        self._audit(AuditRecord(cmd, access, peer, args))
        return result

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                peer = peer_of(writer.get_extra_info("socket"))
            except (OSError, struct.error, AttributeError):
                log.warning("control: cannot read the peer's credentials; view commands only")
                peer = UNKNOWN_PEER
            line = await asyncio.wait_for(reader.readline(), 10.0)
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ControlError("request must be an object with a 'cmd'")
            cmd, args = req["cmd"], req.get("args") or {}
            if not isinstance(args, dict):
                raise ControlError("'args' must be an object")
            access = self._check(cmd, args, peer)
            if cmd in self.streams:
                async for item in self.streams[cmd](args):
                    writer.write(_line({"ok": True, "result": item}))
                    await writer.drain()
                return
            writer.write(_line({"ok": True, "result": await self._run(cmd, args, access, peer)}))
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


def _access(access: str) -> Access:
    if access not in ACCESS_CLASSES:
        raise ValueError(f"access class {access!r} is not one of {', '.join(ACCESS_CLASSES)}")
    return access  # type: ignore[return-value]


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


def parse_reply(line: bytes, daemon: str) -> Any:
    """A reply line's result; a ControlError (one line) if it is not a well-formed reply or says the command failed."""
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
    return parse_reply(line, daemon)


def follow(path: str, cmd: str, args: dict[str, Any] | None = None, *, daemon: str = "the daemon") -> Any:
    """Blocking client for streams: yields each item until the daemon or the user stops."""
    with _connect(path, 10.0, daemon) as s:
        try:
            s.sendall(_line({"cmd": cmd, "args": args or {}}))
            s.settimeout(None)  # a quiet log is not a dead daemon
            for line in s.makefile("rb"):
                yield parse_reply(line, daemon)
        except OSError as e:
            raise ControlError(f"{daemon} at {path} dropped the connection: {_why(e)}") from e
