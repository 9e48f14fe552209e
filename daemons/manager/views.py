"""What each page shows, built from the concentrator's control replies: plain dicts of display strings.

The template renders a view and the page's polling endpoint returns the same view as JSON, so a value is
formatted in one place (here) whether it arrives with the page or two seconds later. Each view has a `key`: what
the page's layout depends on (the sessions listed, the SAs shown). The page reloads when the key changes and
otherwise only replaces the values.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from natt.events.model import SEVERITY_MAX, SEVERITY_MIN, EventClass
from natt_daemons.manager.diagnosis import Diagnosis, diagnose, diagnose_all

CLIENT_CLASSES = frozenset({EventClass.CM, EventClass.DIALER, EventClass.CVPND})  # the VPN Client's, not ours
LOG_CLASSES = tuple(c.value for c in EventClass if c not in CLIENT_CLASSES)


def number(n: object) -> str:
    if isinstance(n, bool):
        return "yes" if n else "no"
    return f"{n:,}" if isinstance(n, int) else str(n)


def clock(t: object) -> str:
    if not isinstance(t, int | float):
        return ""
    return time.strftime("%b %d %H:%M:%S", time.localtime(t))


def seconds(s: object) -> str:
    if not isinstance(s, int | float):
        return "—"
    s = int(s)
    return f"{s:,} s ({s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d})" if s >= 60 else f"{s} s"


def _diag(d: Diagnosis | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"user": d.user, "summary": d.summary, "reasons": list(d.reasons), "fix": d.fix,
            "switch_needed": d.switch_needed}


SUMMARY_LABELS = (
    ("active_lan_to_lan", "Active LAN-to-LAN Sessions"),
    ("active_remote_access", "Active Remote Access Sessions"),
    ("active_management", "Active Management Sessions"),
    ("total_active", "Total Active Sessions"),
    ("peak_concurrent", "Peak Concurrent Sessions"),
    ("concurrent_limit", "Concurrent Sessions Limit"),
    ("total_cumulative", "Total Cumulative Sessions"),
)


def sessions_view(result: Mapping[str, Any], nat_traversal: bool | None, management_sessions: int) -> dict[str, Any]:
    """Administration > Sessions. `management_sessions`: administrators logged in to this manager now."""
    summary = dict(result.get("summary", {}))
    summary["active_management"] = management_sessions
    summary["total_active"] = summary.get("total_active", 0) + management_sessions
    raw_rows = list(result.get("remote_access", []))
    diagnoses = diagnose_all(raw_rows, nat_traversal)
    rows = []
    for r in raw_rows:
        user = r.get("username", "")
        rows.append({
            "username": user,
            "assigned_ip": r.get("assigned_ip", ""),
            "public_ip": r.get("public_ip", ""),
            "public_port": str(r.get("public_port", "")),
            "group": r.get("group", ""),
            "protocol": r.get("protocol", ""),
            "encryption": r.get("encryption", ""),
            "login_time": clock(r.get("login_time")),
            "duration": r.get("duration", ""),
            "client": r.get("client", ""),
            "bytes_tx": number(r.get("bytes_tx", 0)),
            "bytes_rx": number(r.get("bytes_rx", 0)),
            "diagnosis": _diag(diagnoses.get(user)),
        })
    return {
        "key": "|".join(f"{r['username']}:{r['protocol']}:{bool(r['diagnosis'])}" for r in rows)
               + f"|nat={nat_traversal}",
        "summary": [{"field": k, "label": label, "value": number(summary.get(k, 0))} for k, label in SUMMARY_LABELS],
        "rows": rows,
        "nat_traversal": nat_traversal,
        "diagnoses": [d for d in (r["diagnosis"] for r in rows) if d],
        "lockouts": [{"kind": lo.get("kind", ""), "key": lo.get("key", ""), "failures": number(lo.get("failures", 0)),
                      "until": clock(lo.get("until")) or "until unlocked"} for lo in result.get("lockouts", [])],
    }


def _ipsec(sa: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "protocol": sa.get("protocol", ""),
        "remote_address": sa.get("remote_address", ""),
        "local_address": sa.get("local_address", ""),
        "encryption": sa.get("encryption", ""),
        "hashing": sa.get("hashing", ""),
        "encapsulation_mode": sa.get("encapsulation_mode", "Tunnel"),
        "udp_source_port": str(sa.get("udp_source_port") or "—"),
        "udp_destination_port": str(sa.get("udp_destination_port") or "—"),
        "inbound_spi": sa.get("inbound_spi", ""),
        "outbound_spi": sa.get("outbound_spi", ""),
        "rekey_interval": seconds(sa.get("rekey_interval")),
        "expires_in": seconds(sa.get("expires_in")),
        "established": clock(sa.get("established_at")),
        "idle_time": sa.get("idle_time") or "0:00:00",
        "bytes_received": number(sa.get("bytes_received", 0)),
        "bytes_transmitted": number(sa.get("bytes_transmitted", 0)),
        "packets_received": number(sa.get("packets_received", 0)),
        "packets_transmitted": number(sa.get("packets_transmitted", 0)),
        "state": (f"replaced, deleted in {seconds(sa.get('delete_in'))}" if sa.get("delete_in") is not None
                  else "replaced") if sa.get("replaced") else "active",
    }


def _ike(ike: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ike_sa_id": str(ike.get("ike_sa_id", "")),
        "public_ip": ike.get("public_ip", ""),
        "encryption": ike.get("encryption", ""),
        "hashing": ike.get("hashing", ""),
        "diffie_hellman_group": ike.get("diffie_hellman_group", ""),
        "authentication_mode": ike.get("authentication_mode", ""),
        "negotiation_mode": ike.get("negotiation_mode", ""),
        "rekey_interval": seconds(ike.get("rekey_interval")),
        "expires_in": seconds(ike.get("expires_in")),
        "established": clock(ike.get("established_at")),
        "udp_source_port": str(ike.get("udp_source_port", "")),
        "udp_destination_port": str(ike.get("udp_destination_port", "")),
    }


def detail_view(user: str, details: list[Mapping[str, Any]], row: Mapping[str, Any] | None,
                nat_traversal: bool | None) -> dict[str, Any]:
    """One user's sessions (usually one): the IKE SA and each IPsec SA, with SPIs, lifetimes and counters."""
    sessions = []
    for d in details:
        sessions.append({
            "session_id": str(d.get("session_id", "")),
            "login_time": clock(d.get("login_time")),
            "duration": d.get("duration", ""),
            "bytes_tx": number(d.get("bytes_tx", 0)),
            "bytes_rx": number(d.get("bytes_rx", 0)),
            "packets_tx": number(d.get("packets_tx", 0)),
            "packets_rx": number(d.get("packets_rx", 0)),
            "ike": _ike(d.get("ike", {})),
            "ike_sas": len(d.get("ike_sas", [])),
            "ipsec": [_ipsec(sa) for sa in d.get("ipsec", [])],
        })
    key = ";".join(f"{s['session_id']}:{s['ike']['ike_sa_id']}:" + ",".join(sa["inbound_spi"] for sa in s["ipsec"])
                   for s in sessions)
    return {
        "key": key,
        "user": user,
        "row": dict(row) if row else None,
        "sessions": sessions,
        "diagnosis": _diag(diagnose(row, nat_traversal)) if row else None,
    }


