"""Interop: our natt-client behind our PAT gateway against strongSwan (charon) as the concentrator.

strongSwan plays the VPN 3000: IKEv1 Aggressive Mode, PSK for group "ciscovpn" (KEY_ID), XAuth, Mode Config
from 10.40.1.0/24, NAT-T. The kernel has no ESP, so charon runs its kernel-libipsec plugin (userspace ESP
over a TUN device, routes in table 220); the conc namespace forwards the decrypted traffic to the server.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from natt_daemons.common.control import ControlError, call
from natt_daemons.lab import procs
from natt_daemons.lab import strongswan as sw
from natt_daemons.lab.scenario import _bin, _set
from natt_daemons.lab.topology import ADDR, CLIENT1, CONC, PAT, Lab

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
GROUP, PSK = "ciscovpn", "ciscovpn-lab-key"
USER, PASSWORD = "vpnclient1", "lab-pass-1"
POOL = "10.40.1.0/24"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
    pytest.mark.skipif(sw.missing() is not None, reason=f"strongSwan unusable: {sw.missing()}"),
]

LEGACY = sw.Suite("legacy", ike="3des-md5-modp1024", esp="3des-md5",
                  client_phase1="3des-md5-modp1024", client_phase2="3des-md5")
MODERN = sw.Suite("modern", ike="aes256-sha256-modp2048", esp="aes128gcm16",
                  client_phase1="aes256-sha256-modp2048", client_phase2="aes128gcm16")
MODERN_CBC = sw.Suite("modern-cbc", ike="aes256-sha256-modp2048", esp="aes256-sha256",
                      client_phase1="aes256-sha256-modp2048", client_phase2="aes256-sha256")


@dataclass
class Setup:
    lab: Lab
    run: Path
    charon: sw.Charon
    client: procs.Proc

    @property
    def socket(self) -> str:
        return str(self.run / "client1.sock")

    def status(self) -> dict:
        return call(self.socket, "status")

    def diagnostics(self) -> str:
        """What to read when an assertion fails: both sides' logs."""
        ours = self.client.log()  # the daemon's own log: the same lines as `natt-client log --socket`
        return f"--- charon.log (tail) ---\n{self.charon.log()[-6000:]}\n--- natt-client log (tail) ---\n{ours[-4000:]}"


@contextlib.contextmanager
def _bring_up(suite: sw.Suite, rekey_time: str | None = None, client_p2_life: int = 28800,
              client_dpd: int = 30, charon_dpd: int = 10) -> Iterator[Setup]:
    prefix = f"sw{secrets.token_hex(3)}-"
    lab = Lab(prefix)
    run = procs.run_dir(prefix)
    charon = sw.Charon(lab, CONC, Path(tempfile.mkdtemp(prefix=f"natt-{prefix}")))
    started: list[procs.Proc] = []
    try:
        lab.up()
        run.mkdir(parents=True, exist_ok=True, mode=0o700)
        pat_conf = _set((CONFIGS / "pat.toml").read_text(), "control_socket", f'"{run / "pat.sock"}"')
        (run / "pat.toml").write_text(pat_conf)
        pat = procs.start(lab, PAT, [_bin("natt-pat"), "run", "--config", str(run / "pat.toml")], run / "pat.log",
                          name="pat")
        started.append(pat)
        procs.wait_for(lambda: (run / "pat.sock").exists() or not pat.alive, 20, 0.1, "natt-pat control socket")
        assert pat.alive, f"natt-pat exited:\n{pat.log()[-3000:]}"

        charon.write(sw.swanctl_conf(suite, ADDR.conc_public, GROUP, PSK, {USER: PASSWORD}, POOL,
                                     rekey_time=rekey_time, dpd_delay=charon_dpd))
        charon.start()
        charon.load()

        text = (CONFIGS / "client1.toml").read_text()
        text = _set(text, "control_socket", f'"{run / "client1.sock"}"')
        text = _set(text, "phase1", f'["{suite.client_phase1}"]')
        text = _set(text, "phase2", f'["{suite.client_phase2}"]')
        text = _set(text, "phase2_lifetime", str(client_p2_life))
        text = _set(text, "dpd_interval", str(client_dpd))
        (run / "client1.toml").write_text(text)
        (run / "client1.toml").chmod(0o600)
        client = procs.start(lab, CLIENT1, [_bin("natt-client"), "run", "--config", str(run / "client1.toml")],
                             run / "client1.log", name="client1")
        started.append(client)
        yield Setup(lab, run, charon, client)
    finally:
        for p in reversed(started):
            p.stop(8.0)
        charon.stop()
        lab.down()
        shutil.rmtree(run, ignore_errors=True)
        if not os.environ.get("NATT_KEEP"):
            shutil.rmtree(charon.workdir, ignore_errors=True)


