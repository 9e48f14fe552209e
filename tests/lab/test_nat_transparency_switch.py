"""The seed's failure case from the lab, and its fix through the concentrator's control socket.

`natt-lab up --nat-transparency off` (what `make lab NAT_T=off` runs) brings the lab up with the given configs and
NAT Transparency off: both clients connect over UDP 500 and pass no data. It must say so on both sides and print
the fix. The fix is then applied for real: `natt-concentrator nat-transparency --nat-t on` (the concentrator
edits its config file and reloads), the stale sessions are logged out, the clients reconnect, and traffic passes
as IPsec/NAT-T; the concentrator's own Ping reaches the clients through their tunnels.
"""

from __future__ import annotations

import grp
import os
import re
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natt_daemons.common.control import ControlError, call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import CLIENTS, LAB_USERS, Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, Lab
from tests.unit.test_control_access import as_nobody

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def seed_case() -> Iterator[tuple[Scenario, subprocess.CompletedProcess[str]]]:
    """The lab as `natt-lab up --nat-transparency off` leaves it (its own prefix), removed afterwards."""
    prefix = f"nx{secrets.token_hex(3)}-"
    try:
        out = subprocess.run([scenario._bin("natt-lab"), "up", "--prefix", prefix, "--configs", str(CONFIGS),
                              "--nat-transparency", "off"], capture_output=True, text=True, timeout=300)
        yield Scenario(Lab(prefix), CONFIGS), out
    finally:
        scenario.tear_down(prefix)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([scenario._bin("natt-concentrator"), *argv], capture_output=True, text=True, timeout=60)


def _rows(sc: Scenario) -> dict[str, dict[str, Any]]:
    return {r["username"]: r for r in call(sc.socket("concentrator"), "sessions")["remote_access"]}


def _admin_log(sc: Scenario) -> str:
    return "\n".join(e["message"] for e in call(sc.socket("concentrator"), "log", {"classes": ["ADMIN"]}))


def test_nat_transparency_off_then_switched_on(seed_case: tuple[Scenario, subprocess.CompletedProcess[str]]) -> None:
    sc, up = seed_case
    text = up.stdout
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    csock = sc.socket("concentrator")

    # -- the failure, as natt-lab up shows it ----------------------------------------------------------------
    for role in CLIENTS:
        assert f"ping {ADDR.server} from {role}: FAILED" in text
    assert "no data passes: NAT transparency is off on the concentrator" in text
    assert "=== Diagnosis: the seed's failure case (NAT Transparency is off on the concentrator) ===" in text
    for user in LAB_USERS:
        assert f"{user} from {ADDR.pat_outside}: protocol IPSec (not IPsec/NAT-T), 0 bytes received" in text
    assert "event log: NAT/510 Peer is behind a NAT device" in text
    assert text.count("NAT                   : unknown (the peer sent no NAT-D: NAT-T not negotiated)") == 2
    assert "is NOT behind NAT" not in text, "without NAT-D the client cannot know"
    assert text.count("  DIAGNOSIS: ") >= 2 and "NAT Transparency (nat_traversal) is disabled" in text
    assert f"nat-transparency --nat-t on --socket {csock}" in text
    assert "Configuration > Tunneling > IPSec > NAT Transparency: IPSec over NAT-T" in text
    assert f"logout vpnclient1 --socket {csock}" in text

    # The given configs were used as they are, but for the switch asked for.
    conf = sc.config_path("concentrator")
    before = conf.read_text()
    shipped = (CONFIGS / "concentrator.toml").read_text()
    assert re.search(r"(?m)^nat_traversal = false$", before)
    assert shipped.split("nat_traversal = true", 1)[0] in before  # the comments above it are the shipped ones

    rows = _rows(sc)
    assert rows, "the sessions of the seed case are up"
    for row in rows.values():
        assert row["protocol"] == "IPSec" and row["bytes_rx"] == 0, row
    dark = call(csock, "ping", {"user": next(iter(rows)), "count": 2, "timeout": 0.5})
    assert dark["sent"] == 2 and dark["received"] == 0 and dark["rtt_ms"] == [], dark

    # -- the switch, through the real control socket ---------------------------------------------------------
    switched = _cli("nat-transparency", "--nat-t", "on", "--socket", csock)
    assert switched.returncode == 0, switched.stderr
    assert re.search(r"IPSec over NAT-T \(nat_traversal\)\s+: on", switched.stdout), switched.stdout
    after = conf.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [("nat_traversal = false", "nat_traversal = true")], changed
    assert call(csock, "settings")["nat_traversal"] is True
    assert call(csock, "status")["nat_traversal"] is True
    assert set(_rows(sc)) == set(rows), "the reload leaves the live sessions alone"
    audit = _admin_log(sc)
    assert re.search(r"Administrator command ping by root \(uid 0, pid \d+\): user=vpnclient\d count=2 "
                     r"timeout=0\.5: done", audit), audit
    assert re.search(r"Administrator command nat-transparency by root \(uid 0, pid \d+\): nat_traversal=true: done",
                     audit), audit

    # -- the fix: stale sessions out, clients reconnect ---------------------------------------------------------
    for user in LAB_USERS:
        try:
            call(csock, "logout", {"user": user, "actor": "test:fixer"})
        except ControlError as e:  # a client whose PAT mapping expired may be gone already
            assert "no session" in str(e)
    assert "Administrator command logout by test:fixer (uid 0" in _admin_log(sc)
    for name in CLIENTS.values():
        call(sc.socket(name), "disconnect")
        call(sc.socket(name), "connect")
    for name in CLIENTS.values():
        st = procs.wait_for(lambda n=name: (s := sc.status(n))["state"] == "connected" and s.get("transport") ==
                            "NAT-T" and s.get("ipsec") and s, 30, 0.3, f"{name} reconnected with NAT-T")
        assert st["tunnel_port"] == 4500 and st["nat"]["this_end_behind_nat"] is True
    for role in CLIENTS:
        assert sc.ping(role, ADDR.server), f"after the fix, {role} passes traffic"
    rows = _rows(sc)
    assert set(rows) == set(LAB_USERS)
    for row in rows.values():
        assert row["protocol"] == "IPsec/NAT-T" and row["bytes_rx"] > 0, row

    # -- Ping from the concentrator through each tunnel ---------------------------------------------------------
    lit = call(csock, "ping", {"user": "vpnclient1", "count": 3, "timeout": 1.0, "actor": "manager:admin"})
    assert lit["address"] == rows["vpnclient1"]["assigned_ip"]
    assert lit["sent"] == 3 and lit["received"] == 3 and len(lit["rtt_ms"]) == 3, lit
    assert all(0 < r < 1000 for r in lit["rtt_ms"])
    printed = _cli("ping", "vpnclient2", "--count", "2", "--socket", csock)
    assert printed.returncode == 0, printed.stdout + printed.stderr
    assert f"ping vpnclient2 ({rows['vpnclient2']['assigned_ip']}) through the tunnel: 2 sent, 2 received, 0% loss" \
        in printed.stdout
    assert "rtt min/avg/max" in printed.stdout
    assert "Administrator command ping by manager:admin (uid 0" in _admin_log(sc)
    print(f"\nconcentrator ping through the tunnel: rtt {lit['rtt_ms']} ms")