def log_view(items: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"seq": int(i.get("seq", 0)), "severity": int(i.get("severity", 0)), "class": i.get("class", ""),
             "text": i.get("text", "")} for i in items]


def _flat(section: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested counters as (dotted name, value) rows. A list of records ({"protocol": "IPSec", "group": "g",
    "count": 0}) gives one row per number, named by the record's words: `by[IPSec, g].count`."""
    out = []
    for k, v in section.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += _flat(v, f"{name}.")
        elif isinstance(v, list) and all(isinstance(i, Mapping) for i in v):
            for item in v:
                words = ", ".join(str(x) for x in item.values() if isinstance(x, str))
                out += _flat({f: x for f, x in item.items() if not isinstance(x, str)}, f"{name}[{words}].")
        else:
            out.append((name, number(v)))
    return out


TRANSFORM_COLUMNS = ("in_bytes", "out_bytes", "in_packets", "out_packets", "drops")
STATS_SECTIONS = (("sessions", "Sessions"), ("ike", "IKE"), ("ipsec", "IPsec"), ("natt", "NAT-T"),
                  ("datapath", "Data path"))


def stats_view(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Statistics from the `stats` command: counter sections and the per-transform table."""
    sections = []
    for key, title in STATS_SECTIONS:
        if isinstance(stats.get(key), Mapping):
            sections.append({"key": key, "title": title, "counters": [
                {"name": n, "value": v} for n, v in _flat(stats[key])]})
    known = {k for k, _ in STATS_SECTIONS} | {"transforms"}
    for key, value in stats.items():
        if key not in known and isinstance(value, Mapping):
            sections.append({"key": key, "title": key, "counters": [{"name": n, "value": v} for n, v in _flat(value)]})
    transforms = [{"name": name, **{c: number(t.get(c, 0)) for c in TRANSFORM_COLUMNS}}
                  for name, t in sorted((stats.get("transforms") or {}).items())]
    key = ";".join(f"{s['key']}:" + ",".join(c["name"] for c in s["counters"]) for s in sections) + \
        "|" + ",".join(t["name"] for t in transforms)
    return {"key": key, "sections": sections, "transforms": transforms, "columns": TRANSFORM_COLUMNS}


def status_stats_view(status: Mapping[str, Any]) -> dict[str, Any]:
    """What `status` holds, for a concentrator without `stats`."""
    sections = []
    for key, title in (("refusals", "Refusals"), ("datapath", "Data path"), ("datapath_drops", "Data path drops")):
        if isinstance(status.get(key), Mapping):
            sections.append({"key": key, "title": title,
                             "counters": [{"name": n, "value": v} for n, v in _flat(status[key])]})
    key = ";".join(f"{s['key']}:" + ",".join(c["name"] for c in s["counters"]) for s in sections)
    return {"key": key, "sections": sections, "transforms": [], "columns": TRANSFORM_COLUMNS}


SEVERITY_RANGE = (SEVERITY_MIN, SEVERITY_MAX)
