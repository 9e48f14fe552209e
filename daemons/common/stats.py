"""The data path's part of a `stats` reply (concentrator and client): IPsec traffic, per transform, batching.

Read at the moment of asking from what the data path keeps (its SA table's live counters, what its removed pairs
carried, its drop counters): nothing is copied or counted twice.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from natt_daemons.common.datapath import Datapath, TransformTotals


def transforms(dp: Datapath) -> dict[str, dict[str, int]]:
    """Transform name → its in/out bytes and packets and its SAs' drops, since the start."""
    return {name: asdict(t) for name, t in sorted(dp.by_transform().items())}


def ipsec(dp: Datapath, by_transform: dict[str, dict[str, int]]) -> dict[str, Any]:
    """All transforms together, the drops by reason (the data path's: no SA, replay, ICV, ...) and the live pairs."""
    total = TransformTotals()
    for t in by_transform.values():
        total.in_bytes += t["in_bytes"]
        total.out_bytes += t["out_bytes"]
        total.in_packets += t["in_packets"]
        total.out_packets += t["out_packets"]
    return {
        "in_bytes": total.in_bytes,
        "out_bytes": total.out_bytes,
        "in_packets": total.in_packets,
        "out_packets": total.out_packets,
        "drops": dict(dp.stats.drops),
        "sas": len(dp.table.inbound),
    }


def datapath_sections(dp: Datapath) -> dict[str, Any]:
    """{"ipsec", "transforms", "datapath"} of a `stats` reply."""
    per = transforms(dp)
    return {"ipsec": ipsec(dp, per), "transforms": per, "datapath": dp.counters()}
