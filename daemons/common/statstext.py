"""A `stats` reply as the operator reads it on a terminal (`natt-concentrator stats`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WIDTH = 30  # the label column


def _by(counts: Mapping[str, int]) -> str:
    """ "auth_failed 2, xauth_failed 1", most first; "-" when empty."""
    items = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v}" for k, v in items) or "-"


def _line(label: str, value: object) -> str:
    return f"  {label:<{WIDTH}} {value}"


def stats_text(r: Mapping[str, Any]) -> str:
    ike, ipsec, natt, dp = r["ike"], r["ipsec"], r["natt"], r["datapath"]
    out: list[str] = []
    sessions = r.get("sessions")
    if sessions is not None:
        out.append("Sessions")
        out.append(_line("active / peak / limit", f"{sessions['active']} / {sessions['peak']} / {sessions['limit']}"))
        out.append(_line("logins since start", sessions["total"]))
        for protocol, groups in sessions["by"].items():
            for group, n in groups.items():
                if n:
                    out.append(_line(f"{protocol} [{group}]", n))
    client = r.get("client")
    if client is not None:
        out.append("Tunnel")
        out.append(_line("state", client["state"]))
        out.append(_line("reconnects", client["reconnects"]))
    dpd = ike["dpd"]
    out.append("IKE")
    out.append(_line("phase 1 set-ups", ike["setups"]))
    out.append(_line("set-up failures", f"{sum(ike['failures'].values())}  ({_by(ike['failures'])})"))
    out.append(_line("IKE SAs ended", f"{sum(ike['ends'].values())}  ({_by(ike['ends'])})"))
    out.append(_line("rekeys phase 1 / phase 2", f"{ike['rekeys']['phase1']} / {ike['rekeys']['phase2']}"))
    out.append(_line("IPsec SA set-ups", ike["child_sas"]))
    out.append(_line("DPD requests sent / received", f"{dpd['requests_sent']} / {dpd['requests_received']}"))
    out.append(_line("DPD acks sent / received", f"{dpd['acks_sent']} / {dpd['acks_received']}"))
    out.append(_line("DPD timeouts", dpd["timeouts"]))
    out.append(_line("messages sent / received", f"{ike['messages_sent']} / {ike['messages_received']}"))
    out.append(_line("retransmissions", ike["retransmissions"]))
    out.append(_line("peer retransmits answered", ike["retransmits_answered"]))
    if "half_open" in ike:
        out.append(_line("half-open now", ike["half_open"]))
    if "refusals" in ike:
        out.append(_line("refusals", _by(ike["refusals"])))
    out.append("IPsec")
    out.append(_line("bytes in / out", f"{ipsec['in_bytes']} / {ipsec['out_bytes']}"))
    out.append(_line("packets in / out", f"{ipsec['in_packets']} / {ipsec['out_packets']}"))
    out.append(_line("drops", f"{sum(ipsec['drops'].values())}  ({_by(ipsec['drops'])})"))
    out.append(_line("SA pairs now", ipsec["sas"]))
    out.append("NAT-T")
    if "enabled" in natt:
        out.append(_line("NAT transparency", "on" if natt["enabled"] else "off"))
        out.append(_line("sessions using NAT-T", natt["sessions"]))
    out.append(_line("negotiated / refused", f"{natt['negotiated']} / {natt['refused']}"))
    out.append(_line("keepalives sent / received", f"{natt['keepalives_sent']} / {natt['keepalives_received']}"))
    out.append(_line("port floats / rebinds", f"{natt['port_floats']} / {natt['rebinds']}"))
    out.append("Per transform")
    if not r["transforms"]:
        out.append("  (none used yet)")
    for name, t in r["transforms"].items():
        out.append(_line(name, f"in {t['in_bytes']} B / {t['in_packets']} pkts, out {t['out_bytes']} B / "
                               f"{t['out_packets']} pkts, drops {t['drops']}"))
    out.append("Data path")
    out.append(_line("TUN packets read", dp["tun_packets"]))
    out.append(_line("UDP GSO sends / GRO reads", f"{dp['gso_sends']} / {dp['gro_reads']}"))
    out.append(_line("TUN GSO writes / segments", f"{dp['tun_gso_writes']} / {dp['tun_gso_segments']}"))
    on = [name for name, key in (("UDP GSO", "gso"), ("UDP GRO", "gro"), ("TUN GSO", "tun_offload")) if dp[key]]
    out.append(_line("offloads", ", ".join(on) or "none"))
    return "\n".join(out)
