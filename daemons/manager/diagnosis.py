"""The seed's failure, recognised on a session row: NAT Transparency off, client behind PAT, ESP that cannot cross.

The tech note's troubleshooting case: the tunnel comes up, Sessions shows Protocol `IPSec` (not `IPsec/NAT-T`)
and 0 bytes received, the client counts packets encrypted and none decrypted. With NAT-T off the concentrator
sends and expects plain ESP (IP protocol 50): ESP has no ports, so a PAT device, which tells its inside hosts
apart by port, cannot translate it, and the client's ESP never arrives. A client whose IKE arrives from a port
other than 500 had its source port rewritten: it is behind PAT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IKE_PORT = 500
PLAIN_ESP = "IPSec"
NAT_T = "IPsec/NAT-T"


@dataclass(frozen=True)
class Diagnosis:
    user: str
    summary: str  # one line, for the Sessions table
    reasons: tuple[str, ...]  # the why, a sentence each
    fix: str  # what to do
    switch_needed: bool  # NAT-T must be turned on (else: it is on, the client must reconnect)


def behind_pat(row: Mapping[str, Any]) -> bool:
    port = row.get("public_port")
    return isinstance(port, int) and port != IKE_PORT


def diagnose(row: Mapping[str, Any], nat_traversal: bool | None) -> Diagnosis | None:
    """Why this session passes no data, when it is the seed's case; None otherwise (or when it cannot be told:
    `nat_traversal` None means the concentrator's setting is unknown)."""
    if row.get("protocol") != PLAIN_ESP or row.get("bytes_rx", 0) != 0 or nat_traversal is None:
        return None
    user = str(row.get("username", ""))
    public = f"{row.get('public_ip', '?')} port {row.get('public_port', '?')}"
    pat = behind_pat(row)
    if pat:
        where = (f"{user}'s IKE arrives from {public}, not port {IKE_PORT}: a PAT device between the client and "
                 "the concentrator rewrote its source port, so the client is behind PAT.")
    else:
        where = (f"{user}'s IKE arrives from {public}; if a NAT or PAT device is on its path, it cannot carry "
                 "plain ESP.")
    esp = ("The session runs plain ESP (IP protocol 50, shown as Protocol IPSec): ESP has no ports, so the PAT "
           "device cannot tell its inside hosts' ESP apart and it cannot cross the PAT; 0 bytes have been "
           "received.")
    if nat_traversal is False:
        return Diagnosis(
            user=user,
            summary=("NAT Transparency (IPSec over NAT-T) is off and the client is behind PAT: its ESP cannot "
                     "cross the PAT" if pat else
                     "no ESP received over plain IPSec while NAT Transparency (IPSec over NAT-T) is off"),
            reasons=(where, "NAT Transparency (IPSec over NAT-T) is off on this concentrator, so the client's "
                            "NAT-T offer was not taken and no UDP 4500 encapsulation was negotiated.", esp),
            fix=("Turn on Configuration > Tunneling > IPSec > NAT Transparency > IPSec over NAT-T (the "
                 "concentrator reloads), then reconnect the client: the new tunnel uses UDP 4500, which the PAT "
                 "translates."),
            switch_needed=True,
        )
    if pat:
        return Diagnosis(
            user=user,
            summary="set up while NAT Transparency was off: reconnect the client to use NAT-T",
            reasons=(where, "NAT Transparency is on now, but this session was negotiated before it was: it keeps "
                            "plain ESP until it is set up again.", esp),
            fix="Log the session out (or disconnect and reconnect the client): the new tunnel uses NAT-T.",
            switch_needed=False,
        )
    return None


def diagnose_all(rows: list[Mapping[str, Any]], nat_traversal: bool | None) -> dict[str, Diagnosis]:
    found = {}
    for row in rows:
        d = diagnose(row, nat_traversal)
        if d is not None:
            found[d.user] = d
    return found