def test_make_lab_passes_nat_t_through() -> None:
    """`make lab NAT_T=off` runs natt-lab up with --nat-transparency off (and nothing extra without NAT_T)."""
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "lab", "NAT_T=off"], capture_output=True, text=True,
                         timeout=30)
    assert re.search(r"natt-lab up --prefix \S+ --configs configs --nat-transparency off", dry.stdout), dry.stdout
    plain = subprocess.run(["make", "-n", "-C", str(ROOT), "lab"], capture_output=True, text=True, timeout=30)
    assert "--nat-transparency" not in plain.stdout


def _group(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


@pytest.mark.skipif(_group("nogroup") is None or _group("staff") is None, reason="needs groups nogroup and staff")
def test_the_real_concentrator_tags_its_commands() -> None:
    """The concentrator with control_group = "nogroup" and control_admin_group = "staff": user nobody (primary group
    nogroup) connects and gets the views but no admin or root command; holding staff it may run admin commands;
    each refusal is in the event log with uid 65534."""
    extra = {"control_group": '"nogroup"', "control_admin_group": '"staff"'}
    with scenario.running("na", ScenarioConfig(concentrator_extra=extra)) as sc:
        sock = Path(sc.socket("concentrator"))
        st = sock.stat()
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == _group("nogroup")
        sc.run_dir.chmod(0o711)  # let nobody reach the socket (the configs in it stay 0600)
        cmds = [("sessions", {}), ("settings", {}), ("status", {}), ("logout", {"user": "vpnclient1"}),
                ("ping", {"user": "vpnclient1"}), ("nat-transparency", {"nat_traversal": False}),
                ("rekey", {"user": "vpnclient1"}), ("unlock", {"all": True}), ("keys", {"wireshark": "/tmp"})]
        viewer = dict(zip([c for c, _ in cmds], as_nobody(sock, cmds, groups=[]), strict=True))
        assert viewer["sessions"]["ok"] and viewer["settings"]["ok"] and viewer["status"]["ok"]
        for cmd in ("logout", "ping", "nat-transparency", "rekey", "unlock"):
            assert viewer[cmd] == {"ok": False, "error": f"permission denied: {cmd} needs admin"}, viewer[cmd]
        assert viewer["keys"] == {"ok": False, "error": "permission denied: keys needs root"}
        assert call(str(sock), "settings")["nat_traversal"] is True, "the viewer's switch was refused"
        admin = dict(zip([c for c, _ in cmds], as_nobody(sock, cmds, groups=[_group("staff")]), strict=True))
        assert admin["logout"] == {"ok": False, "error": "no session for user 'vpnclient1'"}  # allowed, and ran
        assert admin["unlock"] == {"ok": True, "result": {"cleared": 0}}
        assert admin["keys"] == {"ok": False, "error": "permission denied: keys needs root"}
        assert admin["nat-transparency"]["ok"] and admin["nat-transparency"]["result"]["nat_traversal"] is False
        assert call(str(sock), "settings")["nat_traversal"] is False, "the admin's switch was made"
        audit = _admin_log(sc)
        assert re.search(r"Refused command nat-transparency from nobody \(uid 65534, pid \d+\): it needs admin "
                         "access", audit), audit
        assert re.search(r"Administrator command unlock by nobody \(uid 65534, pid \d+\): all=true: done", audit)
        assert re.search(r"Administrator command logout by nobody \(uid 65534, pid \d+\): user=vpnclient1: failed: "
                         "no session for user 'vpnclient1'", audit)
