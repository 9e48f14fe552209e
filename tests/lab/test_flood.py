"""A phase 1 flood against the real concentrator (issue: hold under attack and faults).

From the lab's pubclient, one process (tests/flood.py) sends valid-looking Aggressive Mode first messages (the
right group name, a fresh cookie each) from 150 addresses and 300 ports, as fast as it can, for 30 s. Meanwhile:
both lab clients ping the server behind the concentrator; client2 logs out and connects again in the middle of the
flood (a legitimate newcomer must get through call admission); `status` is polled twice a second for its latency,
the half-open gauge, the loop's lateness and the daemon's RSS. At the end, a second burst of flood and SIGTERM:
the daemon must stop promptly. `pytest -s` prints the figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from natt.ike.endpoint import HINTS_PER_SECOND
from natt_daemons.common.control import call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import Scenario
from natt_daemons.lab.topology import ADDR, PUBCLIENT
from tests.lab.test_nat_rebinding import INTERVAL, PingResult, PingStream

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]

REPO = Path(__file__).resolve().parents[2]
FLOOD_SECONDS = 30.0
SOURCES = [f"203.0.113.{100 + i}" for i in range(150)]  # on the public link, beside pubclient's own .20
RSS_BOUND_KIB = 250 * 1024  # the stated bound: 250 MiB (about 70 MiB idle, 2,000 half-open SAs at most)
STATUS_BOUND = 1.0  # seconds for `status` to answer during the flood
LAG_BOUND_MS = 250  # the loop's largest lateness (measured: under 30 ms on 2 cores shared with the flood)
MAX_LOSS = 0.05  # of the pings that were not in client2's own reconnect window
FLOOD_4500_SECONDS = 15.0
MAX_LOSS_4500 = 0.25  # the clients' ESP shares the flooded socket: what the kernel sheds, it sheds of both (below)


class Poller(threading.Thread):
    """`status` of the concentrator twice a second: how long it takes, the gauges it shows, the daemon's RSS."""

    def __init__(self, sc: Scenario, pid: int) -> None:
        super().__init__(daemon=True)
        self.sc, self.pid = sc, pid
        self.samples: list[dict[str, float]] = []
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t = time.monotonic()
            try:
                st = call(self.sc.socket("concentrator"), "status")
                took = time.monotonic() - t
                self.samples.append({"t": time.time(), "took": took, "half_open": st["half_open"],
                                     "lag_ms": st["loop_lag_ms"]["recent_max"], "rss_kib": _rss_kib(self.pid)})
            except Exception as e:  # counted: a status that fails during the flood is a finding, not a crash
                self.failures.append(f"{time.monotonic() - t:.2f}s {e}")
            self.halt.wait(0.5)


def _loss(r: PingResult, skip: tuple[float, float] | None = None) -> tuple[float, int, int]:
    """(loss ratio, lost, counted) of a stream; with `skip`, pings sent in that wall-clock window are not counted
    (send times estimated from the replies: seq n leaves at start + (n - 1) x INTERVAL)."""
    if not r.replies:
        return 1.0, r.transmitted, r.transmitted
    start = min(t - (seq - 1) * INTERVAL for seq, t in r.replies.items())
    seqs = [n for n in range(1, r.transmitted + 1)
            if skip is None or not skip[0] <= start + (n - 1) * INTERVAL <= skip[1]]
    lost = sum(1 for n in seqs if n not in r.replies)
    return lost / max(1, len(seqs)), lost, len(seqs)


@dataclass
class Watch:
    """What a flood test watches while it floods: both clients' ping streams and the `status` poller; `results`
    (the parsed streams) once the watch is over."""

    poller: Poller
    results: dict[str, PingResult] = field(default_factory=dict)

    def responsive(self) -> tuple[list[float], int]:
        """(each `status`'s latency, the loop's largest lateness in the polled windows)."""
        return [x["took"] for x in self.poller.samples], max(int(x["lag_ms"]) for x in self.poller.samples)

    def assert_responsive(self) -> None:
        took, lag_max = self.responsive()
        assert not self.poller.failures, self.poller.failures
        assert max(took) < STATUS_BOUND
        assert lag_max < LAG_BOUND_MS, "one job held the event loop too long"


