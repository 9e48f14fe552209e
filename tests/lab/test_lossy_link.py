"""Connecting over a lossy link (issue: hold under attack and faults): 20 % and 40 % loss on the PAT's outside link.

The kernel here has no netem, so the loss is an nftables table of our own in the PAT namespace (`inet natt_loss`,
next to natt-pat's `ip natt_pat`, never inside it): on the forward hook, `numgen random mod 100 < N drop` for what
comes in on "outside" and for what leaves by it, so every IKE message, NAT keepalive and ESP packet between the
clients and the concentrator is dropped with probability N % in each direction.

At each level both lab clients at the same time, each ten times in a row: `disconnect`, then `connect` (a new login:
Aggressive Mode, XAUTH, Mode Config, Quick Modes; the DELETE of the old session crosses the same lossy link), and the
time until the client is connected (an IPsec SA up) and until one ping to the server behind the concentrator is
answered through the tunnel. `pytest -s` prints the distributions, the retransmissions each connect needed (the
client's status counters, and what its event log says it resent), automatic reconnects with the reason each failed
attempt ended, and any connect the test had to start again.

What it found (issue 12), each fixed in the core with a protocol test of its own: resends too few and too far apart
(2, 4, 8, 16 s); the reply cache answering a copy at the wrong port; a set-up Quick Mode lost ten times never tried
again (test_setup_quick_mode_retry); a lost HASH(3) leaving the client sending into a pair the concentrator did not
have, for good if every answer to its resends was lost too: "connected", no traffic (test_lost_hash3); a lost
Aggressive Mode message 3 whose recovery rested on the concentrator's five resends of message 2 (test_lost_am3);
and, on busy CI machines, a client "connected" at its first pair while its routes were still being made: this
test's ping left by the default route, drew a Destination Net Unreachable from outside and ended at once
(the client now says "connected" only with every tunnel and route in place: test_client_sessions). When a connect
passes no traffic, the failure shows what both sides held for it, the kernel's routes and the ping's own output.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import threading
import time
from collections import Counter
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
LOSS_TABLE = "natt_loss"  # ours, family inet; natt-pat's own table is `ip natt_pat`
LEVELS = (20, 40)  # % dropped in each direction on the PAT's outside link
ROUNDS = 10
# Seconds: every connect must be up, and answer a ping, within this. At 40 % a round trip gets through 36 % of the
# time; a connect whose phase 1 fails (XAUTH or Mode Config not done within 30 s) starts again by itself, after 1 s.
CONNECT_BOUND = {20: 60.0, 40: 120.0}
# Seconds, on the median of the twenty connects until the first ping answer (one that failed counts as endless): the
# aim, "within a few retransmission intervals" (resends are at most 3 s apart). Measured on 2026-11-29, before and
# after each fix: at 20 %, median 4.1 to 12.4 s; at 40 %, 7 to 11 of 20 connects passed traffic within 60 s, then a
# median of 20.6 s, max 50.8 s; with HASH(3) committed by ESP and AM3 resent by the client, 15.3 s and 22.5 s.
MEDIAN_BOUND = {20: 10.0, 40: 30.0}
PING_DEADLINE = 30.0  # seconds of pinging (every 0.2 s) for the first answer once connected


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
    retransmissions: int = 0  # IKE messages the client's timers resent during this connect
    answered: int = 0  # the concentrator's resent requests the client answered from its reply cache
    resent: list[str] = field(default_factory=list)  # what the client's log says it resent
    auto_reconnects: int = 0  # sessions the client itself started again (its `reconnects` counter)
    restarts: list[str] = field(default_factory=list)  # connects the test had to ask for again, and why
    errors: list[str] = field(default_factory=list)  # the client's last_error values seen on the way
    causes: list[str] = field(default_factory=list)  # why an attempt ended, read from the client's log
    black_hole: dict[str, Any] = field(default_factory=dict)  # connected, no ping answered: both sides' SAs then


def _last_seq(sc: Scenario, name: str) -> int:
    log = call(sc.socket(name), "log")
    return max((e["seq"] for e in log), default=0)


def measure_connect(sc: Scenario, name: str, level: int, rnd: int, bound: float) -> Connect:
    """disconnect, connect, then wait (at most `bound` s in all) until connected and one ping is answered."""
    m = Connect(name, level, rnd)
    sock = sc.socket(name)
    seq = _last_seq(sc, name)
    before = call(sock, "status")
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
        t_ping = time.monotonic()
        r = sc.lab.run(ROLES[name], ["ping", "-n", "-c", "1", "-i", "0.2", "-W", "1", "-w", str(wait),
                                     ADDR.server], timeout=wait + 10)
        if r.returncode == 0:
            m.traffic = time.monotonic() - t0
        else:
            m.black_hole = {"ping": f"exit {r.returncode} after {time.monotonic() - t_ping:.1f} s: "
                                    f"{(r.stdout + r.stderr).strip().splitlines()[-4:]}", **black_hole(sc, name)}
    after = call(sock, "status")
    m.retransmissions = after["retransmissions"]["sent"] - before["retransmissions"]["sent"]
    m.answered = after["retransmissions"]["answered"] - before["retransmissions"]["answered"]
    m.auto_reconnects = after["reconnects"] - before["reconnects"]
    entries = [e for e in call(sock, "log", {"since": seq}) if e["seq"] > seq]
    m.resent = [f"{e['fields'].get('what')}#{e['fields'].get('attempt')}" for e in entries if e["name"] == "RESENDING"]
    m.causes = attempt_causes(entries)
    return m


USERS = {"client1": "vpnclient1", "client2": "vpnclient2"}


def black_hole(sc: Scenario, name: str) -> dict[str, Any]:
    """A client connected whose pings got no answer: what each side holds for it, to tell where packets stop."""
    st = call(sc.socket(name), "status")
    rows = call(sc.socket("concentrator"), "session", {"user": USERS[name]})
    return {
        "client": {"state": st["state"], "address": st["assigned_address"], "routes": st.get("routes"),
                   "routes_missing": st.get("routes_missing"), "network_errors": st.get("network_errors"),
                   "drops": st.get("datapath_drops"),
                   "ipsec": [(c["local"], c["remote"], c["inbound_spi"], c["outbound_spi"], c["packets_encrypted"],
                              c["packets_decrypted"]) for c in st.get("ipsec", [])]},
        "concentrator": [{"ipsec": [(c["local_address"], c["remote_address"], c["inbound_spi"], c["outbound_spi"],
                                     c["packets_received"], c["packets_transmitted"], c["replaced"])
                                    for c in r.get("ipsec", [])],
                          "ike_sas": r.get("ike_sas")} for r in rows],
        "concentrator_drops": sc.status("concentrator").get("datapath_drops"),
        # What the kernel of the client's namespace holds: its routes, the TUN's address and packet counters.
        "kernel": [sc.lab.run(ROLES[name], cmd).stdout.strip() for cmd in
                   (["ip", "-4", "route", "show"], ["ip", "-4", "-o", "addr", "show"],
                    ["ip", "-s", "-o", "link", "show", "type", "tun"])],
        "tun_packets": st.get("datapath", {}).get("tun_packets"),
        # The client daemon's own log: what its netlink worker did with the address and routes.
        "client_log": [line for line in sc.procs[name].log().splitlines()
                       if any(w in line for w in ("network", "route", "Traceback", "rror", "TUN"))][-15:],
    }


def attempt_causes(entries: list[dict[str, Any]]) -> list[str]:
    """For each attempt in a client's log that ended before it was connected: which message it waited for."""
    causes: list[str] = []
    got_am2 = got_trans = False
    modecfg_sent = 0
    for e in entries:
        name, f = e["name"], e["fields"]
        if name == "IKE_ATTEMPT":
            got_am2 = got_trans = False
            modecfg_sent = 0
        elif name == "ISAKMP_RECEIVING":
            got_am2 |= str(f.get("exchange", "")).endswith(" AG")
            got_trans |= str(f.get("exchange", "")).endswith(" TRANS")
        elif name == "RESENDING" and str(f.get("what", "")).startswith("Mode Config"):
            modecfg_sent += 1
        elif name == "CONNECTION_TERMINATED":
            reason = str(f.get("reason", ""))
            if reason.startswith("phase 1 not completed"):
                causes.append("phase 1: AM1 never answered" if not got_am2 else
                              "phase 1: AM3 sent, no XAUTH request ever came (AM3 lost; the concentrator gave up)"
                              if not got_trans else "phase 1: XAUTH not done within 30 s")
            elif reason.startswith("Mode Config not completed"):
                causes.append(f"Mode Config: no reply within 30 s ({modecfg_sent + 1} requests sent)")
            elif reason != "user request":
                causes.append(reason)
    return causes


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


