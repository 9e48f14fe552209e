"""The live fuzz run against the real concentrator (issue: hold under attack and faults).

Both lab clients ping the server behind the concentrator the whole time. First, a few seconds of their real
traffic with the concentrator are captured on its public interface (tests/fuzz/livecap.py), while both clients
rekey their IPsec SAs (so that the capture holds IKE messages of the live IKE SAs, not only ESP). Then, from
pubclient, one process (tests/fuzz/live.py) sends FUZZ_RATE mutated datagrams a second for FUZZ_SECONDS: IKE to
UDP 500, IKE behind the non-ESP marker to 4500, datagrams without the marker to 4500, ESP on 4500 carrying the
LIVE inbound SPIs of both clients' child SAs (read from the concentrator's `session USER` view) with garbage
bodies, the captured ESP replayed as it was and mutated, and the captured IKE messages (live cookies) replayed
and mutated. `status` is polled twice a second meanwhile.

It must leave: both clients' pings intact (loss <= MAX_LOSS), both sessions with their SPI pairs (or rekeyed
normally, as the clients count it) and their public address and port (a replayed authenticated message from
elsewhere moves no peer), the concentrator alive with `status` answering within a second, no Python traceback in
its log file, and the logs bounded:

- the event log (every severity; lab config log_rate_limit = R = 20 entries/s per event class/id, bursts of 5 R,
  repeats summed up every 10 s): each event writes at most R x T + 5 R + T / 10 + 2 entries in a window of T s,
  and all of them together at most EVENT_LOG_BOUND entries a second on average over the fuzz and its tail;
- the daemon's log file (stderr: event log entries of severity <= 5, plus Python logging): each event's lines
  within the same per-event bound, and at most LOG_FILE_BOUND lines a second in all.

`pytest -s` prints the figures. Every datagram sent is recorded in the run directory (tests.fuzz.live --record);
on a finding the record is copied to fuzz/ (git-ignored) and its path printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import Scenario
from natt_daemons.lab.topology import ADDR, CONC, IFACE, PUBCLIENT
from tests.fuzz.live import KINDS
from tests.lab.test_flood import Poller, _rss_kib
from tests.lab.test_nat_rebinding import INTERVAL, PingStream

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs iputils ping (timestamps, -O)"),
]

REPO = Path(__file__).resolve().parents[2]
USERS = {"client1": "vpnclient1", "client2": "vpnclient2"}
FUZZ_SECONDS = 30.0
FUZZ_RATE = 3000  # datagrams a second: "a few thousand"
FUZZ_SEED = 12
CAPTURE_SECONDS = 6.0  # the clients rekey 1.5 s into it
TAIL_SECONDS = 11.0  # after the fuzz: pings go on, held log repeats are summed up (every 10 s)
MAX_LOSS = 0.02
STATUS_BOUND = 1.0  # seconds for `status` to answer during the fuzz
RATE_LIMIT = 20.0  # configs/concentrator.toml log_rate_limit (checked against the daemon's settings below)
EVENT_LOG_BOUND = 150.0  # event-log entries a second, all events together, over the fuzz and its tail
LOG_FILE_BOUND = 60.0  # lines a second in the daemon's log file over the fuzz and its tail: three operator-level
                       # events (severity <= 5) at their full rate (measured: two, DECODE_ERROR and EXCHANGE_REFUSED)
_FILE_EVENT = re.compile(r" (?:WARNING|INFO|ERROR) ([A-Z]+/\d+) ")


def _spi_pairs(sc: Scenario, user: str) -> tuple[list[int], set[tuple[str, str]]]:
    """(session ids, {(inbound SPI, outbound SPI)}) of a user's sessions, from the concentrator's `session` view."""
    view = call(sc.socket("concentrator"), "session", {"user": user})
    return ([s["session_id"] for s in view],
            {(c["inbound_spi"], c["outbound_spi"]) for s in view for c in s["ipsec"] if not c["replaced"]})


def _captured_ike(path: Path) -> list[bytes]:
    return [bytes.fromhex(line[4:]) for line in path.read_text().splitlines() if line.startswith("ike ")]


def _peers(sc: Scenario) -> dict[str, tuple[str, int]]:
    """Each user's public address and port as the concentrator's sessions view shows them."""
    rows = call(sc.socket("concentrator"), "sessions")["remote_access"]
    return {r["username"]: (r["public_ip"], r["public_port"]) for r in rows}


def _rekeyed(sc: Scenario, name: str, user: str, old: set[tuple[str, str]]) -> bool:
    """The client counted a phase 2 rekey and the concentrator shows none of the old pairs as current."""
    pairs = _spi_pairs(sc, user)[1]
    return sc.status(name)["rekeys"]["phase2"] >= 1 and bool(pairs) and not pairs & old


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))
            if after.get(k, 0) != before.get(k, 0)}


def _last_seq(sc: Scenario) -> int:
    return max((e["seq"] for e in call(sc.socket("concentrator"), "log", {"severity": [1, 13]})), default=0)


def _per_event_bound(seconds: float) -> int:
    """What the rate limit lets one event class/id write in `seconds`: the rate, one burst, the summaries."""
    return int(RATE_LIMIT * seconds + 5 * RATE_LIMIT + seconds / 10 + 2)


@pytest.fixture(scope="module")
def sc() -> Iterator[Scenario]:
    with scenario.seed_lab("lf") as s:
        yield s


def test_live_fuzz_leaves_tunnels_daemon_and_logs_intact(sc: Scenario) -> None:
    conc = sc.procs["concentrator"]
    sock = sc.socket("concentrator")
    log_path = sc.run_dir / "concentrator.log"
    count = int((CAPTURE_SECONDS + FUZZ_SECONDS + TAIL_SECONDS + 20) / INTERVAL)
    streams = {name: PingStream(sc, name, count) for name in USERS}
    poller = Poller(sc, conc.pid)
    captured = sc.run_dir / "live-capture.txt"
    record = sc.run_dir / "live-fuzz.rec"
    try:
        for s in streams.values():
            s.wait_replies(5, 20.0)
        # The capture, with a phase 2 rekey of both clients in it: live ESP, and IKE under live cookies.
        old = {name: _spi_pairs(sc, user)[1] for name, user in USERS.items()}
        cap = subprocess.Popen(sc.lab.argv(CONC, [sys.executable, "-m", "tests.fuzz.livecap", "--iface",
                                                  IFACE.conc_public, "--address", ADDR.conc_public, "--seconds",
                                                  str(CAPTURE_SECONDS), "--out", str(captured)]),
                               cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        for name in USERS:
            call(sc.socket(name), "rekey", {"phase": 2})
        for name, user in USERS.items():
            procs.wait_for(lambda n=name, u=user: _rekeyed(sc, n, u, old[n]), 10.0, 0.2, f"{name} rekeyed")
        cap_out, _ = cap.communicate(timeout=CAPTURE_SECONDS + 30)
        assert cap.returncode == 0, cap_out[-2000:]
        before = {name: _spi_pairs(sc, user) for name, user in USERS.items()}
        for name, (ids, pairs) in before.items():
            assert len(ids) == 1 and pairs, f"{name}: no session with a child SA before the fuzz: {ids} {pairs}"
        inbound = sorted({int(i, 16) for _, pairs in before.values() for i, _ in pairs})
        client_rekeys = {name: sc.status(name)["rekeys"] for name in USERS}
        peers0 = _peers(sc)
        status0 = call(sock, "status")
        seq0 = _last_seq(sc)
        log_offset = log_path.stat().st_size
        rss0 = _rss_kib(conc.pid)
        poller.start()
        t0 = time.time()
        argv = [sys.executable, "-m", "tests.fuzz.live", "--peer", ADDR.conc_public, "--local", ADDR.pubclient,
                "--seconds", str(FUZZ_SECONDS), "--rate", str(FUZZ_RATE), "--seed", str(FUZZ_SEED),
                "--replay", str(captured), "--record", str(record),
                *[a for spi in inbound for a in ("--spi", f"0x{spi:08x}")]]
        run = sc.lab.run(PUBCLIENT, argv, cwd=str(REPO), timeout=FUZZ_SECONDS + 60)
        t1 = time.time()
        assert run.returncode == 0, run.stderr[-3000:]
        fuzz: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
        time.sleep(TAIL_SECONDS)
        t2 = time.time()
    finally:
        poller.halt.set()
        for s in streams.values():
            s.stop()
    poller.join(5)
    results = {name: s.parse() for name, s in streams.items()}
    alive = conc.alive
    status1 = call(sock, "status") if alive else {}
    entries = [e for e in call(sock, "log", {"severity": [1, 13], "since": seq0}) if e["time"] <= t2]
    written = (max((e["seq"] for e in entries), default=seq0) - seq0)
    with log_path.open("rb") as f:
        f.seek(log_offset)
        new_lines = f.read().decode(errors="replace").splitlines()
    whole_log = log_path.read_text(errors="replace")
    after = {name: _spi_pairs(sc, user) for name, user in USERS.items()}
    rekeys_after = {name: sc.status(name)["rekeys"] for name in USERS}
    peers1 = _peers(sc)

    window = t2 - t0
    by_event = Counter((e["class"], e["id"], e["name"]) for e in entries)
    per_second = Counter(int(e["time"] - t0) for e in entries)
    fuzz_window = [e for e in entries if e["time"] <= t1]
    took = [p["took"] for p in poller.samples]
    loss = {name: len(r.lost) / max(1, r.transmitted) for name, r in results.items()}
    print(f"\nlive fuzz: {fuzz['sent']} datagrams in {fuzz['seconds']} s ({fuzz['rate']}/s, {fuzz['sent_bytes']} "
          f"bytes, {fuzz['send_errors']} send errors); by kind {fuzz['by_kind']}; by operator {fuzz['by_op']}")
    print(f"live SPIs {fuzz['live_spis']}; captured for replay: {fuzz['captured_esp']} ESP, {fuzz['captured_ike']} "
          f"IKE ({cap_out.strip()}); replies to the fuzzer {fuzz['replies']} ({fuzz['reply_bytes']} bytes)")
    for name, r in results.items():
        print(f"{name} pings: {r.transmitted} sent, loss {loss[name]:.1%} (lost {r.lost_text()})")
    print(f"event log: {written} entries in {window:.1f} s ({written / window:.1f}/s; during the fuzz "
          f"{len(fuzz_window) / (t1 - t0):.1f}/s; busiest second {max(per_second.values(), default=0)}; bound "
          f"{EVENT_LOG_BOUND:g}/s); suppressed since start: see RPT summaries below")
    for (cls, eid, name), n in by_event.most_common(12):
        print(f"  {n:6d}  {cls}/{eid} {name}")
    summaries = [e["message"] for e in entries if "not logged one by one" in e["message"]]
    for text in summaries[:6]:
        print(f"  summary: {text}")
    exchanges = Counter((d[18], "encrypted" if d[19] & 1 else "plain") for d in _captured_ike(captured))
    print(f"captured IKE (exchange type, protection): {dict(exchanges)}")
    theirs = [e for e in entries if e.get("peer") == ADDR.pat_outside]
    print(f"entries naming the clients' public address {ADDR.pat_outside}: "
          f"{dict(Counter(e['name'] for e in theirs).most_common())}")
    for name in sorted({e["name"] for e in theirs}):
        e = next(e for e in theirs if e["name"] == name)
        print(f"  e.g. {' | '.join(e['text'].splitlines())[:300]}")
    print(f"log file: {len(new_lines)} lines in {window:.1f} s ({len(new_lines) / window:.1f}/s, bound "
          f"{LOG_FILE_BOUND:g}/s)")
    for line in new_lines[:3]:
        print(f"  {line[:200]}")
    print(f"  by event: {dict(Counter(m.group(1) for ln in new_lines if (m := _FILE_EVENT.search(ln))))}")
    if alive:
        print(f"refusals added: {_delta(status0['refusals'], status1['refusals'])}")
        print(f"datapath drops added: {_delta(status0['datapath_drops'], status1['datapath_drops'])}")
        print(f"half-open now {status1['half_open']}; loop lag max (recent windows) "
              f"{max((p['lag_ms'] for p in poller.samples), default=0)} ms")
    print(f"status answered {len(took)} times, max {max(took, default=0) * 1000:.0f} ms, failures "
          f"{poller.failures}; RSS before {rss0 // 1024} MiB, max "
          f"{max((p['rss_kib'] for p in poller.samples), default=0) // 1024} MiB")
    print(f"sessions before {before}, at {peers0}\nsessions after  {after}, at {peers1}\nclient rekeys before "
          f"{client_rekeys} after {rekeys_after}")

    findings = "Traceback" in whole_log or not alive
    if findings:
        kept = REPO / "fuzz" / f"live-{sc.lab.prefix.rstrip('-')}.rec"
        kept.parent.mkdir(exist_ok=True)
        shutil.copy(record, kept)
        print(f"the datagrams sent are kept in {kept} (tests.fuzz.live.read_record)")
    assert alive, f"the concentrator died:\n{whole_log[-4000:]}"
    assert "Traceback" not in whole_log, whole_log[whole_log.index("Traceback") - 2000:][:6000]
    assert fuzz["sent"] >= FUZZ_RATE * FUZZ_SECONDS * 0.9, "the fuzzer did not reach its rate"
    assert set(KINDS) <= fuzz["by_kind"].keys(), "every kind of datagram was sent"
    assert not poller.failures, poller.failures
    assert took and max(took) < STATUS_BOUND, f"status took {max(took, default=0):.2f} s"
    assert call(sock, "settings") is not None  # the control socket still answers
    for name, r in results.items():
        assert r.transmitted >= (FUZZ_SECONDS + TAIL_SECONDS) / INTERVAL, f"{name}: the stream ended early"
        assert loss[name] <= MAX_LOSS, f"{name}: lost {r.lost_text()} of {r.transmitted}"
    for name in USERS:
        ids0, pairs0 = before[name]
        ids1, pairs1 = after[name]
        assert ids1 == ids0, f"{name}: session lost or replaced: {ids0} -> {ids1}"
        if pairs1 != pairs0:  # a normal rekey: the client counts it, and the new pair carries its pings
            assert rekeys_after[name] != client_rekeys[name], f"{name}: SPIs changed without a rekey: " \
                f"{pairs0} -> {pairs1}"
        assert sc.status(name)["state"] == "connected"
    assert peers1 == peers0, f"a peer moved: {peers0} -> {peers1}"
    moved = _delta(status0["refusals"], status1["refusals"])
    assert not moved.get("peer-moved") and not moved.get("peer-moved-by-esp"), moved
    # Replays and garbage with live SPIs are dropped, never accepted: the drops show them.
    drops = _delta(status0["datapath_drops"], status1["datapath_drops"])
    assert sum(drops.values()) >= fuzz["by_kind"]["esp-live"] // 2, drops
    assert drops.get("replay", 0) > 0, drops
    # The logs stay bounded.
    limit = _per_event_bound(window)
    over = {k: n for k, n in by_event.items() if n > limit}
    assert not over, f"events past the rate limit (at most {limit} each in {window:.0f} s): {over}"
    assert written / window <= EVENT_LOG_BOUND, f"{written} event-log entries in {window:.0f} s"
    file_events = Counter(m.group(1) for line in new_lines if (m := _FILE_EVENT.search(line)))
    assert max(file_events.values(), default=0) <= limit, file_events
    assert len(new_lines) / window <= LOG_FILE_BOUND, f"{len(new_lines)} log-file lines in {window:.0f} s"
    assert call(sock, "settings")["nat_traversal"]


def test_rate_limit_in_force_is_the_one_assumed(sc: Scenario) -> None:
    """The bounds above assume the lab config's log_rate_limit (20/s per event)."""
    text = sc.config_path("concentrator").read_text()
    m = re.search(r"(?m)^log_rate_limit\s*=\s*([\d.]+)", text)
    assert m and float(m.group(1)) == RATE_LIMIT, m
