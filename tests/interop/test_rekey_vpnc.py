"""vpnc behind our PAT against our concentrator with short lifetimes: sessions that last through rekeys.

vpnc never rekeys phase 2 itself and proposes huge lifetimes. The concentrator caps them (phase 2 to 40 s, phase 1
to 90 s, told in RESPONDER-LIFETIME notifies), rekeys phase 2 itself at ~95 % of the child's lifetime (one proposal
with one transform, the only gateway Quick Mode vpnc takes) and deletes the replaced pair 10 s later. vpnc
re-authenticates phase 1 at 80 % of its lifetime from its 4500 socket; the concentrator takes the session over at
XAUTH (the pairs move to the new IKE SA) and the session, its address and its one row in `sessions` stay.

A ping stream (5 a second) runs through all of it; each lost echo is put next to the nearest SA event, and the
losses per rekey are printed (pytest -s) and bounded.

The helpers here (PingStream, sa_events, attribute_losses) are shared with test_charon_client.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from natt_daemons.common.control import call
from natt_daemons.concentrator.config import load as load_concentrator_config
from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, CLIENT1, Lab
from natt_daemons.lab.vpnc import VPNC, start_vpnc

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
    pytest.mark.skipif(not Path(VPNC).exists(), reason="vpnc is installed by `make test` (Debian package vpnc)"),
]

USER, PASSWORD = "vpnclient1", "lab-pass-1"
PHASE1_LIFETIME = 90  # vpnc re-authenticates at 80 % (72 s)
PHASE2_LIFETIME = 40  # the concentrator rekeys at 95 % less up to 2.5 % (fuzz): ~37.5 s
DURATION = 160  # seconds of ping stream: rekeys at ~37, 74, 111, 149 s, re-authentications at ~72, 144 s
INTERVAL = 0.2  # 5 echoes a second
LOSS_PER_EVENT = 2  # "a couple" of echoes per rekey or re-authentication at most
ESP_DROPS = ("auth_failed", "unknown-spi", "unknown_spi", "replay")


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers: a ping stream and where its losses fall
# ---------------------------------------------------------------------------------------------------------------

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms(?! \(DUP)",
                    re.MULTILINE)
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass
class PingResult:
    sent: int
    received: set[int]
    send_time: dict[int, float]  # seq -> epoch seconds it was (or, if lost, would have been) sent

    @property
    def lost(self) -> list[int]:
        return [s for s in range(1, self.sent + 1) if s not in self.received]

    def lost_times(self) -> list[float]:
        return [self.send_time[s] for s in self.lost]


@dataclass
class PingStream:
    """`ping -D -i INTERVAL -w DURATION` in a lab namespace, registered with the lab (so its teardown ends it)."""

    proc: procs.Proc
    interval: float
    duration: float

    @classmethod
    def start(cls, lab: Lab, role: str, dst: str, duration: float, log: Path, interval: float = INTERVAL,
              name: str | None = None) -> PingStream:
        argv = ["ping", "-n", "-D", "-i", str(interval), "-W", "1", "-w", str(int(duration)), dst]
        return cls(procs.start(lab, role, argv, log, name=name or f"ping-{role}"), interval, duration)

    def wait(self) -> PingResult:
        if not self.proc.wait(self.duration + 30):
            self.proc.stop(5.0)
            raise AssertionError(f"ping did not end after {self.duration + 30:g} s")
        self.proc.unregister()
        return self.result()

    def result(self) -> PingResult:
        text = self.proc.log()
        m = _SUMMARY.search(text)
        assert m, f"no ping summary:\n{text[-2000:]}"
        sent = int(m.group(1))
        replies = {int(s): (float(ts), float(rtt) / 1000) for ts, s, rtt in _REPLY.findall(text)}
        assert replies, f"no ping replies at all:\n{text[-2000:]}"
        # ping sends on a fixed schedule: seq s at base + (s - 1) * interval; the base from the replies' stamps.
        base = statistics.median(ts - rtt - (s - 1) * self.interval for s, (ts, rtt) in replies.items())
        send_time = {s: base + (s - 1) * self.interval for s in range(1, sent + 1)}
        return PingResult(sent, set(replies) & set(range(1, sent + 1)), send_time)


@dataclass
class SaEvent:
    time: float
    kind: str  # rekey-here, rekey-peer, child-up, child-deleted, reauth, ike-deleted, phase1
    text: str

    def label(self, t0: float) -> str:
        body = " ".join(self.text.splitlines()[1:]) or self.text  # the first line is the VPN 3000 header
        return f"{self.time - t0:7.1f} s  {self.kind:13s} {body[-110:]}"


@dataclass
class Attribution:
    per_event: dict[int, list[float]] = field(default_factory=dict)  # event index -> lost send times
    unattributed: list[float] = field(default_factory=list)


def sa_events(entries: list[dict], user: str) -> list[SaEvent]:
    """The SA events of one user's session in the concentrator's log (`log` over the control socket): every new
    child pair (PHASE2_REKEYED when the concentrator started the rekey, a later PHASE2_COMPLETED otherwise), each
    deleted pair (told apart by SPI: the deletion line names no user), re-authentications, IKE SAs deleted."""
    tag = f"User [{user}]"
    spis: set[int] = set()
    rekeyed_here: set[int] = set()
    for e in entries:
        f = e.get("fields") or {}
        if tag in e["text"] and e["name"] in ("SECURITY_NEGOTIATION_COMPLETE", "PHASE2_REKEYED"):
            spis.add(int(f["inbound_spi"]))
            if e["name"] == "PHASE2_REKEYED" and f.get("who") == "started here":
                rekeyed_here.add(int(f["inbound_spi"]))
    out: list[SaEvent] = []
    pending_here = False
    first_child = True
    for e in entries:
        name, f, text = e["name"], e.get("fields") or {}, e["text"]
        mine = tag in text
        if name == "PHASE2_REKEYED" and mine:
            # The line says who started it: "started here" (the concentrator) or "started by the peer".
            pending_here = True
            here = f.get("who", "started here") == "started here"
            out.append(SaEvent(e["time"], "rekey-here" if here else "rekey-peer", text))
        elif name == "SECURITY_NEGOTIATION_COMPLETE" and mine:
            if pending_here:  # the PHASE2_REKEYED just before it said so already
                pending_here = False
            elif first_child:
                out.append(SaEvent(e["time"], "child-up", text))
            else:  # the client's Quick Mode for selectors it has a pair for (neither vpnc nor charon makes new
                # pairs when it re-authenticates: the pairs move to the new IKE SA)
                out.append(SaEvent(e["time"], "rekey-peer", text))
            first_child = False
        elif name == "IPSEC_SA_DELETED" and int(f.get("inbound_spi", -1)) in spis:
            out.append(SaEvent(e["time"], "child-deleted", text))
        elif name == "REAUTHENTICATED" and mine:
            out.append(SaEvent(e["time"], "reauth", text))
        elif name == "PHASE1_COMPLETED" and mine:
            out.append(SaEvent(e["time"], "phase1", text))
        elif name == "IKE_SA_DELETED":  # names no user either: an anchor for losses, whoever's it was
            out.append(SaEvent(e["time"], "ike-deleted", text))
    return sorted(out, key=lambda ev: ev.time)


def attribute_losses(lost: list[float], events: list[SaEvent], window: float = 3.0) -> Attribution:
    """Each lost echo goes to the nearest event within `window` seconds of its send time, else unattributed."""
    a = Attribution()
    for t in lost:
        near = [(abs(ev.time - t), i) for i, ev in enumerate(events) if abs(ev.time - t) <= window]
        if near:
            a.per_event.setdefault(min(near)[1], []).append(t)
        else:
            a.unattributed.append(t)
    return a


def loss_report(title: str, ping: PingResult, events: list[SaEvent], a: Attribution, t0: float) -> str:
    lines = [f"=== {title}: {ping.sent} echoes, {len(ping.lost)} lost "
             f"({100 * len(ping.lost) / max(ping.sent, 1):.2f} %) ==="]
    for i, ev in enumerate(events):
        n = len(a.per_event.get(i, []))
        lines.append(f"  {ev.label(t0)}   lost near it: {n}")
    if a.unattributed:
        lines.append("  lost away from any SA event at: " + ", ".join(f"{t - t0:.1f} s" for t in a.unattributed))
    return "\n".join(lines)


def losses_by_kind(events: list[SaEvent], a: Attribution) -> dict[str, list[int]]:
    """Per event kind, the number of echoes lost near each event of that kind."""
    out: dict[str, list[int]] = {}
    for i, ev in enumerate(events):
        out.setdefault(ev.kind, []).append(len(a.per_event.get(i, [])))
    return out


def keep_artifacts(dest: Path, *paths: Path) -> None:
    """Copy logs out of the lab's run directory (removed at teardown) into pytest's tmp_path."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p.is_file():
            shutil.copy(p, dest / p.name)


