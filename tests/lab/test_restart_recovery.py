"""A concentrator killed (SIGKILL) and started again: how long until both lab clients pass traffic again.

The restarted daemon remembers no SA. It answers the clients' ESP with INVALID-SPI and their IKE with
INVALID-COOKIE (rate-limited, unprotected); each client takes that only as a reason to run DPD at once, finds the
concentrator gone, and reconnects by itself. The aim (issue: hold under attack and faults): well under the DPD
interval (30 s in the lab), against about 40 s (DPD interval, then its retries) without the hints.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import Scenario
from natt_daemons.lab.topology import CONC
from tests.lab.test_nat_rebinding import PingStream

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]


@pytest.fixture
def sc() -> Iterator[Scenario]:
    with scenario.seed_lab("rs") as s:
        yield s


def test_clients_pass_traffic_soon_after_a_concentrator_restart(sc: Scenario) -> None:
    streams = {name: PingStream(sc, name, 300) for name in ("client1", "client2")}
    try:
        for s in streams.values():
            s.wait_replies(5, 20.0)
        old = sc.procs["concentrator"]
        t_kill = time.time()
        assert old.signal(signal.SIGKILL)
        assert old.wait(10.0), "the concentrator died"
        old.unregister()
        sc.start_daemon("concentrator", CONC, "natt-concentrator")
        sc.wait_socket("concentrator")
        t_up = time.time()

        def both_back() -> bool:
            return all(s.parse().answered_after(t_up + 0.5) >= 3 for s in streams.values())

        procs.wait_for(both_back, 60.0, 0.2, "both clients' pings answered again")
    finally:
        for s in streams.values():
            s.stop()
    results = {name: s.parse() for name, s in streams.items()}
    recovery = {name: r.recovery(t_kill) for name, r in results.items()}
    status = sc.status("concentrator")
    print(f"\nrestart: concentrator back after {t_up - t_kill:.1f} s; traffic back after "
          + ", ".join(f"{n} {v:.1f} s (lost {len(results[n].lost)}: {results[n].lost_text()})"
                      for n, v in recovery.items() if v is not None)
          + f"; hints sent {status['refusals'].get('recovery-hints-sent', 0)}")
    for name, seconds in recovery.items():
        assert seconds is not None, f"{name}: no reply after the restart"
        assert seconds < 30.0, f"{name}: {seconds:.1f} s, not under the 30 s DPD interval"
    assert status["refusals"].get("recovery-hints-sent", 0) >= 1
    for name in ("client1", "client2"):
        st = sc.status(name)
        assert st["state"] == "connected"
