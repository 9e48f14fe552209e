"""The operator's views: Administration > Sessions, as the VPN 3000 shows it (SCENARIO.md)."""

from __future__ import annotations

from typing import Any

from natt.esp.transforms import make_transform
from natt.ike.endpoint import IkeEndpoint
from natt.ike.ikesa import IkeSA, State
from natt.ike.throttle import LoginThrottle
from natt_daemons.common.datapath import Datapath
from natt_daemons.concentrator.config import ConcentratorSettings


def _duration(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _protocol(sa: IkeSA) -> str:
    if sa.udp_encap:
        return "IPsec/NAT-T"
    return "IPsec/UDP" if sa.cisco_udp_port is not None else "IPSec"


def _bytes(sa: IkeSA, dp: Datapath) -> tuple[int, int]:
    tx = rx = 0
    for entry in dp.children(sa.id):
        rx += entry.esp.bytes
        tx += entry.outbound.esp.bytes
    return tx, rx


def _encryption(sa: IkeSA) -> str:
    for child in sa.children.values():
        p = child.proposal
        return make_transform(p.transform, p.key_bits, p.auth).display_cipher
    return sa.cipher.name if sa.cipher else ""


def lockouts(throttle: LoginThrottle, core_now: float, now: float) -> list[dict[str, Any]]:
    """Current XAUTH lockouts, their end on the wall clock `now` is on (None: until an operator unlocks)."""
    return [{"kind": lo.kind, "key": lo.key, "failures": lo.failures,
             "until": None if lo.until is None else now + (lo.until - core_now)}
            for lo in throttle.lockouts(core_now)]


def sessions(ep: IkeEndpoint, dp: Datapath, login: dict[int, float], settings: ConcentratorSettings,
             now: float, core_now: float) -> dict[str, Any]:
    rows = []
    for sa in ep.sas.values():
        if sa.state is not State.ESTABLISHED or not sa.user:
            continue
        tx, rx = _bytes(sa, dp)
        start = login.get(sa.id, now)
        rows.append({
            "username": sa.user,
            "assigned_ip": sa.assigned_address or "",
            "public_ip": sa.remote[0],
            "public_port": sa.remote[1],
            "group": sa.group.name if sa.group else "",
            "protocol": _protocol(sa),
            "encryption": _encryption(sa),
            "login_time": start,
            "duration": _duration(now - start),
            "client": sa.peer_app_version or "",
            "bytes_tx": tx,
            "bytes_rx": rx,
        })
    return {
        "summary": {
            "active_lan_to_lan": 0,
            "active_remote_access": len(rows),
            "active_management": 0,
            "total_active": len(rows),
            "peak_concurrent": max(ep.peak_sessions, len(rows)),
            "concurrent_limit": settings.policy.session_limit,
            "total_cumulative": ep.total_sessions,
        },
        "remote_access": rows,
        "lockouts": lockouts(ep.throttle, core_now, now),
    }


def session_detail(sa: IkeSA, dp: Datapath, login: dict[int, float], now: float) -> dict[str, Any]:
    from natt.crypto.dh import get_group

    ike = {
        "session_id": sa.id,
        "username": sa.user,
        "public_ip": sa.remote[0],
        "encryption": sa.cipher.name if sa.cipher else "",
        "hashing": sa.hash.name if sa.hash else "",
        "diffie_hellman_group": get_group(sa.proposal.group).name if sa.proposal else "",
        "authentication_mode": "Pre-Shared Keys (XAUTH)" if sa.xauth_done else "Pre-Shared Keys",
        "negotiation_mode": sa.mode.capitalize(),
        "rekey_interval": sa.proposal.lifetime if sa.proposal else 0,
        "udp_source_port": sa.remote[1],
        "udp_destination_port": sa.local[1],
    }
    ipsec = []
    for entry in dp.children(sa.id):
        child = sa.children.get(entry.esp.spi)
        if child is None:
            continue
        t = entry.esp.transform
        ipsec.append({
            "protocol": _protocol(sa),
            "remote_address": child.remote_selector,
            "local_address": child.local_selector,
            "encryption": t.display_cipher,
            "hashing": t.display_hash,
            "encapsulation_mode": "Tunnel",
            "udp_source_port": entry.outbound.remote[1] if entry.outbound.udp else 0,
            "udp_destination_port": sa.local[1] if entry.outbound.udp else 0,
            "inbound_spi": f"0x{entry.esp.spi:08x}",
            "outbound_spi": f"0x{entry.outbound.esp.spi:08x}",
            "rekey_interval": child.proposal.lifetime,
            "idle_time": _duration(now - login.get(sa.id, now)) if not entry.seen_data else "",
            "bytes_received": entry.esp.bytes,
            "bytes_transmitted": entry.outbound.esp.bytes,
            "packets_received": entry.esp.packets,
            "packets_transmitted": entry.outbound.esp.packets,
        })
    return {"ike": ike, "ipsec": ipsec, "login_time": login.get(sa.id, now),
            "duration": _duration(now - login.get(sa.id, now))}
