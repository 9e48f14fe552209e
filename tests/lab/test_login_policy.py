"""One user from both lab clients (the seed's two PCs behind one PAT), under each simultaneous-login setting of
the group (issue: sessions that last): the second login is refused with a reason its user sees, or it replaces
the first, which is told why and does not log back in (no ping-pong). Never a silent kick; one session row."""

from __future__ import annotations

import os
import time

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import ScenarioConfig
from natt_daemons.lab.topology import ADDR, CLIENT1, CLIENT2

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]
SAME_USER = {"username": '"vpnclient1"', "password": '"lab-pass-1"'}


def _rows(sc: scenario.Scenario) -> list[dict]:
    return call(sc.socket("concentrator"), "sessions")["remote_access"]


@pytest.mark.parametrize("action", ["refuse", "replace"])
def test_the_same_user_from_both_clients(action: str) -> None:
    config = ScenarioConfig(concentrator_extra={"max_logins": "1", "login_limit_action": f'"{action}"'},
                            client_extra=SAME_USER)
    with scenario.running(f"lp{action[:2]}", config) as sc:
        sc.start_client("client1")
        first = sc.wait_connected("client1")
        assert first["username"] == "vpnclient1"
        sc.start_client("client2")
        if action == "refuse":
            st = procs.wait_for(lambda: (s := sc.status("client2"))["last_error"] and s, 30.0, 0.2,
                                "client2 refused")
            assert "already has 1 session" in st["last_error"], st["last_error"]
            assert st["state"] != "connected" and st["not_reconnecting"]
            keeper, keeper_role, gone = "client1", CLIENT1, "client2"
        else:
            sc.wait_connected("client2")
            st = procs.wait_for(lambda: (s := sc.status("client1"))["last_error"] and s, 30.0, 0.2,
                                "client1 told it was replaced")
            assert "replaced" in st["last_error"] and st["not_reconnecting"], st
            keeper, keeper_role, gone = "client2", CLIENT2, "client1"
        # A quiet while later: no ping-pong, one row, the keeper's traffic passes, the other still out.
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            rows = _rows(sc)
            assert len(rows) == 1 and rows[0]["username"] == "vpnclient1", rows
            time.sleep(1.0)
        assert sc.status(keeper)["state"] == "connected"
        assert sc.status(gone)["state"] != "connected"
        assert sc.ping(keeper_role, ADDR.server)
        print(f"\n{action}: {gone} says: {sc.status(gone)['last_error']!r}")