# ---------------------------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def rekey_lab() -> Iterator[Scenario]:
    extra = {"phase1": '["aes256-sha1-modp1536"]', "phase2": '["aes256-sha1"]',
             "phase1_lifetime": str(PHASE1_LIFETIME), "phase2_lifetime": str(PHASE2_LIFETIME),
             "dpd_interval": "30", "keepalive_interval": "20"}
    with scenario.running("rv", ScenarioConfig(concentrator_extra=extra)) as sc:
        yield sc


def _tun_address(sc: Scenario, role: str) -> str | None:
    out = sc.lab.run(role, ["ip", "-4", "-o", "addr", "show", "dev", f"vpnc-{role[-1]}"]).stdout
    parts = out.split()
    return parts[parts.index("inet") + 1].split("/")[0] if "inet" in parts else None


@dataclass
class Poll:
    t: float
    rows: list[dict]
    detail: list[dict]
    status: dict


def _poll(sc: Scenario) -> Poll:
    sock = sc.socket("concentrator")
    rows = [r for r in call(sock, "sessions")["remote_access"] if r["username"] == USER]
    return Poll(time.time(), rows, call(sock, "session", {"user": USER}), call(sock, "status"))


def _esp_drops(status: dict) -> int:
    return sum(int(status["datapath_drops"].get(k, 0)) for k in ESP_DROPS)