@contextlib.contextmanager
def watched(sc: Scenario, ping_seconds: float) -> Iterator[Watch]:
    """Both clients ping the server (every INTERVAL, for `ping_seconds`) and `status` is polled, from before the
    body (5 answers each first) until after it."""
    streams = {name: PingStream(sc, name, int(ping_seconds / INTERVAL)) for name in ("client1", "client2")}
    watch = Watch(Poller(sc, sc.procs["concentrator"].pid))
    try:
        for s in streams.values():
            s.wait_replies(5, 20.0)
        watch.poller.start()
        yield watch
    finally:
        watch.poller.halt.set()
        for s in streams.values():
            s.stop()
    watch.poller.join(5)
    watch.results = {name: s.parse() for name, s in streams.items()}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _flood(sc: Scenario, seconds: float, port: int = 500, kind: str = "ike") -> dict[str, object]:
    argv = [sys.executable, "-m", "tests.flood", "--peer", ADDR.conc_public, "--seconds", str(seconds),
            "--port", str(port), "--kind", kind]
    for s in SOURCES:
        argv += ["--source", s]
    r = sc.lab.run(PUBCLIENT, argv, cwd=str(REPO), timeout=seconds + 30)
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sc() -> Iterator[Scenario]:
    with scenario.seed_lab("fl") as s:
        for src in SOURCES:
            s.lab.run(PUBCLIENT, ["ip", "addr", "add", f"{src}/24", "dev", "eth0"])
        yield s


def test_flood_of_first_messages_leaves_the_tunnels_and_the_daemon_usable(sc: Scenario) -> None:
    rss_before = _rss_kib(sc.procs["concentrator"].pid)
    reconnect: dict[str, float] = {}
    resent: list[str] = []

    def newcomer() -> None:
        # In the middle of the flood client2 logs out and connects again: a fresh negotiation from the PAT.
        time.sleep(FLOOD_SECONDS / 3)
        reconnect["out"] = time.time()
        seq = max((e["seq"] for e in call(sc.socket("client2"), "log")), default=0)
        call(sc.socket("client2"), "disconnect")
        call(sc.socket("client2"), "connect")
        sc.wait_connected("client2", timeout=FLOOD_SECONDS)
        reconnect["in"] = time.time()
        resent.extend(f"{e['fields'].get('what')}#{e['fields'].get('attempt')}"
                      for e in call(sc.socket("client2"), "log", {"since": seq})
                      if e["seq"] > seq and e["name"] == "RESENDING")

    with watched(sc, FLOOD_SECONDS + 25) as watch:
        mover = threading.Thread(target=newcomer, daemon=True)
        t0 = time.time()
        mover.start()
        flood = _flood(sc, FLOOD_SECONDS)
        t1 = time.time()
        mover.join(FLOOD_SECONDS)
        time.sleep(8.0)  # after the flood: the half-open SAs drain, pings go on
    poller, results = watch.poller, watch.results
    status = sc.status("concentrator")
    log = call(sc.socket("concentrator"), "log", {"severity": [1, 13]})
    overload = [e for e in log if e.get("name") == "IKE_OVERLOAD"]
    shed = {k: v for k, v in status["refusals"].items() if k.startswith(("admission", "half-open"))}
    handled = sum(shed.values())
    took, lag_max = watch.responsive()
    rss_max = max(s["rss_kib"] for s in poller.samples)
    half_open_max = max(s["half_open"] for s in poller.samples)
    loss1 = _loss(results["client1"])
    out, back = reconnect.get("out"), reconnect.get("in")
    outside = _loss(results["client2"], (out - 1.0, back + 2.0)) if out and back else None
    print(f"\nflood: {flood}")
    print(f"concentrator handled {handled} first messages in {t1 - t0:.1f} s ({handled / (t1 - t0):.0f}/s) and "
          f"dropped them before any DH: {shed}; the kernel dropped the rest "
          f"({int(flood['sent']) - handled} of {flood['sent']})")
    print(f"admitted (DH done): {status['refusals'].get('half-open-evicted', 0)} evicted, half-open max "
          f"{half_open_max}, now {status['half_open']}")
    print(f"status answered {len(took)} times, max {max(took) * 1000:.0f} ms, failures {poller.failures}; loop lag "
          f"max {lag_max} ms (recent windows), since start {status['loop_lag_ms']['max']} ms")
    print(f"RSS before {rss_before // 1024} MiB, max {rss_max // 1024} MiB (bound {RSS_BOUND_KIB // 1024} MiB)")
    print(f"client1 pings: loss {loss1[0]:.1%} ({loss1[1]} of {loss1[2]}, lost {results['client1'].lost_text()}); "
          f"client2 reconnect took {(back - out) if out and back else float('nan'):.1f} s (resent {resent}), loss "
          f"outside it {outside}")
    print(f"overload log lines: {len(overload)}; log entries in all: {len(log)}; "
          f"first: {overload[0]['text'] if overload else None}")
    watch.assert_responsive()
    assert rss_max < RSS_BOUND_KIB
    assert half_open_max <= 2000
    assert back is not None, "client2 did not connect again during the flood"
    assert back - out < 15.0, "a newcomer waited more than a few retransmission intervals"
    assert loss1[0] <= MAX_LOSS, results["client1"].lost_text()
    assert outside is not None and outside[0] <= MAX_LOSS, results["client2"].lost_text()
    assert 2 <= len(overload) <= int(FLOOD_SECONDS / 10) + 3, [e["text"] for e in overload]
    assert handled > 10_000, "the flood did not reach the concentrator"


