"""Access classes on the control socket, with a real Unix socket and a real unprivileged peer.

A ControlServer runs on its own event loop in a thread; each client is a forked process that drops to user nobody
(uid 65534) with the supplementary groups the case needs, so the kernel's own checks (the socket file's mode and
group at connect) and the server's (SO_PEERCRED, SO_PEERGROUPS) are both exercised, not simulated.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natt_daemons.common.control import AuditRecord, ControlError, ControlServer, SocketAccess, call

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs clients as another uid"),
]

NOBODY = 65534
VIEWERS = 54321  # gids no account uses: root may give the socket any group, named or not
ADMINS = 54322



def _requests(path: Path, cmds: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for cmd, args in cmds:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            try:
                s.connect(str(path))
            except OSError as e:
                out.append({"connect_error": e.errno})
                continue
            s.sendall((json.dumps({"cmd": cmd, "args": args}) + "\n").encode())
            out.append(json.loads(s.makefile("rb").readline()))
    return out


class Served:
    """A ControlServer with a view, an admin and a root command, on a loop in a thread; audits collected."""

    def __init__(self, path: Path, access: SocketAccess) -> None:
        self.audits: list[AuditRecord] = []
        self.server = ControlServer(str(path), access, audit=self.audits.append)
        self.path = path

        async def view(args: dict[str, Any]) -> Any:
            return {"sessions": []}

        async def admin(args: dict[str, Any]) -> Any:
            if args.get("user") == "nobody-there":
                raise ControlError("no session for user 'nobody-there'")
            return {"logged_out": 1}

        async def root(args: dict[str, Any]) -> Any:
            return {"written": True}

        self.server.command("sessions", view)
        self.server.command("logout", admin, access="admin")
        self.server.command("keys", root, access="root")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)

    def set_access(self, access: SocketAccess) -> None:
        """As a reload does it: on the server's loop; back when done."""

        async def apply() -> None:
            self.server.set_access(access)

        asyncio.run_coroutine_threadsafe(apply(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A directory nobody may enter (pytest's tmp_path is root-only 0700)."""
    d = Path(tempfile.mkdtemp(prefix="natt-ctl-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(path: Path, cmds: list[tuple[str, dict[str, Any]]], groups: list[int]) -> list[dict[str, Any]]:
    """The requests from a forked child that drops to uid/gid nobody holding `groups`, for good (setres*id)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups(groups)
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            with os.fdopen(w, "w") as f:
                f.write(json.dumps(_requests(path, cmds)))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged client failed"
    return json.loads(text)


ALL = [("sessions", {}), ("logout", {"user": "vpnclient1", "actor": "manager:alice"}), ("keys", {"wireshark": "/x"})]


def test_without_groups_the_socket_is_root_only(sockdir: Path) -> None:
    s = Served(sockdir / "c.sock", SocketAccess())
    try:
        st = os.stat(s.path)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_gid == os.getegid()
        replies = as_nobody(s.path, ALL, groups=[VIEWERS, ADMINS])
        assert all(r == {"connect_error": 13} for r in replies), replies  # EACCES, from the kernel
        assert call(str(s.path), "keys", {"wireshark": "/x"}) == {"written": True}  # root runs everything
        assert call(str(s.path), "logout", {"user": "u"}) == {"logged_out": 1}
    finally:
        s.close()


def test_group_members_view_and_admins_administer(sockdir: Path) -> None:
    s = Served(sockdir / "c.sock", SocketAccess(group=VIEWERS, admin_group=ADMINS))
    try:
        st = os.stat(s.path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == VIEWERS

        outsider = as_nobody(s.path, ALL, groups=[])
        assert all(r == {"connect_error": 13} for r in outsider), outsider

        viewer = as_nobody(s.path, ALL, groups=[VIEWERS])
        assert viewer[0] == {"ok": True, "result": {"sessions": []}}
        assert viewer[1] == {"ok": False, "error": "permission denied: logout needs admin"}
        assert viewer[2] == {"ok": False, "error": "permission denied: keys needs root"}

        admin = as_nobody(s.path, [*ALL, ("logout", {"user": "nobody-there"})], groups=[VIEWERS, ADMINS])
        assert admin[0]["ok"] and admin[1] == {"ok": True, "result": {"logged_out": 1}}
        assert admin[2] == {"ok": False, "error": "permission denied: keys needs root"}
        assert admin[3] == {"ok": False, "error": "no session for user 'nobody-there'"}

        assert call(str(s.path), "keys", {"wireshark": "/x"}) == {"written": True}
        assert call(str(s.path), "sessions") == {"sessions": []}
    finally:
        s.close()
    # The audit trail: every refused, done or failed admin/root command, never a view, with the kernel's uid.
    seen = [(a.cmd, a.peer.uid, a.refused, a.error, a.actor) for a in s.audits]
    assert seen == [
        ("logout", NOBODY, True, "needs admin", "manager:alice"),
        ("keys", NOBODY, True, "needs root", "nobody"),
        ("logout", NOBODY, False, None, "manager:alice"),
        ("keys", NOBODY, True, "needs root", "nobody"),
        ("logout", NOBODY, False, "no session for user 'nobody-there'", "nobody"),
        ("keys", 0, False, None, "root"),
    ], seen
    assert all(a.peer.pid > 0 for a in s.audits)


def test_an_admin_group_alone_is_not_enough_without_the_socket_group(sockdir: Path) -> None:
    """Holding the admin group says nothing at connect(): the socket's own group decides who reaches it."""
    s = Served(sockdir / "c.sock", SocketAccess(group=VIEWERS, admin_group=ADMINS))
    try:
        replies = as_nobody(s.path, ALL, groups=[ADMINS])
        assert all(r == {"connect_error": 13} for r in replies), replies
    finally:
        s.close()


def test_a_reload_changes_the_admin_group_and_the_socket_mode(sockdir: Path) -> None:
    s = Served(sockdir / "c.sock", SocketAccess(group=VIEWERS))
    try:
        assert as_nobody(s.path, ALL[1:2], groups=[VIEWERS, ADMINS])[0]["ok"] is False
        s.set_access(SocketAccess(group=VIEWERS, admin_group=ADMINS))
        assert as_nobody(s.path, ALL[1:2], groups=[VIEWERS, ADMINS])[0]["ok"] is True
        s.set_access(SocketAccess())
        assert as_nobody(s.path, ALL[:1], groups=[VIEWERS, ADMINS]) == [{"connect_error": 13}]
        assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
    finally:
        s.close()


def test_unknown_access_class_is_a_bug() -> None:
    server = ControlServer("/nonexistent/x.sock")

    async def h(args: dict[str, Any]) -> Any:
        return None

    with pytest.raises(ValueError, match="access class 'superuser'"):
        server.command("x", h, access="superuser")  # type: ignore[arg-type]