def _wait_connected(s: Setup, timeout: float = 30.0) -> dict:
    def connected() -> dict | None:
        if not s.client.alive:
            raise RuntimeError(f"natt-client exited:\n{s.client.log()[-3000:]}")
        try:
            st = s.status()
        except (ControlError, OSError):
            return None
        return st if st["state"] == "connected" and st.get("ipsec") else None

    try:
        return procs.wait_for(connected, timeout, 0.2, "natt-client connected to strongSwan")
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{s.diagnostics()}") from None


def _check_tunnel(s: Setup, suite: sw.Suite) -> None:
    st = _wait_connected(s)
    assert st["tunnel_port"] == 4500, "NAT-T through the PAT: the tunnel runs on UDP 4500"
    assert st["assigned_address"] and st["assigned_address"].startswith("10.40.1."), st
    assert s.lab.ping(CLIENT1, ADDR.server, count=3, wait=2), f"no ping to {ADDR.server}\n{s.diagnostics()}"
    st = s.status()
    assert st["packets_decrypted"] > 0 and st["packets_encrypted"] > 0, st
    sas = s.charon.list_sas()
    assert re.search(r"ESTABLISHED, IKEv1", sas), sas
    assert f"XAuth: '{USER}'" in sas, sas
    assert re.search(r"INSTALLED, TUNNEL-in-UDP", sas), f"no UDP-encapsulated CHILD_SA:\n{sas}"
    assert "remote 10.40.1." in sas, sas


@pytest.mark.parametrize("suite", [LEGACY, MODERN, MODERN_CBC], ids=lambda s: s.name)
def test_client_against_strongswan(suite: sw.Suite) -> None:
    with _bring_up(suite) as s:
        _check_tunnel(s, suite)


def test_rekey_against_strongswan() -> None:
    """Our client proposes a 60 s phase 2 lifetime and rekeys at 54 s; charon adopts the lifetime and sees the
    rekey; the old SAs are deleted at 60 s; a ping stream crosses it without loss."""
    with _bring_up(MODERN, client_p2_life=60) as s:
        _check_tunnel(s, MODERN)
        before = sw.spis(s.charon.list_sas())
        out = s.lab.run(CLIENT1, ["ping", "-n", "-q", "-c", "80", "-i", "1", "-W", "1", ADDR.server], timeout=130)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out.stdout)
        assert m, out.stdout + out.stderr
        sent, received = int(m.group(1)), int(m.group(2))
        after = sw.spis(s.charon.list_sas())
        log = s.charon.log()
        assert "received 60s lifetime" in log, s.diagnostics()
        assert "detected rekeying of CHILD_SA" in log, f"charon saw no rekey\n{s.diagnostics()}"
        assert "received DELETE for ESP CHILD_SA" in log, f"the old SAs were not deleted\n{s.diagnostics()}"
        assert after and not (after & before), f"SPIs did not change: before {before}, after {after}"
        assert sent == received, f"{sent - received} of {sent} pings lost across the rekey\n{s.diagnostics()}"
        assert s.status()["state"] == "connected"


@pytest.mark.parametrize("asker", ["charon", "client"])
def test_dpd_against_strongswan(asker: str) -> None:
    """An idle tunnel: one side asks R-U-THERE every 10 s (the other's DPD is slow), the other answers."""
    charon_dpd, client_dpd = (10, 300) if asker == "charon" else (300, 10)
    with _bring_up(LEGACY, client_dpd=client_dpd, charon_dpd=charon_dpd) as s:
        _check_tunnel(s, LEGACY)
        if asker == "charon":
            asked, answered = r"generating INFORMATIONAL_V1 request \d+ \[ HASH N\(DPD\) \]", \
                r"parsed INFORMATIONAL_V1 request \d+ \[ HASH N\(DPD_ACK\) \]"
        else:
            asked, answered = r"parsed INFORMATIONAL_V1 request \d+ \[ HASH N\(DPD\) \]", \
                r"generating INFORMATIONAL_V1 request \d+ \[ HASH N\(DPD_ACK\) \]"

        def seen() -> bool:
            log = s.charon.log()
            return len(re.findall(asked, log)) >= 2 and len(re.findall(answered, log)) >= 2

        try:
            procs.wait_for(seen, 45, 0.5, f"two DPD rounds asked by {asker}")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{s.diagnostics()}") from None
        ours = "SENDING >>> ISAKMP OAK INFO *(HASH, NOTIFY:DPD_R_U_THERE_ACK)" if asker == "charon" \
            else "RECEIVING <<< ISAKMP OAK INFO *(HASH, NOTIFY:DPD_R_U_THERE_ACK)"
        assert ours in s.client.log(), s.diagnostics()
        assert "DPD: peer" not in s.charon.log() and s.status()["state"] == "connected"
        assert s.lab.ping(CLIENT1, ADDR.server, count=2, wait=2)