def test_vpnc_rekeys_and_reauthentication(rekey_lab: Scenario, tmp_path: Path) -> None:
    sc = rekey_lab
    settings = load_concentrator_config(sc.config_path("concentrator"))
    assert (settings.policy.phase1_lifetime, settings.policy.phase2_lifetime) == (PHASE1_LIFETIME, PHASE2_LIFETIME)
    sock = sc.socket("concentrator")
    vpnc = start_vpnc(sc.lab, CLIENT1, sc.run_dir, USER, PASSWORD, dh_group="dh5", debug=3, unbuffered=True)
    vpnc_log = sc.run_dir / f"vpnc-{CLIENT1}.log"
    polls: list[Poll] = []

    def diagnostics(tail: int = 8000) -> str:
        log = "\n".join(e["text"] for e in call(sock, "log", {"classes": ["IKE", "IKEDBG", "AUTH"],
                                                               "severity": "1-6"}))
        return (f"--- concentrator log (IKE/IKEDBG/AUTH, sev 1-6, tail) ---\n{log[-tail:]}\n"
                f"--- vpnc --debug 3 (tail) ---\n{vpnc.proc.log()[-tail:]}\n"
                f"--- polls (last 3) ---\n{json.dumps([p.__dict__ for p in polls[-3:]], default=str)[-3000:]}")

    try:
        address = procs.wait_for(lambda: _tun_address(sc, CLIENT1), 30, 0.3, "vpnc's address")
        assert address.startswith("10.40.1.")
        assert sc.ping(CLIENT1, ADDR.server), f"no traffic through vpnc's tunnel\n{diagnostics()}"
        first = _poll(sc)
        assert len(first.rows) == 1 and first.rows[0]["assigned_ip"] == address, first.rows
        (detail,) = first.detail
        # vpnc proposes huge lifetimes; the concentrator's own are what the SAs got.
        assert detail["ike"]["rekey_interval"] == PHASE1_LIFETIME, detail["ike"]
        assert [s["rekey_interval"] for s in detail["ipsec"]] == [PHASE2_LIFETIME], detail["ipsec"]
        drops_before = _esp_drops(first.status)

        t0 = time.time()
        stream = PingStream.start(sc.lab, CLIENT1, ADDR.server, DURATION, sc.run_dir / "ping.log")
        while stream.proc.alive and time.time() - t0 < DURATION + 30:
            polls.append(_poll(sc))
            time.sleep(1.0)
        ping = stream.wait()
        polls.append(_poll(sc))

        entries = call(sock, "log", {})
        events = sa_events(entries, USER)
        a = attribute_losses(ping.lost_times(), events)
        report = loss_report("vpnc through concentrator rekeys", ping, events, a, t0)
        kinds = losses_by_kind(events, a)
        last = polls[-1]
        reauths = int(last.status["refusals"].get("reauthentications", 0))
        rekeys_here = len(kinds.get("rekey-here", []))
        drops = _esp_drops(last.status) - drops_before
        spis_seen = [tuple(sorted(s["inbound_spi"] for s in p.detail[0]["ipsec"])) for p in polls if p.detail]
        summary = (f"{report}\nconcentrator rekeys of phase 2: {rekeys_here} (peer-started: "
                   f"{len(kinds.get('rekey-peer', []))}), phase 1 re-authentications: {reauths}, "
                   f"distinct inbound SPI sets seen: {len(set(spis_seen))}, ESP drops (auth/unknown SPI/replay) "
                   f"during the stream: {drops} {last.status['datapath_drops']}")
        print("\n" + summary)
        (tmp_path / "summary.txt").write_text(summary)

        assert vpnc.proc.alive, f"vpnc exited\n{diagnostics()}"
        assert all(len(p.rows) == 1 for p in polls), \
            f"not one session row throughout: {[len(p.rows) for p in polls]}\n{diagnostics()}"
        assert {p.rows[0]["assigned_ip"] for p in polls} == {address}, diagnostics()
        assert _tun_address(sc, CLIENT1) == address
        assert rekeys_here >= 3, f"the concentrator rekeyed phase 2 {rekeys_here} times\n{summary}\n{diagnostics()}"
        assert len(set(spis_seen)) >= rekeys_here, f"SPIs did not change with each rekey: {spis_seen}"
        assert all(s["rekey_interval"] == PHASE2_LIFETIME for p in polls for d in p.detail for s in d["ipsec"])
        assert reauths >= 1 and len(kinds.get("reauth", [])) == reauths, \
            f"vpnc's phase 1 re-authentication did not keep the session\n{summary}\n{diagnostics()}"
        assert all(d["ike"]["rekey_interval"] == PHASE1_LIFETIME for p in polls for d in p.detail)
        worst = max((n for ns in kinds.values() for n in ns), default=0)
        assert worst <= LOSS_PER_EVENT, f"{worst} echoes lost at one SA event\n{summary}"
        assert len(a.unattributed) <= 1, f"echoes lost away from any SA event\n{summary}"
        assert drops <= 5 * (rekeys_here + reauths), f"ESP drops grew by {drops}\n{summary}"
        # vpnc's side: it started the re-authentications, took each gateway Quick Mode, and adopted the lifetimes.
        vlog = vpnc.proc.log()
        assert vlog.count("starting phase1 rekey") >= reauths, vlog[-3000:]
        assert vlog.count("do_rekey returned: 0") == rekeys_here, "vpnc accepted each gateway rekey"
        assert "got ike lifetime attributes: 2147483 seconds" in vlog, "vpnc's own (huge) phase 1 proposal"
        assert f"got ike lifetime attributes: {PHASE1_LIFETIME} seconds" in vlog
        assert f"got ipsec lifetime attributes: {PHASE2_LIFETIME} seconds" in vlog
        assert not [e for e in entries if e["name"] == "DPD_TIMEOUT"], f"a DPD timeout\n{diagnostics()}"
        assert sc.ping(CLIENT1, ADDR.server), "the tunnel still carries traffic at the end"
    finally:
        vpnc.stop()
        keep_artifacts(tmp_path, vpnc_log, sc.run_dir / "concentrator.log", sc.run_dir / "ping.log")
