"""Connecting over a lossy link (issue: hold under attack and faults): 20 % and 40 % loss on the PAT's outside link.

The kernel here has no netem, so the loss is an nftables table of our own in the PAT namespace (`inet natt_loss`,
next to natt-pat's `ip natt_pat`, never inside it): on the forward hook, `numgen random mod 100 < N drop` for what
comes in on "outside" and for what leaves by it, so every IKE message, NAT keepalive and ESP packet between the
clients and the concentrator is dropped with probability N % in each direction.

At each level both lab clients, ten rounds, in parallel: `disconnect`, then `connect` (a new login: Aggressive Mode,
XAUTH, Mode Config, Quick Modes; the DELETE of the old session crosses the same lossy link), and the time until the
client is connected (an IPsec SA up) and until one ping to the server behind the concentrator is answered through
the tunnel. `pytest -s` prints the distributions, the retransmissions each connect needed (the client's `stats`,
and what its event log says it resent), automatic reconnects, and any connect the test had to start again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from natt_daemons.common.control import ControlError, call
from natt_daemons.lab import scenario
from natt_daemons.lab.scenario import Scenario
from natt_daemons.lab.topology import ADDR, CLIENT1, CLIENT2, IFACE, PAT

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft command (nftables)"),
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs iputils ping"),
]

ROLES = {"client1": CLIENT1, "client2": CLIENT2}
USERS = {"client1": "vpnclient1", "client2": "vpnclient2"}
LOSS_TABLE = "natt_loss"  # ours, family inet; natt-pat's own table is `ip natt_pat`
LEVELS = (20, 40)  # % dropped in each direction on the PAT's outside link
ROUNDS = 10
CONNECT_BOUND = {20: 60.0, 40: 90.0}  # seconds: every connect must be up (and answer a ping) within this
MEDIAN_BOUND = {20: 15.0, 40: 30.0}  # seconds, on the median of the ten rounds x two clients
PING_DEADLINE = 20.0  # seconds of pinging (every 0.2 s) for the first answer once connected


def loss_ruleset(percent: int) -> str:
    """Our table, for `nft -f -`: the same random drop in both directions of the outside link (forwarded traffic:
    the PAT terminates nothing of the VPN's)."""
    out = IFACE.pat_outside
    return (f"table inet {LOSS_TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority -10; policy accept;\n"
            f'    iifname "{out}" numgen random mod 100 < {percent} counter drop comment "loss-in"\n'
            f'    oifname "{out}" numgen random mod 100 < {percent} counter drop comment "loss-out"\n'
            "  }\n"
            "}\n")


def set_loss(sc: Scenario, percent: int | None) -> None:
    """Install (or replace) the loss table with `percent`, or remove it (None)."""
    if percent is None:
        r = sc.lab.run(PAT, ["nft", "delete", "table", "inet", LOSS_TABLE])
        assert r.returncode == 0 or "No such file" in r.stderr, r.stderr
        return
    r = sc.lab.run(PAT, ["nft", "-f", "-"], input=f"table inet {LOSS_TABLE}\ndelete table inet {LOSS_TABLE}\n"
                   + loss_ruleset(percent), stdin=None)
    assert r.returncode == 0, r.stderr


def loss_counters(sc: Scenario) -> dict[str, int]:
    """Packets each of our two rules dropped: {"loss-in": n, "loss-out": n}."""
    r = sc.lab.run(PAT, ["nft", "list", "table", "inet", LOSS_TABLE])
    counts: dict[str, int] = {}
    for line in r.stdout.splitlines():
        if "comment" in line and "packets" in line:
            words = line.split()
            counts[line.rsplit('"', 2)[-2]] = int(words[words.index("packets") + 1])
    return counts


@dataclass
class Connect:
    """One client's disconnect + connect in a round, as measured."""

    name: str
    level: int
    round: int
    connected: float | None = None  # seconds from `connect` until the client had an IPsec SA up
    traffic: float | None = None  # ... until a ping through the tunnel was answered
    retransmissions: int = 0  # the client's IKE retransmissions during this connect (stats delta)
    resent: list[str] = field(default_factory=list)  # what the client's log says it resent
    auto_reconnects: int = 0  # sessions the client itself started again (its `reconnects` counter)
    restarts: list[str] = field(default_factory=list)  # connects the test had to ask for again, and why
    errors: list[str] = field(default_factory=list)  # the client's last_error values seen on the way


def _stats(sc: Scenario, name: str) -> dict[str, Any]:
    return call(sc.socket(name), "stats")


def _last_seq(sc: Scenario, name: str) -> int:
    log = call(sc.socket(name), "log")
    return max((e["seq"] for e in log), default=0)


def measure_connect(sc: Scenario, name: str, level: int, rnd: int, bound: float) -> Connect:
    """disconnect, connect, then wait (at most `bound` s in all) until connected and one ping is answered."""
    m = Connect(name, level, rnd)
    sock = sc.socket(name)
    before = _stats(sc, name)
    seq = _last_seq(sc, name)
    reconnects0 = call(sock, "status")["reconnects"]
    with contextlib.suppress(ControlError):  # already disconnected (a round before ended badly): connect anyway
        call(sock, "disconnect")
    t0 = time.monotonic()
    call(sock, "connect")
    deadline = t0 + bound
    while time.monotonic() < deadline:
        st = call(sock, "status")
        if st.get("last_error") and st["last_error"] not in m.errors:
            m.errors.append(st["last_error"])
        if st["state"] == "connected" and st.get("ipsec"):
            m.connected = time.monotonic() - t0
            break
        if st["state"] == "disconnected":
            # The client gave up by itself and will not reconnect (a refusal): we ask again, and say so.
            m.restarts.append(f"{time.monotonic() - t0:.1f}s: {st.get('not_reconnecting') or st.get('last_error')}")
            call(sock, "connect")
        time.sleep(0.1)
    if m.connected is not None:
        wait = max(1, int(min(PING_DEADLINE, deadline - time.monotonic())))
        r = sc.lab.run(ROLES[name], ["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-W", "1", "-w", str(wait),
                                     ADDR.server], timeout=wait + 10)
        if r.returncode == 0:
            m.traffic = time.monotonic() - t0
    after = _stats(sc, name)
    m.retransmissions = after["ike"]["retransmissions"] - before["ike"]["retransmissions"]
    m.auto_reconnects = call(sock, "status")["reconnects"] - reconnects0
    m.resent = [f"{e['fields'].get('what')}#{e['fields'].get('attempt')}"
                for e in call(sock, "log", {"since": seq}) if e["name"] == "RESENDING" and e["seq"] > seq]
    return m


def _pct(values: list[float], p: float) -> float:
    """The p-th percentile, nearest rank (what a reader can check by counting in the sorted list)."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))]


def distribution(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"min {min(values):.1f} / median {statistics.median(values):.1f} / p90 {_pct(values, 90):.1f} / "
            f"max {max(values):.1f} s; sorted: {', '.join(f'{v:.1f}' for v in sorted(values))}")


@pytest.fixture(scope="module")
def sc() -> Iterator[Scenario]:
    with scenario.seed_lab("ll") as s:
        yield s


def _concentrator_sessions(sc: Scenario) -> dict[str, int]:
    rows = call(sc.socket("concentrator"), "sessions")
    rows = rows["remote_access"] if isinstance(rows, dict) else rows
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["username"]] = counts.get(row["username"], 0) + 1
    return counts


@pytest.mark.parametrize("level", LEVELS)
def test_connects_over_a_lossy_outside_link(sc: Scenario, level: int) -> None:
    bound = CONNECT_BOUND[level]
    results: list[Connect] = []
    stale: list[str] = []
    conc_before = sc.status("concentrator")
    set_loss(sc, level)
    t_start = time.monotonic()
    try:
        for rnd in range(1, ROUNDS + 1):
            got: dict[str, Connect] = {}
            failed: list[BaseException] = []

            def one(name: str, rnd: int = rnd, got: dict[str, Connect] = got,
                    failed: list[BaseException] = failed) -> None:
                try:
                    got[name] = measure_connect(sc, name, level, rnd, bound)
                except BaseException as e:  # reported below; a thread's exception would be lost
                    failed.append(e)

            threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in ROLES]
            for t in threads:
                t.start()
            for t in threads:
                t.join(bound + 40)
            assert not failed, failed
            results += [got[n] for n in ROLES if n in got]
            counts = _concentrator_sessions(sc)
            if any(v > 1 for v in counts.values()):
                stale.append(f"round {rnd}: {counts}")
        drops = loss_counters(sc)
    finally:
        set_loss(sc, None)
    took = time.monotonic() - t_start
    conc = sc.status("concentrator")
    refusals = {k: v - conc_before["refusals"].get(k, 0) for k, v in conc["refusals"].items()
                if v != conc_before["refusals"].get(k, 0)}
    conc_retx = conc["retransmissions"]["sent"] - conc_before["retransmissions"]["sent"]
    conc_answered = conc["retransmissions"]["answered"] - conc_before["retransmissions"]["answered"]

    connected = [m.connected for m in results if m.connected is not None]
    traffic = [m.traffic for m in results if m.traffic is not None]
    print(f"\n== {level} % loss each way on the PAT's outside link: {ROUNDS} rounds x 2 clients in {took:.0f} s; "
          f"dropped by the rule: {drops}")
    print(f"connected (IPsec SA up): {distribution(connected)}")
    print(f"first ping answered:     {distribution(traffic)}")
    retx = [m.retransmissions for m in results]
    print(f"client IKE retransmissions per connect: {retx} (sum {sum(retx)}); concentrator: {conc_retx} resent by "
          f"its timers, {conc_answered} retransmitted requests answered from its cache; its refusals: {refusals}")
    for m in results:
        extra = []
        if m.auto_reconnects:
            extra.append(f"auto reconnects {m.auto_reconnects}")
        if m.restarts:
            extra.append(f"connect asked again: {m.restarts}")
        if m.errors:
            extra.append(f"errors: {m.errors}")
        print(f"  r{m.round:02d} {m.name}: connected {m.connected if m.connected is None else round(m.connected, 1)}"
              f" s, ping {m.traffic if m.traffic is None else round(m.traffic, 1)} s, resent {m.resent}"
              + (f"; {'; '.join(extra)}" if extra else ""))
    if stale:
        print(f"concentrator held more than one session for a user after: {stale}")

    assert len(results) == 2 * ROUNDS
    late = [(m.round, m.name, m.connected, m.restarts, m.errors) for m in results if m.traffic is None]
    assert not late, f"connects not passing traffic within {bound:.0f} s: {late}"
    assert statistics.median(traffic) < MEDIAN_BOUND[level], distribution(traffic)
    assert all(not m.restarts for m in results), [(m.round, m.name, m.restarts) for m in results if m.restarts]
    assert sum(drops.values()) > 0, "the loss rule dropped nothing"