@pytest.mark.parametrize("kind", ["ike", "esp"])
def test_a_flood_on_udp_4500_leaves_the_sessions_up(sc: Scenario, kind: str) -> None:
    """UDP 4500 is the NAT-T clients' own port: their ESP and IKE share the concentrator's socket with the flood, so
    what the kernel sheds there it sheds of both. Aggressive Mode first messages behind the non-ESP marker (call
    admission sheds them as on 500), or ESP for SPIs nobody has (each costs a dictionary miss; one INVALID-SPI
    hint per source a second at most, HINTS_PER_SECOND in all). Measured and bounded: the loop stays responsive,
    the sessions stay up, the hints stay bounded, and the pings lost are reported."""
    before = sc.status("concentrator")
    sessions = {n: sc.status(n)["ike"]["sa_id"] for n in ("client1", "client2")}
    with watched(sc, FLOOD_4500_SECONDS + 10) as watch:
        t0 = time.time()
        flood = _flood(sc, FLOOD_4500_SECONDS, port=4500, kind=kind)
        t1 = time.time()
        time.sleep(5.0)
    results = watch.results
    after = sc.status("concentrator")

    def moved(key: str) -> dict[str, int]:
        return {k: v - before[key].get(k, 0) for k, v in after[key].items() if v != before[key].get(k, 0)}

    drops, refusals = moved("datapath_drops"), moved("refusals")
    took, lag_max = watch.responsive()
    loss = {n: _loss(r) for n, r in results.items()}
    hints = refusals.get("recovery-hints-sent", 0)
    print(f"\n4500 flood ({kind}): {flood}")
    print(f"concentrator: data path drops {drops}; IKE counters {refusals}; IKE read from 4500 "
          f"{after['ike_reads']['shared_4500'] - before['ike_reads']['shared_4500']}, shed unread "
          f"{after['ike_reads']['shed_4500'] - before['ike_reads']['shed_4500']}")
    print(f"status answered {len(took)} times, max {max(took) * 1000:.0f} ms; loop lag max {lag_max} ms")
    print("pings: " + "; ".join(f"{n} loss {v[0]:.1%} ({v[1]} of {v[2]})" for n, v in loss.items()))
    watch.assert_responsive()
    for n, sa_id in sessions.items():
        st = sc.status(n)
        assert st["state"] == "connected" and st["ike"]["sa_id"] == sa_id, (n, st["state"], st.get("last_error"))
    assert hints <= (t1 - t0 + 6) * HINTS_PER_SECOND, hints
    if kind == "esp":
        assert drops.get("unknown-spi", 0) > 10_000, "the flood did not reach the concentrator"
    else:  # shed by call admission, or unread within the 4500 budget (most of it, when the cores are busy)
        shed_unread = after["ike_reads"]["shed_4500"] - before["ike_reads"]["shed_4500"]
        assert sum(v for k, v in refusals.items() if k.startswith(("admission", "half-open"))) + shed_unread > 10_000
    for n, (ratio, _, _) in loss.items():
        assert ratio <= MAX_LOSS_4500, (n, results[n].lost_text())


def test_sigterm_is_answered_during_a_flood(sc: Scenario) -> None:
    proc = sc.procs["concentrator"]
    flood: dict[str, object] = {}
    th = threading.Thread(target=lambda: flood.update(_flood(sc, 10.0)), daemon=True)
    th.start()
    time.sleep(3.0)
    t = time.monotonic()
    assert proc.signal(signal.SIGTERM)
    stopped = proc.wait(10.0)
    took = time.monotonic() - t
    th.join(20)
    print(f"\nSIGTERM during a flood ({flood.get('rate')} first messages/s): stopped in {took:.2f} s")
    assert stopped, "the concentrator did not stop within 10 s of SIGTERM"
    assert took < 5.0
    assert "stopped" in proc.log()
    procs.wait_for(lambda: not Path(sc.socket("concentrator")).exists(), 5.0, 0.1, "control socket removed")
