"""The operator's views: Administration > Sessions, as the VPN 3000 shows it (SCENARIO.md).

One row per *session* (a login): the IKE SAs of a session share its session id, and a phase 1 re-authentication
makes a second one for a while; phase 2 rekeys replace its child SAs. Login time, duration and the byte counters
are the session's, so none of them restarts at a rekey.

Pure: these functions read the core (IkeEndpoint / IkeSA), an ESP SA table (natt.esp.table.SaTable: the
daemon's data path keeps one, so does the protocol simulation) and the per-session totals of child SAs already
removed; no sockets, no clocks (both times come in as arguments: `now` on the wall clock, `core_now` on the
core's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from natt.crypto.dh import get_group
from natt.esp.table import Inbound, SaTable
from natt.esp.transforms import make_transform
from natt.ike.endpoint import IkeEndpoint
from natt.ike.ikesa import ChildSA, IkeSA, State
from natt.ike.throttle import LoginThrottle


class Totals(Protocol):
    """What a session's removed child SAs carried (natt_daemons.common.datapath.SessionTotals)."""

    bytes_rx: int
    packets_rx: int
    bytes_tx: int
    packets_tx: int


@dataclass
class Session:
    """A login: its live IKE SAs (oldest first; two during a re-authentication) and the current one, the newest
    established."""

    id: int
    sas: list[IkeSA]
    current: IkeSA

    @property
    def user(self) -> str:
        return self.current.user


def group_sessions(sas: Iterable[IkeSA]) -> list[Session]:
    """The logged-in sessions among these IKE SAs (those with an established SA of a user), by session id."""
    members: dict[int, list[IkeSA]] = {}
    for sa in sas:
        if sa.state is not State.DELETED and sa.user:
            members.setdefault(sa.session_id, []).append(sa)
    out = []
    for session_id, group in members.items():
        established = [sa for sa in group if sa.state is State.ESTABLISHED]
        if not established:
            continue  # still logging in: not a session the operator sees yet
        group.sort(key=_age)
        out.append(Session(session_id, group, max(established, key=_age)))
    return sorted(out, key=lambda s: s.id)


def user_sessions(ep: IkeEndpoint, user: str) -> list[Session]:
    return group_sessions(ep.sessions_of(user))


def _age(sa: IkeSA) -> tuple[float, int]:
    return (sa.established_at if sa.established_at is not None else float("inf"), sa.id)


