"""The concentrator daemon's side of XAUTH: password checks off the loop with the verdict handed back to the core,
the operator's unlock (with its audit line), and lockouts in the views. The core is stood in for by a fake that
has the two things the daemon uses (xauth_verdict, throttle); no sockets are opened."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from natt.ike.events import XauthCheck
from natt.ike.throttle import LoginThrottle, ThrottleSettings
from natt_daemons.common.control import ControlError
from natt_daemons.concentrator import cli, views
from natt_daemons.concentrator import config as conc_config
from natt_daemons.concentrator.daemon import Concentrator

pytestmark = pytest.mark.unit
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SRC = "192.0.2.10"


class FakeCore:
    def __init__(self) -> None:
        self.sas: dict[int, Any] = {}
        self.throttle = LoginThrottle(ThrottleSettings(free_failures=0, lockout_failures=1, lockout_seconds=600))
        self.verdicts: list[tuple[int, bool, threading.Thread]] = []

    def xauth_verdict(self, ticket: int, ok: bool, now: float) -> None:
        self.verdicts.append((ticket, ok, threading.current_thread()))


class FakeDriver:
    def __init__(self) -> None:
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def _daemon(tmp_path: Path, verify: Any) -> tuple[Concentrator, FakeCore, FakeDriver]:
    settings = conc_config.load(CONFIGS / "concentrator.toml")
    settings.control_socket = str(tmp_path / "c.sock")
    settings.policy.verify_user = verify
    c = Concentrator(settings)
    core, driver = FakeCore(), FakeDriver()
    c.endpoint = core  # type: ignore[assignment]
    c.driver = driver  # type: ignore[assignment]
    c.datapath = object()  # type: ignore[assignment]  # _on_event only asserts there is one
    return c, core, driver


async def _settle(c: Concentrator) -> None:
    for _ in range(200):
        if not c._xauth_checks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the XAUTH check never finished")


def test_verdict_comes_back_on_the_loop_thread_after_a_worker_check(tmp_path: Path) -> None:
    checked_on: list[str] = []

    def verify(user: str, password: str) -> bool:
        checked_on.append(threading.current_thread().name)
        return (user, password) == ("bob", "right")

    c, core, driver = _daemon(tmp_path, verify)

    async def run() -> None:
        c._on_event(XauthCheck(1, SRC, 7, "bob", "right"))
        c._on_event(XauthCheck(2, SRC, 8, "bob", "wrong"))
        await _settle(c)

    asyncio.run(run())
    main = threading.main_thread()
    assert sorted((t, ok) for t, ok, _ in core.verdicts) == [(7, True), (8, False)]
    assert all(thread is main for _, _, thread in core.verdicts), "the core is only touched from the loop"
    assert all(name.startswith("xauth") for name in checked_on), "scrypt ran on the xauth workers"
    assert driver.flushes == 2
    c._xauth_pool.shutdown()


def test_a_failing_check_refuses_and_logs_no_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def verify(user: str, password: str) -> bool:
        raise RuntimeError(f"backend choked on {password}")

    c, core, _ = _daemon(tmp_path, verify)

    async def run() -> None:
        c._on_event(XauthCheck(1, SRC, 3, "bob", "hunter2"))
        await _settle(c)

    with caplog.at_level(logging.ERROR):
        asyncio.run(run())
    assert [(t, ok) for t, ok, _ in core.verdicts] == [(3, False)]
    assert "RuntimeError" in caplog.text and "hunter2" not in caplog.text
    c._xauth_pool.shutdown()


def test_no_verdict_once_stopping(tmp_path: Path) -> None:
    release = threading.Event()

    def verify(user: str, password: str) -> bool:
        release.wait(5)
        return True

    c, core, _ = _daemon(tmp_path, verify)

    async def run() -> None:
        c._on_event(XauthCheck(1, SRC, 1, "bob", "pw"))
        c._stopping = True
        release.set()
        await _settle(c)

    asyncio.run(run())
    assert core.verdicts == []
    c._xauth_pool.shutdown()


def test_unlock_command_clears_and_audits(tmp_path: Path) -> None:
    c, core, _ = _daemon(tmp_path, lambda u, p: False)
    core.throttle.failed("bob", SRC, 0.0)
    core.throttle.failed("carol", "192.0.2.11", 0.0)

    async def run() -> None:
        with pytest.raises(ControlError):
            await c._cmd_unlock({})
        with pytest.raises(ControlError):
            await c._cmd_unlock({"user": "bob", "all": True})
        with pytest.raises(ControlError, match="not an IP address"):
            await c._cmd_unlock({"source": "nowhere"})
        assert await c._cmd_unlock({"user": "bob", "source": SRC}) == {"cleared": 2}
        assert await c._cmd_unlock({"all": True}) == {"cleared": 2}

    asyncio.run(run())
    audit = [e.text for e in c.events.log if e.name == "XAUTH_UNLOCKED"]
    assert audit == [
        f"Administrator cleared the XAUTH failure counts and lockouts of user [bob] and address {SRC}: 2 cleared",
        "Administrator cleared the XAUTH failure counts and lockouts of every user and address: 2 cleared"]
    c._xauth_pool.shutdown()


def test_lockouts_view_is_on_the_wall_clock() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=0, lockout_failures=1, lockout_seconds=600))
    t.failed("bob", SRC, 100.0)
    rows = views.lockouts(t, core_now=160.0, now=1_000_000.0)
    assert sorted(rows, key=lambda r: r["kind"]) == [
        {"kind": "source", "key": SRC, "failures": 1, "until": 1_000_540.0},
        {"kind": "user", "key": "bob", "failures": 1, "until": 1_000_540.0}]


def test_sessions_text_lists_lockouts_only_when_there_are_some() -> None:
    summary = {k: 0 for k in ("active_lan_to_lan", "active_remote_access", "active_management", "total_active",
                              "peak_concurrent", "concurrent_limit", "total_cumulative")}
    quiet = cli._sessions_text({"summary": summary, "remote_access": [], "lockouts": []})
    assert "Lockouts" not in quiet
    text = cli._sessions_text({"summary": summary, "remote_access": [], "lockouts": [
        {"kind": "user", "key": "bob", "failures": 10, "until": None}]})
    assert "XAUTH Lockouts" in text
    assert text.splitlines()[-1].split() == ["user", "bob", "10", "an", "operator", "unlocks", "it"]


def test_unlock_cli_needs_a_target() -> None:
    runner = CliRunner()
    for argv in (["unlock"], ["unlock", "bob", "--all"]):
        result = runner.invoke(cli.main, argv)
        assert result.exit_code == 2 and "--all" in result.output