def _replaced_by_initial_contact(sc: Scenario, since: int) -> list[str]:
    """The concentrator's log since `since`: sessions a new login's INITIAL-CONTACT replaced (their DELETE from the
    client was lost on the way)."""
    log = call(sc.socket("concentrator"), "log", {"since": since, "severity": [1, 5]})
    return [e["text"].splitlines()[-1] for e in log if e["name"] == "IKE_SA_DELETED" and "INITIAL-CONTACT" in e["text"]]


def _client_rounds(sc: Scenario, name: str, level: int, out: list[Connect], failed: list[BaseException]) -> None:
    """One client's ten connects, back to back (the other client does the same at the same time)."""
    try:
        for rnd in range(1, ROUNDS + 1):
            out.append(measure_connect(sc, name, level, rnd, CONNECT_BOUND[level]))
    except BaseException as e:  # reported by the test; a thread's exception would be lost
        failed.append(e)


@pytest.mark.parametrize("level", LEVELS)
def test_connects_over_a_lossy_outside_link(sc: Scenario, level: int) -> None:
    results: dict[str, list[Connect]] = {n: [] for n in ROLES}
    failed: list[BaseException] = []
    conc_before = sc.status("concentrator")
    conc_seq = _last_seq(sc, "concentrator")
    clients_before = {n: call(sc.socket(n), "stats")["ike"]["refusals"] for n in ROLES}
    set_loss(sc, level)
    t_start = time.monotonic()
    try:
        threads = [threading.Thread(target=_client_rounds, args=(sc, n, level, results[n], failed), daemon=True)
                   for n in ROLES]
        for t in threads:
            t.start()
        for t in threads:
            t.join(ROUNDS * (CONNECT_BOUND[level] + 30))
        drops = loss_counters(sc)
    finally:
        set_loss(sc, None)
    took = time.monotonic() - t_start
    assert not failed, failed
    conc = sc.status("concentrator")
    refusals = {k: v - conc_before["refusals"].get(k, 0) for k, v in conc["refusals"].items()
                if v != conc_before["refusals"].get(k, 0)}
    conc_retx = conc["retransmissions"]["sent"] - conc_before["retransmissions"]["sent"]
    conc_answered = conc["retransmissions"]["answered"] - conc_before["retransmissions"]["answered"]
    replaced = _replaced_by_initial_contact(sc, conc_seq)

    every = [m for n in ROLES for m in results[n]]
    connected = [m.connected for m in every if m.connected is not None]
    traffic = [m.traffic for m in every if m.traffic is not None]
    print(f"\n== {level} % loss each way on the PAT's outside link: {ROUNDS} connects x 2 clients in {took:.0f} s; "
          f"dropped by the rule: {drops}")
    print(f"connected (IPsec SA up), {len(connected)} of {len(every)}: {distribution(connected)}")
    print(f"first ping answered,     {len(traffic)} of {len(every)}: {distribution(traffic)}")
    retx = [m.retransmissions for m in every]
    print(f"client IKE retransmissions per connect: {retx} (sum {sum(retx)}), and {sum(m.answered for m in every)} "
          f"resent requests of the concentrator answered from its cache; concentrator: {conc_retx} resent by its "
          f"timers, {conc_answered} resent requests answered from its cache")
    print(f"concentrator counters moved: {refusals}")
    for n in ROLES:
        now = call(sc.socket(n), "stats")["ike"]["refusals"]
        print(f"{n} IKE core counters moved: "
              f"{ {k: v - clients_before[n].get(k, 0) for k, v in now.items() if v != clients_before[n].get(k, 0)} }")
    causes = [c for m in every for c in m.causes]
    print(f"attempts that ended unconnected: {len(causes)}: "
          + ", ".join(f"{n} x {c}" for c, n in sorted(Counter(causes).items(), key=lambda kv: -kv[1])))
    print(f"old sessions replaced by the new login's INITIAL-CONTACT (the client's DELETE was lost): {len(replaced)}")
    for m in every:
        extra = []
        if m.auto_reconnects:
            extra.append(f"auto reconnects {m.auto_reconnects}")
        if m.restarts:
            extra.append(f"connect asked again: {m.restarts}")
        if m.causes:
            extra.append(f"attempts ended: {m.causes}")
        if m.black_hole:
            extra.append(f"NO TRAFFIC; then: {m.black_hole}")
        print(f"  {m.name} #{m.round:02d}: connected {_s(m.connected)}, ping {_s(m.traffic)}; resent {m.resent}"
              + (f"; {'; '.join(extra)}" if extra else ""))

    assert all(len(r) == ROUNDS for r in results.values()), {n: len(r) for n, r in results.items()}
    assert sum(drops.values()) > 0, "the loss rule dropped nothing"
    assert not any(m.restarts for m in every), [(m.name, m.round, m.restarts) for m in every if m.restarts]
    assert refusals.get("login-limit-refused", 0) == 0, refusals
    late = [(m.name, m.round, _s(m.connected), m.errors, m.black_hole) for m in every if m.traffic is None]
    assert not late, f"connects not passing traffic within {CONNECT_BOUND[level]:.0f} s: {late}"
    times = [m.traffic if m.traffic is not None else math.inf for m in every]
    assert statistics.median(times) < MEDIAN_BOUND[level], distribution(traffic)


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"
