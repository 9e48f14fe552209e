"""strongSwan charon as the CLIENT behind our PAT against our concentrator: a second real client beside vpnc.

charon (kernel-libipsec: ESP in userspace over a TUN) plays a Cisco VPN Client: IKEv1 Aggressive Mode with the group
name as KEY_ID and the group PSK, XAUTH, a virtual IP by Mode Config from the pool, NAT-T through the PAT. Unlike
vpnc it rekeys phase 2 itself and re-authenticates phase 1 itself, so the rekey test runs two charons at once:

- client1 (vpnclient1) rekeys its CHILD_SA first: rekey_time 30 s / life_time 45 s, which the concentrator takes
  (it is below its phase2_lifetime of 60) and would rekey only at ~95 % of 45 s;
- client2 (vpnclient2) leaves phase 2 to the concentrator: it proposes 120 s (rekey at 90 s), the concentrator caps
  it to 60 s and rekeys at ~57 s;

and both re-authenticate phase 1 every ~80 s. A ping stream (5 a second) runs from each; the losses are put next to
the nearest SA event and printed (pytest -s).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab import strongswan as sw
from natt_daemons.lab.scenario import LAB_USERS, Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, CLIENT1, CLIENT2
from natt_daemons.lab.vpnc import VPNC, start_vpnc
from tests.interop.test_rekey_vpnc import (
    PingStream,
    attribute_losses,
    keep_artifacts,
    loss_report,
    losses_by_kind,
    sa_events,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
    pytest.mark.skipif(sw.missing() is not None, reason=f"strongSwan unusable: {sw.missing()}"),
]

GROUP, PSK = "ciscovpn", "ciscovpn-lab-key"
SUITE = sw.Suite("modern", ike="aes256-sha256-modp2048", esp="aes128gcm16",
                 client_phase1="aes256-sha256-modp2048", client_phase2="aes128gcm16")
# The concentrator: charon's suite first; vpnc (DH group 5 at most, no GCM) beside it gets the second ones.
CONCENTRATOR = {"phase1": '["aes256-sha256-modp2048", "aes256-sha1-modp1536"]',
                "phase2": '["aes128gcm16", "aes256-sha1"]', "dpd_interval": "30", "keepalive_interval": "20"}
PHASE2_LIFETIME = 60
IKE_REKEY = "80s"  # charon re-authenticates phase 1 at 80 s less up to 8 s (over_time / rand_time: 10 %)
DURATION = 160  # seconds of ping stream (the concentrator's third rekey of client2, ~167 s, falls after it)
LOSS_PER_EVENT = 2
ESP_DROPS = ("auth_failed", "unknown-spi", "unknown_spi", "replay")


@contextlib.contextmanager
def charon_client(sc: Scenario, role: str, user: str, **conf: str) -> Iterator[sw.Charon]:
    """A charon client in `role`'s namespace for `user` (swanctl_client_conf with conf), loaded, not yet started;
    stopped by its pid and its directory removed on exit."""
    workdir = Path(tempfile.mkdtemp(prefix=f"natt-{sc.lab.prefix}{role}-"))
    charon = sw.Charon(sc.lab, role, workdir, name=f"charon-{role}")
    try:
        charon.write(sw.swanctl_client_conf(SUITE, ADDR.conc_public, GROUP, PSK, user, LAB_USERS[user], **conf))
        charon.start()
        charon.load()
        yield charon
    finally:
        charon.stop()
        if not os.environ.get("NATT_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


def _rows(sc: Scenario) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in call(sc.socket("concentrator"), "sessions")["remote_access"]:
        out.setdefault(r["username"], []).append(r)
    return out


def _connect(charon: sw.Charon) -> str:
    try:
        charon.initiate()
    except RuntimeError as e:
        raise AssertionError(f"{e}\n--- charon.log (tail) ---\n{charon.log()[-5000:]}") from None
    sas = charon.list_sas()
    vip = sw.virtual_ip(sas)
    assert vip and vip.startswith("10.40.1."), f"no virtual IP from the pool:\n{sas}"
    assert re.search(r"ESTABLISHED, IKEv1", sas) and re.search(r"INSTALLED, TUNNEL-in-UDP", sas), sas
    log = charon.log()
    assert re.search(r"XAuth authentication of '\S+' \(myself\) successful", log), log[-4000:]
    assert f"installing new virtual IP {vip}" in log, log[-4000:]
    return vip


def _vpnc_address(sc: Scenario, role: str) -> str | None:
    out = sc.lab.run(role, ["ip", "-4", "-o", "addr", "show", "dev", f"vpnc-{role[-1]}"]).stdout
    parts = out.split()
    return parts[parts.index("inet") + 1].split("/")[0] if "inet" in parts else None


def test_charon_client_beside_vpnc(tmp_path: Path) -> None:
    """charon (client1, vpnclient1) and vpnc (client2, vpnclient2) at once behind the PAT: both get an address from
    the pool, both pass traffic, two sessions from the PAT's one address; charon's clean disconnect leaves vpnc be."""
    with scenario.running("cv", ScenarioConfig(concentrator_extra=CONCENTRATOR)) as sc, \
            charon_client(sc, CLIENT1, "vpnclient1") as charon:
        vpnc = None
        if Path(VPNC).exists():
            vpnc = start_vpnc(sc.lab, CLIENT2, sc.run_dir, "vpnclient2", LAB_USERS["vpnclient2"], dh_group="dh5")
        try:
            vip = _connect(charon)
            assert sc.ping(CLIENT1, ADDR.server), f"charon's tunnel carries no traffic\n{charon.log()[-4000:]}"
            rows = _rows(sc)
            (row,) = rows["vpnclient1"]
            assert row["assigned_ip"] == vip and row["public_ip"] == ADDR.pat_outside, row
            assert row["protocol"] == "IPsec/NAT-T", row
            (detail,) = call(sc.socket("concentrator"), "session", {"user": "vpnclient1"})
            assert detail["ike"]["negotiation_mode"] == "Aggressive"
            assert detail["ike"]["authentication_mode"] == "Pre-Shared Keys (XAUTH)"
            assert [s["udp_destination_port"] for s in detail["ipsec"]] == [4500]
            if vpnc is None:
                pytest.skip("vpnc is not installed: charon alone passed")
            address = procs.wait_for(lambda: _vpnc_address(sc, CLIENT2), 30, 0.3, "vpnc's address")
            assert sc.ping(CLIENT2, ADDR.server), "vpnc's tunnel carries no traffic beside charon's"
            rows = _rows(sc)
            assert {u: len(r) for u, r in rows.items()} == {"vpnclient1": 1, "vpnclient2": 1}, rows
            assert rows["vpnclient2"][0]["assigned_ip"] == address != vip
            assert rows["vpnclient1"][0]["public_port"] != rows["vpnclient2"][0]["public_port"], rows
            # Both at once, then charon leaves cleanly (its DELETEs) and vpnc is undisturbed.
            pings = [PingStream.start(sc.lab, r, ADDR.server, 4, sc.run_dir / f"ping-{r}.log")
                     for r in (CLIENT1, CLIENT2)]
            for p in pings:
                res = p.wait()
                assert not res.lost, f"{len(res.lost)} of {res.sent} echoes lost with both clients up"
            charon.swanctl("--terminate", "--ike", "natt", "--timeout", "10", timeout=20)
            procs.wait_for(lambda: "vpnclient1" not in _rows(sc), 15, 0.3, "charon's session removed")
            assert sc.ping(CLIENT2, ADDR.server), "vpnc undisturbed by charon's disconnect"
            assert set(_rows(sc)) == {"vpnclient2"}
        finally:
            if vpnc is not None:
                vpnc.stop()
            keep_artifacts(tmp_path, charon.log_path, sc.run_dir / "concentrator.log",
                           sc.run_dir / f"vpnc-{CLIENT2}.log")


@dataclass
class Client:
    role: str
    user: str
    charon: sw.Charon
    address: str = ""
    stream: PingStream | None = None


def _charon_counts(log: str) -> dict[str, int]:
    """What one charon's log says it did: Quick Modes it started (the first pair, then only rekeys: when charon
    re-authenticates an IKEv1 SA its CHILD_SAs move to the new one, no Quick Mode), gateway Quick Modes it answered
    (each taken as a rekey), IKE SAs established (the first and each re-authentication's)."""
    return {
        "qm_started": len(re.findall(r"generating QUICK_MODE request \d+ \[ HASH SA No (?:KE )?ID ID", log)),
        "qm_answered": len(re.findall(r"parsed QUICK_MODE request \d+ \[ HASH SA No (?:KE )?ID ID", log)),
        "detected_rekeys": log.count("detected rekeying of CHILD_SA"),
        "ike_established": len(re.findall(r"IKE_SA natt\[\d+\] established", log)),
    }


def test_charon_client_rekeys_and_reauthenticates(tmp_path: Path) -> None:
    extra = {**CONCENTRATOR, "phase2_lifetime": str(PHASE2_LIFETIME)}
    with scenario.running("cr", ScenarioConfig(concentrator_extra=extra)) as sc, \
            charon_client(sc, CLIENT1, "vpnclient1", rekey_time=IKE_REKEY, child_rekey_time="30s",
                          child_life_time="45s") as first, \
            charon_client(sc, CLIENT2, "vpnclient2", rekey_time=IKE_REKEY, child_rekey_time="90s",
                          child_life_time="120s") as second:
        clients = [Client(CLIENT1, "vpnclient1", first), Client(CLIENT2, "vpnclient2", second)]
        sock = sc.socket("concentrator")

        def diagnostics() -> str:
            log = "\n".join(e["text"] for e in call(sock, "log", {"classes": ["IKE", "IKEDBG", "AUTH"],
                                                                   "severity": "1-6"}))
            parts = [f"--- concentrator log (IKE/IKEDBG/AUTH, sev 1-6, tail) ---\n{log[-8000:]}"]
            parts += [f"--- charon {c.role} log (tail) ---\n{c.charon.log()[-5000:]}" for c in clients]
            return "\n".join(parts)

        try:
            for c in clients:
                c.address = _connect(c.charon)
                assert sc.ping(c.role, ADDR.server), f"no traffic from {c.role}\n{diagnostics()}"
            drops_before = sum(int(sc.status("concentrator")["datapath_drops"].get(k, 0)) for k in ESP_DROPS)
            t0 = time.time()
            for c in clients:
                c.stream = PingStream.start(sc.lab, c.role, ADDR.server, DURATION, sc.run_dir / f"ping-{c.role}.log")
            rows_seen: list[dict[str, list[str]]] = []
            while any(c.stream and c.stream.proc.alive for c in clients) and time.time() - t0 < DURATION + 30:
                rows_seen.append({u: [r["assigned_ip"] for r in rs] for u, rs in _rows(sc).items()})
                time.sleep(1.0)
            results = {c.user: c.stream.wait() for c in clients if c.stream}
            rows_seen.append({u: [r["assigned_ip"] for r in rs] for u, rs in _rows(sc).items()})
            status = sc.status("concentrator")
            entries = call(sock, "log", {})

            lines, checks = [], {}
            for c in clients:
                ping = results[c.user]
                events = sa_events(entries, c.user)
                a = attribute_losses(ping.lost_times(), events)
                kinds = losses_by_kind(events, a)
                counts = _charon_counts(c.charon.log())
                reauths_charon = counts["ike_established"] - 1
                rekeys_charon = counts["qm_started"] - 1
                lines.append(loss_report(f"charon {c.role} ({c.user})", ping, events, a, t0))
                lines.append(f"  rekeys started by charon: {rekeys_charon} (concentrator saw "
                             f"{len(kinds.get('rekey-peer', []))}), by the concentrator: "
                             f"{len(kinds.get('rekey-here', []))} (charon answered {counts['qm_answered']}, "
                             f"'detected rekeying' {counts['detected_rekeys']}), phase 1 re-authentications: "
                             f"charon {reauths_charon}, concentrator {len(kinds.get('reauth', []))}")
                checks[c.user] = (ping, a, kinds, counts, rekeys_charon, reauths_charon)
            drops = sum(int(status["datapath_drops"].get(k, 0)) for k in ESP_DROPS) - drops_before
            lines.append(f"concentrator: reauthentications {status['refusals'].get('reauthentications', 0)}, "
                         f"refusals {status['refusals']}, ESP drops during the streams {drops} "
                         f"{status['datapath_drops']}")
            summary = "\n".join(lines)
            print("\n" + summary)
            (tmp_path / "summary.txt").write_text(summary)

            for c in clients:
                seen = [r.get(c.user) for r in rows_seen]
                assert all(s == [c.address] for s in seen), \
                    f"{c.user}: not one session with {c.address} throughout: {seen}\n{summary}\n{diagnostics()}"
                assert re.search(r"ESTABLISHED, IKEv1", c.charon.list_sas()), diagnostics()
            _, a1, kinds1, counts1, rekeys1, reauths1 = checks["vpnclient1"]
            _, a2, kinds2, counts2, rekeys2, reauths2 = checks["vpnclient2"]
            # client1's charon rekeys first, every time; client2's leaves it to the concentrator.
            assert rekeys1 >= 4 and len(kinds1.get("rekey-peer", [])) == rekeys1, f"{summary}\n{diagnostics()}"
            assert not kinds1.get("rekey-here") and counts1["qm_answered"] == 0, \
                f"the concentrator rekeyed a child charon rekeys first\n{summary}"
            assert len(kinds2.get("rekey-here", [])) >= 2, f"{summary}\n{diagnostics()}"
            assert counts2["detected_rekeys"] == counts2["qm_answered"] == len(kinds2["rekey-here"]), summary
            assert rekeys2 == 0 and not kinds2.get("rekey-peer"), f"charon rekeyed before the concentrator\n{summary}"
            assert f"received {PHASE2_LIFETIME}s lifetime, configured 120s" in second.log(), \
                "charon adopted the concentrator's phase 2 lifetime"
            # Each charon re-authenticated phase 1 and the concentrator kept the session (rows checked above).
            for user, reauths, kinds in (("vpnclient1", reauths1, kinds1), ("vpnclient2", reauths2, kinds2)):
                assert reauths >= 1 and len(kinds.get("reauth", [])) == reauths, \
                    f"{user}: re-authentication not taken as one\n{summary}\n{diagnostics()}"
            assert status["refusals"].get("reauthentications", 0) >= reauths1 + reauths2
            for a, kinds in ((a1, kinds1), (a2, kinds2)):
                worst = max((n for ns in kinds.values() for n in ns), default=0)
                assert worst <= LOSS_PER_EVENT, f"{worst} echoes lost at one SA event\n{summary}"
                assert len(a.unattributed) <= 1, f"echoes lost away from any SA event\n{summary}"
            events = rekeys1 + rekeys2 + len(kinds2.get("rekey-here", [])) + reauths1 + reauths2
            assert drops <= 5 * events, f"ESP drops grew by {drops}\n{summary}"
            assert not [e for e in entries if e["name"] == "DPD_TIMEOUT"], diagnostics()
            for c in clients:
                assert sc.ping(c.role, ADDR.server), f"{c.role}: the tunnel still carries traffic at the end"
        finally:
            for c in clients:
                if c.stream is not None and c.stream.proc.alive:
                    c.stream.proc.stop(5.0)
            keep_artifacts(tmp_path, sc.run_dir / "concentrator.log", *(sc.run_dir / f"ping-{c.role}.log"
                                                                        for c in clients))
            for c in clients:
                if c.charon.log_path.exists():
                    shutil.copy(c.charon.log_path, tmp_path / f"charon-{c.role}.log")
