"""What one event-log entry is, on both devices of the seed: the VPN 3000 concentrator's
"Monitoring > Filterable Event Log" and the Cisco VPN Client's log ("Sev=Info/4 IKE/0x63000013").

Both devices descend from Altiga and share one severity scale, so one number per entry
serves both renderings (see ``client_severity``).

Severity, as the VPN 3000 reference defines it (1 is the most significant):

====== ============= ===================================================
level  category      meaning
====== ============= ===================================================
1      Fault         a crash or non-recoverable error
2      Warning       a severe problem that needs the operator
3      Warning       a potentially serious problem
4      Information   information with few details
5      Information   information with moderate detail
6      Information   information with the greatest detail
7      Debug         least debugging detail
8      Debug         moderate debugging detail
9      Debug         greatest debugging detail
10     Packet Decode high-level packet header decoding
11     Packet Decode low-level packet header decoding
12     Packet Decode hex dump of header
13     Packet Decode hex dump of packet
====== ============= ===================================================

The seed's concentrator log uses 4 (IKE/49, IKE/120, IKE/173), 7-9 (IKEDBG, IPSECDBG) and
8 (IKEDECODE): the tech note filters "Severity 1-13" to see them all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

SEVERITY_MIN = 1
SEVERITY_MAX = 13


class EventClass(StrEnum):
    """Where an event comes from. The value is what both logs print before "/id"."""

    # Concentrator classes (VPN 3000 names; *DBG and *DECODE are the debug variants).
    IKE = "IKE"
    IKEDBG = "IKEDBG"
    IKEDECODE = "IKEDECODE"
    IPSEC = "IPSEC"
    IPSECDBG = "IPSECDBG"
    IPSECDECODE = "IPSECDECODE"
    AUTH = "AUTH"
    AUTHDBG = "AUTHDBG"
    AUTHDECODE = "AUTHDECODE"
    # Client classes (Cisco VPN Client names).
    CM = "CM"  # connection manager
    DIALER = "DIALER"
    CVPND = "CVPND"  # the client's service daemon
    # natt's own classes, for events neither device has a class for.
    XAUTH = "XAUTH"
    NAT = "NAT"
    DPD = "DPD"
    ADMIN = "ADMIN"  # the audit trail of the control socket's admin commands


def severity_category(severity: int) -> str:
    """The VPN 3000 category name of a severity (table in the module docstring)."""
    check_severity(severity)
    if severity == 1:
        return "Fault"
    if severity <= 3:
        return "Warning"
    if severity <= 6:
        return "Information"
    if severity <= 9:
        return "Debug"
    return "Packet Decode"


def check_severity(severity: int) -> int:
    if not SEVERITY_MIN <= severity <= SEVERITY_MAX:
        raise ValueError(f"severity {severity} is outside {SEVERITY_MIN}..{SEVERITY_MAX}")
    return severity


# ---- the client's "Sev=Info/4  IKE/0x63000013" -------------------------------------------------

# The client prints the category in a shorter word and keeps the level number: "Sev=Info/4".
_CLIENT_WORDS = {"Fault": "Fault", "Warning": "Warning", "Information": "Info", "Debug": "Debug",
                 "Packet Decode": "Decode"}


def client_severity(severity: int) -> tuple[str, int]:
    """The one mapping from the shared scale to the client's "Sev=<word>/<level>"."""
    return _CLIENT_WORDS[severity_category(severity)], severity


# Client event codes are Windows message codes: the top nibble carries the severity bits
# (0x6 informational, 0xA warning, 0xE error, each with the "customer" bit set), then a
# 12-bit facility naming the class, then a 16-bit number: IKE/0x63000013 = info, IKE, 0x13.
CLIENT_FACILITY: dict[EventClass, int] = {
    EventClass.IKE: 0x300,  # seed: IKE/0x630000xx
    EventClass.CM: 0x310,  # seed: CM/0x631000xx
    EventClass.DIALER: 0x330,  # seed: DIALER/0x633000xx
    EventClass.CVPND: 0x340,
    EventClass.IPSEC: 0x370,  # seed: IPSEC/0x637000xx
    # Not in the seed: natt's own choice, kept clear of the facilities above.
    EventClass.XAUTH: 0x3A0,
    EventClass.NAT: 0x3B0,
    EventClass.DPD: 0x3C0,
    EventClass.AUTH: 0x3D0,
    EventClass.ADMIN: 0x3E0,
}
# Debug and decode classes share their parent's facility.
for _debug, _parent in ((EventClass.IKEDBG, EventClass.IKE), (EventClass.IKEDECODE, EventClass.IKE),
                        (EventClass.IPSECDBG, EventClass.IPSEC), (EventClass.IPSECDECODE, EventClass.IPSEC),
                        (EventClass.AUTHDBG, EventClass.AUTH), (EventClass.AUTHDECODE, EventClass.AUTH)):
    CLIENT_FACILITY[_debug] = CLIENT_FACILITY[_parent]


def client_severity_nibble(severity: int) -> int:
    category = severity_category(severity)
    if category == "Fault":
        return 0xE
    if category == "Warning":
        return 0xA
    return 0x6


def client_code(cls: EventClass, severity: int, number: int) -> int:
    """Build a client event code, e.g. client_code(IKE, 4, 0x13) == 0x63000013."""
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"client event number {number:#x} does not fit in 16 bits")
    return (client_severity_nibble(severity) << 28) | (CLIENT_FACILITY[cls] << 16) | number


# ---- secrets ------------------------------------------------------------------------------------

MASK = "********"

SECRET_FIELD_NAMES = frozenset({
    "psk", "preshared_key", "pre_shared_key", "shared_secret", "group_password",
    "password", "passwd", "passphrase", "passcode", "pin", "token",
    "key", "secret", "keymat", "skeyid", "skeyid_d", "skeyid_a", "skeyid_e",
})
_SECRET_SUFFIXES = ("_key", "_secret", "_password", "_psk", "_keymat")


@functools.lru_cache(maxsize=1024)  # a handful of field names, asked on every entry
def is_secret_field(name: str) -> bool:
    """Whether a template field holds key material or a password and must be masked.

    Suffix rules catch "enc_key" or "xauth_password"; lengths such as "encr_key_len" are
    not secrets and do not end in a secret word, so they stay readable.
    """
    lowered = name.lower()
    return lowered in SECRET_FIELD_NAMES or lowered.startswith("skeyid") or lowered.endswith(_SECRET_SUFFIXES)


# ---- the entry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    """One logged event, as both renderers need it.

    ``repeat`` is the VPN 3000's RPT: how many times this event (class and id) has been
    logged since the log was created, this one included. ``text`` is already rendered and
    already masked; it may hold several lines.
    """

    seq: int
    time: float  # epoch seconds, UTC; the caller's clock
    cls: EventClass
    event_id: int
    severity: int
    peer: str | None
    text: str
    repeat: int
    client_code: int | None = None  # None: derived from class, severity and id when rendered
    name: str | None = None  # the catalogue name, e.g. "NAT_T_NEGOTIATED"
    peer_shown: bool = True  # some VPN 3000 events never print the address (IPSECDBG/17)
    fields: tuple[tuple[str, Any], ...] = ()  # the template's values, masked, for --json

    @property
    def code(self) -> int:
        """The client event code printed after the class: "IKE/0x63000013"."""
        if self.client_code is not None:
            return self.client_code
        return client_code(self.cls, self.severity, self.event_id & 0xFFFF)

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")
