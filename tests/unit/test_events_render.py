"""The renderers beyond the seed blocks (those are in test_events_seeds): time edges, wrapping,
headers without a peer, client severities other than Info, and JSON."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from natt.events import EventLog, catalog, render_client, render_concentrator, render_json
from natt.events.render import hard_wrap

pytestmark = pytest.mark.unit

PEER = "203.0.113.78"


def _epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_milliseconds_round_once_into_the_next_second() -> None:
    log = EventLog()
    entry = log.emit(catalog.NAT_KEEPALIVE_SENT, _epoch(2002, 12, 31, 23, 59, 59) + 0.9996, peer=PEER)
    assert render_concentrator(entry).split("\n")[0] == "1 01/01/2003 00:00:00.000 SEV=9 IPSECDBG/18 RPT=1 " + PEER
    assert render_client(entry).split("\n")[0].startswith("1      00:00:00.000 01/01/03 ")


def test_header_without_peer_or_with_a_hidden_peer() -> None:
    log = EventLog()
    t = _epoch(2002, 10, 20, 20, 22, 48) + 0.28
    nobody = log.emit(catalog.NAT_KEEPALIVE_SENT, t)
    hidden = log.emit(catalog.NAT_KEEPALIVE_RECEIVED, t, peer=PEER)  # the device never prints it
    assert render_concentrator(nobody) == ("1 10/20/2002 20:22:48.280 SEV=9 IPSECDBG/18 RPT=1\n"
                                           "Xmit IPSEC-over-UDP NAT keepalive packet: success")
    assert render_concentrator(hidden).split("\n")[0] == "2 10/20/2002 20:22:48.280 SEV=9 IPSECDBG/17 RPT=1"
    assert hidden.peer == PEER  # still there for filtering and JSON
    assert render_json(hidden)["peer"] == PEER


def test_hard_wrap_at_80_columns() -> None:
    line = "x" * 79 + " " + "y" * 10
    assert hard_wrap(line, 80) == ["x" * 79, "y" * 10]
    assert hard_wrap("short", 80) == ["short"]
    assert hard_wrap("a" * 160, 80) == ["a" * 80, "a" * 80]
    assert hard_wrap("a" * 100, 0) == ["a" * 100]
    log = EventLog()
    entry = log.emit(catalog.DIAGNOSIS, 0.0, text="z" * 100)
    assert render_concentrator(entry).split("\n")[1:] == ["z" * 80, "z" * 20]
    assert render_concentrator(entry, width=0).split("\n")[1:] == ["z" * 100]
    assert render_client(entry).split("\n")[1:] == ["z" * 100]  # the client does not cut lines


def test_client_header_for_warnings_and_wide_numbers() -> None:
    log = EventLog()
    t = _epoch(2002, 10, 18, 21, 8, 0) + 0.332
    entry = log.emit(catalog.NO_DATA_DECRYPTED, t, encrypted=13)
    assert render_client(dataclasses.replace(entry, seq=100)).split("\n") == [
        "100    21:08:00.332 10/18/02 Sev=Warning/2   NAT/0xA3B001FF",
        "No packets decrypted (13 encrypted, 0 decrypted): the concentrator is probably not doing NAT-T; "
        "ask its administrator to enable NAT Transparency",
    ]
    wide = dataclasses.replace(entry, seq=1234567)
    assert render_client(wide).startswith("1234567 21:08:00.332 ")


def test_multi_line_client_text() -> None:
    log = EventLog()
    entry = log.emit(catalog.NAT_DETECTION_STATUS, _epoch(2002, 10, 18, 21, 8, 0) + 0.101,
                     remote=catalog.nat_word(False), local=catalog.nat_word(True))
    assert render_client(dataclasses.replace(entry, seq=66)) == (
        "66     21:08:00.101 10/18/02 Sev=Info/5   IKE/0x63000071\n"
        "Automatic NAT Detection Status:\n"
        "Remote end is NOT behind a NAT device\n"
        "This end IS behind a NAT device")


def test_json_has_both_renderings_parts_and_serialises() -> None:
    log = EventLog()
    entry = log.emit(catalog.DPD_ACK_SENT, _epoch(2002, 10, 20, 20, 22, 58) + 0.31, peer=PEER,
                     group="ciscovpn", user="vpnclient1", seq=0x2D932552)
    data = render_json(entry)
    assert data == {
        "seq": 1,
        "time": entry.time,
        "timestamp": "2002-10-20T20:22:58.310Z",
        "class": "IKEDBG",
        "id": 36,
        "severity": 9,
        "category": "Debug",
        "client_severity": "Debug/9",
        "client_code": "0x63000024",
        "repeat": 1,
        "peer": PEER,
        "name": "DPD_ACK_SENT",
        "text": "Group [ciscovpn] User [vpnclient1]\n"
                "Sending keep-alive of type DPD R-U-THERE-ACK (seq number 0x2d932552)",
        "fields": {"seq": 0x2D932552, "peer": PEER, "group": "ciscovpn", "user": "vpnclient1"},
    }
    assert json.loads(json.dumps(data)) == data


def test_bytes_fields_become_hex_in_json() -> None:
    log = EventLog()
    entry = log.emit(catalog.VENDOR_ID_PAYLOAD, 0.0, vid=bytes.fromhex("AFCAD71368A1F1C96B8696FC77570100"))
    assert entry.text == "Vendor ID payload = AFCAD71368A1F1C96B8696FC77570100"
    assert render_json(entry)["fields"]["vid"] == "afcad71368a1f1c96b8696fc77570100"