def duration(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _remaining(at: float | None, core_now: float) -> int | None:
    return None if at is None else max(0, int(at - core_now))


def _wall(at: float | None, now: float, core_now: float) -> float | None:
    """A core time on the wall clock `now` is on."""
    return None if at is None else now - (core_now - at)


def _protocol(sa: IkeSA) -> str:
    if sa.udp_encap:
        return "IPsec/NAT-T"
    return "IPsec/UDP" if sa.cisco_udp_port is not None else "IPSec"


PROTOCOLS = ("IPSec", "IPsec/NAT-T", "IPsec/UDP")  # the Protocol column's values (_protocol)


def session_counts(ep: IkeEndpoint, groups: Iterable[str]) -> dict[str, dict[str, int]]:
    """Live sessions, protocol → group → count, as the Sessions page counts them: every protocol with every
    configured group (0 where none), and any other group that still has sessions (one a reload removed)."""
    counts = {p: dict.fromkeys(sorted(groups), 0) for p in PROTOCOLS}
    for session in group_sessions(ep.sas.values()):
        sa = session.current
        by_group = counts.setdefault(_protocol(sa), {})
        group = sa.group.name if sa.group else ""
        by_group[group] = by_group.get(group, 0) + 1
    return counts


def _children(session: Session, table: SaTable) -> list[tuple[IkeSA, Inbound]]:
    """Every installed pair of the session, across its IKE SAs (superseded ones included until removed)."""
    return [(sa, entry) for sa in session.sas for entry in table.children(sa.id)]


def counters(session: Session, table: SaTable, totals: Mapping[int, Totals]) -> dict[str, int]:
    """The session's traffic: its live pairs' counters plus what its removed pairs carried."""
    t = totals.get(session.id)
    c = {"bytes_tx": t.bytes_tx, "bytes_rx": t.bytes_rx, "packets_tx": t.packets_tx, "packets_rx": t.packets_rx} \
        if t is not None else dict.fromkeys(("bytes_tx", "bytes_rx", "packets_tx", "packets_rx"), 0)
    for _, entry in _children(session, table):
        c["bytes_rx"] += entry.esp.bytes
        c["packets_rx"] += entry.esp.packets
        c["bytes_tx"] += entry.outbound.esp.bytes
        c["packets_tx"] += entry.outbound.esp.packets
    return c


def _encryption(session: Session) -> str:
    newest: ChildSA | None = None
    for sa in session.sas:
        for child in sa.children.values():
            if newest is None or child.established_at >= newest.established_at:
                newest = child
    if newest is not None:
        p = newest.proposal
        return make_transform(p.transform, p.key_bits, p.auth).display_cipher
    sa = session.current
    return sa.cipher.name if sa.cipher else ""


def lockouts(throttle: LoginThrottle, core_now: float, now: float) -> list[dict[str, Any]]:
    """Current XAUTH lockouts, their end on the wall clock `now` is on (None: until an operator unlocks)."""
    return [{"kind": lo.kind, "key": lo.key, "failures": lo.failures,
             "until": None if lo.until is None else now + (lo.until - core_now)}
            for lo in throttle.lockouts(core_now)]


def sessions(ep: IkeEndpoint, table: SaTable, totals: Mapping[int, Totals], login: Mapping[int, float],
             session_limit: int, now: float, core_now: float) -> dict[str, Any]:
    """Administration > Sessions: the summary and one row per remote access session. `login`: session id → when
    it first logged in (wall clock)."""
    rows = []
    for session in group_sessions(ep.sas.values()):
        sa = session.current
        start = login.get(session.id, now)
        rows.append({
            "session_id": session.id,
            "username": sa.user,
            "assigned_ip": sa.assigned_address or "",
            "public_ip": sa.remote[0],
            "public_port": sa.remote[1],
            "group": sa.group.name if sa.group else "",
            "protocol": _protocol(sa),
            "encryption": _encryption(session),
            "login_time": start,
            "duration": duration(now - start),
            "client": sa.peer_app_version or "",
            **counters(session, table, totals),
            "ike_sas": len(session.sas),
        })
    return {
        "summary": {
            "active_lan_to_lan": 0,
            "active_remote_access": len(rows),
            "active_management": 0,
            "total_active": len(rows),
            "peak_concurrent": max(ep.peak_sessions, len(rows)),
            "concurrent_limit": session_limit,
            "total_cumulative": ep.total_sessions,
        },
        "remote_access": rows,
        "lockouts": lockouts(ep.throttle, core_now, now),
    }


def _lifetime(sa: IkeSA) -> int:
    if sa.established_at is not None and sa.expires_at is not None:
        return round(sa.expires_at - sa.established_at)
    return sa.proposal.lifetime if sa.proposal else 0


def _ike(sa: IkeSA, session: Session, now: float, core_now: float) -> dict[str, Any]:
    return {
        "session_id": session.id,
        "ike_sa_id": sa.id,
        "username": sa.user,
        "public_ip": sa.remote[0],
        "encryption": sa.cipher.name if sa.cipher else "",
        "hashing": sa.hash.name if sa.hash else "",
        "diffie_hellman_group": get_group(sa.proposal.group).name if sa.proposal else "",
        "authentication_mode": "Pre-Shared Keys (XAUTH)" if sa.xauth_done else "Pre-Shared Keys",
        "negotiation_mode": sa.mode.capitalize(),
        "rekey_interval": _lifetime(sa),
        "established_at": _wall(sa.established_at, now, core_now),
        "expires_at": _wall(sa.expires_at, now, core_now),
        "expires_in": _remaining(sa.expires_at, core_now),
        "udp_source_port": sa.remote[1],
        "udp_destination_port": sa.local[1],
    }


def _newest_per_selectors(session: Session) -> dict[tuple[str, str], ChildSA]:
    newest: dict[tuple[str, str], ChildSA] = {}
    for sa in session.sas:
        for child in sa.children.values():
            key = (child.local_selector, child.remote_selector)
            if key not in newest or child.established_at >= newest[key].established_at:
                newest[key] = child
    return newest


def session_detail(session: Session, table: SaTable, totals: Mapping[int, Totals], login: Mapping[int, float],
                   now: float, core_now: float) -> dict[str, Any]:
    """One session in detail: its current IKE SA (with the other one during a re-authentication) and one entry per
    IPsec SA, each with its own counters, age and remaining lifetime, and whether a newer pair replaces it."""
    newest = _newest_per_selectors(session)
    ipsec = []
    for sa, entry in _children(session, table):
        child = sa.children.get(entry.esp.spi)
        if child is None:
            continue
        t = entry.esp.transform
        replaced = child.delete_at is not None or \
            newest.get((child.local_selector, child.remote_selector)) is not child
        ipsec.append({
            "ike_sa_id": sa.id,
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
            "rekey_interval": round(child.expires_at - child.established_at),
            "established_at": _wall(child.established_at, now, core_now),
            "expires_in": _remaining(child.expires_at, core_now),
            "replaced": replaced,
            "delete_in": _remaining(child.delete_at, core_now),
            "idle_time": "" if entry.seen_data else duration(core_now - child.established_at),
            "bytes_received": entry.esp.bytes,
            "bytes_transmitted": entry.outbound.esp.bytes,
            "packets_received": entry.esp.packets,
            "packets_transmitted": entry.outbound.esp.packets,
        })
    ipsec.sort(key=lambda s: s["established_at"])
    start = login.get(session.id, now)
    return {
        "session_id": session.id,
        "username": session.user,
        "login_time": start,
        "duration": duration(now - start),
        **counters(session, table, totals),
        "ike": _ike(session.current, session, now, core_now),
        # Every live IKE SA of the session: one, or two while the client re-authenticates (the newest is current).
        "ike_sas": [{"ike_sa_id": sa.id, "state": sa.state.value, "current": sa is session.current,
                     "established_at": _wall(sa.established_at, now, core_now),
                     "expires_in": _remaining(sa.expires_at, core_now)} for sa in session.sas],
        "ipsec": ipsec,
    }
