"""Entries as text, in the two formats of the seed, and as JSON.

Concentrator (VPN 3000 Filterable Event Log), one header line then the text::

    2849 10/20/2002 20:22:42.400 SEV=4 IKE/49 RPT=63 171.69.89.78
    Group [ciscovpn] User [vpnclient2]
    Security negotiation complete for User (vpnclient2)

The device's page is 80 columns wide and cuts longer lines at exactly 80 characters, even
inside a word: all four copies of "IPSEC key message parse" in the seeds break after
"err 0" at column 80, and the cleanest copies break again at 160 ("hashKe" / "yLen").

Client (Cisco VPN Client log), one header line then the text::

    43     21:07:42.366 10/18/02 Sev=Info/4   IKE/0x63000013
    SENDING >>> ISAKMP OAK AG (SA, KE, NON, ID, VID, VID, VID, VID, VID)

The seeds disagree on the client's blanks (one or two around the date, 3 to 10 before the
class: a tab, re-typeset); natt uses the Korean seed's first block, the widths below.

Times are UTC and come from the entry: no clock, no time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from natt.events.model import LogEntry, client_severity, severity_category

CONCENTRATOR_WIDTH = 80
CLIENT_SEQ_WIDTH = 6  # "43     ": the number left-aligned in 6 columns, then a blank
CLIENT_DATE_GAP = " "
CLIENT_CLASS_GAP = "   "


def _split_time(time: float) -> tuple[datetime, int]:
    """Whole seconds as a UTC datetime and the milliseconds, rounded once so that 42.9996
    becomes 43.000 and never 42.1000."""
    total_ms = round(time * 1000)
    seconds, millis = divmod(total_ms, 1000)
    return datetime.fromtimestamp(seconds, UTC), millis


def hard_wrap(line: str, width: int) -> list[str]:
    """Cut a line every ``width`` characters, as the concentrator's page does; blanks at a
    cut are dropped from the end of the piece."""
    if width < 1 or len(line) <= width:
        return [line]
    return [line[i:i + width].rstrip() for i in range(0, len(line), width)]


def concentrator_header(entry: LogEntry) -> str:
    stamp, millis = _split_time(entry.time)
    head = (f"{entry.seq} {stamp:%m/%d/%Y %H:%M:%S}.{millis:03d} SEV={entry.severity} "
            f"{entry.cls.value}/{entry.event_id} RPT={entry.repeat}")
    if entry.peer is not None and entry.peer_shown:
        head += f" {entry.peer}"
    return head


def render_concentrator(entry: LogEntry, *, width: int = CONCENTRATOR_WIDTH) -> str:
    """The entry as the VPN 3000 shows it; ``width=0`` leaves long lines whole."""
    lines = [concentrator_header(entry)]
    for line in entry.lines:
        lines.extend(hard_wrap(line, width))
    return "\n".join(lines)


def client_header(entry: LogEntry) -> str:
    stamp, millis = _split_time(entry.time)
    word, level = client_severity(entry.severity)
    return (f"{entry.seq:<{CLIENT_SEQ_WIDTH}} {stamp:%H:%M:%S}.{millis:03d}{CLIENT_DATE_GAP}{stamp:%m/%d/%y}"
            f"{CLIENT_DATE_GAP}Sev={word}/{level}{CLIENT_CLASS_GAP}{entry.cls.value}/0x{entry.code:08X}")


def render_client(entry: LogEntry) -> str:
    """The entry as the Cisco VPN Client's log shows it."""
    return "\n".join([client_header(entry), *entry.lines])


def render_json(entry: LogEntry) -> dict[str, Any]:
    """A JSON-ready dict with everything both renderings use, plus the template's values."""
    stamp, millis = _split_time(entry.time)
    word, level = client_severity(entry.severity)
    return {
        "seq": entry.seq,
        "time": entry.time,
        "timestamp": f"{stamp:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z",
        "class": entry.cls.value,
        "id": entry.event_id,
        "severity": entry.severity,
        "category": severity_category(entry.severity),
        "client_severity": f"{word}/{level}",
        "client_code": f"0x{entry.code:08X}",
        "repeat": entry.repeat,
        "peer": entry.peer,
        "name": entry.name,
        "text": entry.text,
        "fields": dict(entry.fields),
    }
