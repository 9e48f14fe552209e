"""The seed's failure case, as `natt-lab up --nat-transparency off` shows it: what each side sees, and the fix.

The tech note's situation: NAT Transparency off on the concentrator, transparent tunneling on in the clients,
clients behind a PAT device. IKE works (UDP 500 passes the PAT), the clients connect, and no data passes: their
ESP is IP protocol 50, which a PAT device cannot tell apart per client, so it never reaches the concentrator.
"""

from __future__ import annotations

from typing import Any

from natt.events.catalog import MESSAGES
from natt_daemons.common.control import ControlError, call
from natt_daemons.lab import procs
from natt_daemons.lab.scenario import CLIENTS, LAB_USERS, Scenario, _short
from natt_daemons.lab.topology import ADDR

# The concentrator's own diagnoses of the case (natt/events/catalog.py).
CONCENTRATOR_DIAGNOSES = ("NAT_WITHOUT_NAT_T", "NAT_T_DISABLED")
MANAGER_SWITCH = "Configuration > Tunneling > IPSec > NAT Transparency: IPSec over NAT-T"


def stuck_sessions(sc: Scenario) -> list[dict[str, Any]]:
    """Sessions up without NAT-T and with nothing received: the concentrator's side of the failure."""
    rows = call(sc.socket("concentrator"), "sessions")["remote_access"]
    return [r for r in rows if r["protocol"] == "IPSec" and r["bytes_rx"] == 0]


def client_status(sc: Scenario, name: str, wait: float) -> dict[str, Any]:
    """The client's status once it has diagnosed the silence: it needs a few unanswered packets (the lab's first
    ping may not have sent enough), and looks every two seconds."""
    def diagnosed() -> dict[str, Any] | None:
        s = sc.status(name)
        return s if s.get("diagnosis") else None

    if not diagnosed():
        role = next(r for r, n in CLIENTS.items() if n == name)
        sc.lab.ping(role, ADDR.server, count=3, wait=1)
    try:
        return procs.wait_for(diagnosed, wait, 0.5, f"{name} diagnosis")
    except (TimeoutError, RuntimeError, ControlError):
        return sc.status(name)


def _concentrator_says(sc: Scenario) -> list[str]:
    """Each of the concentrator's diagnoses once, unwrapped (the log's text is cut at 80 columns)."""
    seen: dict[str, str] = {}
    for e in call(sc.socket("concentrator"), "log", {"classes": ["NAT"]}):
        name = e.get("name")
        if name in CONCENTRATOR_DIAGNOSES and name not in seen:
            try:
                text = MESSAGES[name].render(**e["fields"])
            except (KeyError, ValueError):
                text = e["text"]
            seen[name] = f"{e['class']}/{e['id']} {' '.join(text.split())}"
    return list(seen.values())


def diagnosis_text(sc: Scenario, wait: float = 6.0) -> str:
    conc, client = _short("natt-concentrator"), _short("natt-client")
    csock = sc.socket("concentrator")
    lines = ["=== Diagnosis: the seed's failure case (NAT Transparency is off on the concentrator) ===",
             "Concentrator (natt-concentrator sessions):"]
    for r in stuck_sessions(sc):
        lines.append(f"  {r['username']} from {r['public_ip']}: protocol {r['protocol']} (not IPsec/NAT-T), "
                     f"{r['bytes_rx']} bytes received: its ESP (IP protocol 50) does not pass the PAT device")
    for text in _concentrator_says(sc):
        lines.append(f"  event log: {text}")
    for name in CLIENTS.values():
        s = client_status(sc, name, wait)
        nat = s.get("nat") or {}
        natd = ("unknown: the concentrator sent no NAT-D (NAT-T not negotiated)"
                if nat.get("this_end_behind_nat") is None else f"behind NAT: {nat['this_end_behind_nat']}")
        lines.append(f"Client {name} (natt-client status): {s['state']}, address {s.get('assigned_address')}, "
                     f"transparent tunneling {'on' if s.get('transparent_tunneling') else 'off'}, tunnel port "
                     f"{s.get('tunnel_port')}, {s.get('packets_encrypted', 0)} packets encrypted / "
                     f"{s.get('packets_decrypted', 0)} decrypted; NAT {natd}")
        lines += [f"  DIAGNOSIS: {d}" for d in s.get("diagnosis", [])]
    lines += [
        "How to fix it:",
        "  1. Turn NAT Transparency on (the concentrator writes nat_traversal = true into its config and reloads;",
        "     sessions already up keep their settings):",
        f"       {conc} nat-transparency --nat-t on --socket {csock}",
        f"     or in the manager: {MANAGER_SWITCH} (one switch, Apply).",
        "  2. End the sessions made without NAT-T (the manager: Administration > Sessions > Logout). Without NAT-T",
        "     no NAT keepalives hold the PAT's mapping of their IKE port open, so a client may already have lost",
        "     its session while the concentrator still counts it against the user's simultaneous logins:",
    ]
    lines += [f"       {conc} logout {user} --socket {csock}" for user in LAB_USERS]
    lines.append("  3. Reconnect the clients, so that they negotiate NAT-T (ESP in UDP 4500):")
    for name in CLIENTS.values():
        sock = sc.socket(name)
        lines.append(f"       {client} disconnect --socket {sock} && {client} connect --socket {sock}")
    lines.append(f"  4. Check: {conc} sessions --socket {csock}   (protocol IPsec/NAT-T, bytes received growing)")
    return "\n".join(lines)
