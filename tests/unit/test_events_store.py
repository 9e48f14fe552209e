"""EventLog: numbering, RPT, the ring buffer, filters, listeners and secret masking."""

from __future__ import annotations

import math

import pytest

from natt.events import MASK, EventClass, EventLog, LogEntry, Message, MessageFieldError, catalog, render_json
from natt.events.catalog import Origin

pytestmark = pytest.mark.unit

A = "203.0.113.78"
B = "203.0.113.79"
T0 = 1_035_145_362.39  # 10/20/2002 20:22:42.390 UTC, the seed's quick mode


def test_sequence_numbers_start_at_one_and_grow() -> None:
    log = EventLog()
    entries = [log.emit(catalog.NAT_KEEPALIVE_SENT, T0 + i, peer=A) for i in range(3)]
    assert [e.seq for e in entries] == [1, 2, 3]
    assert log.last_seq == 3
    assert len(log) == 3


def test_repeat_counts_per_class_and_id_not_per_peer_or_text() -> None:
    log = EventLog()
    first = log.emit(catalog.PROCESSING_HASH, T0, peer=A)  # IKEDBG/0
    other_text = log.emit(catalog.LOADING_ALL_IPSEC_SAS, T0, peer=B)  # IKEDBG/0 too
    no_peer = log.emit(catalog.PITCHER_KEY_UPDATE, T0, spi=1)  # IKEDBG/0, no peer
    other_id = log.emit(catalog.QM_KEY_GENERATING, T0, peer=A)  # IKEDBG/1
    assert [first.repeat, other_text.repeat, no_peer.repeat, other_id.repeat] == [1, 2, 3, 1]
    assert log.repeat_count(EventClass.IKEDBG, 0) == 3
    assert log.repeat_count(EventClass.IKE, 173) == 0


def test_ring_buffer_keeps_the_newest_and_counting_goes_on() -> None:
    log = EventLog(capacity=3)
    for i in range(5):
        log.emit(catalog.NAT_KEEPALIVE_SENT, T0 + i, peer=A)
    assert [e.seq for e in log] == [3, 4, 5]
    assert [e.repeat for e in log] == [3, 4, 5]
    assert log.last_seq == 5
    with pytest.raises(ValueError):
        EventLog(capacity=0)


def test_clear_keeps_numbering() -> None:
    log = EventLog()
    log.emit(catalog.NAT_KEEPALIVE_SENT, T0, peer=A)
    log.clear()
    assert len(log) == 0
    again = log.emit(catalog.NAT_KEEPALIVE_SENT, T0, peer=A)
    assert (again.seq, again.repeat) == (2, 2)


def _mixed_log() -> EventLog:
    log = EventLog()
    log.emit(catalog.NAT_T_NEGOTIATED, T0, peer=A, group="g", user="u1")  # IKE sev 4
    log.emit(catalog.PROCESSING_HASH, T0, peer=A)  # IKEDBG sev 9
    log.emit(catalog.NOTIFY_DECODE, T0, peer=B, doi="IPSEC (1)", protocol="ISAKMP (1)", notify="x", spi="", length=28)
    log.emit(catalog.NAT_KEEPALIVE_RECEIVED, T0)  # IPSECDBG sev 9, no peer
    log.emit(catalog.AUTH_FAILED, T0, peer=B)  # IKE sev 3
    return log


def test_filter_by_class_set() -> None:
    log = _mixed_log()
    assert [e.seq for e in log.filter(classes={EventClass.IKE})] == [1, 5]
    assert [e.seq for e in log.filter(classes={"IKEDBG", "IKEDECODE"})] == [2, 3]
    assert log.filter(classes=set()) == []
    with pytest.raises(ValueError):
        log.filter(classes={"NOSUCHCLASS"})


def test_filter_by_severity_range_inclusive() -> None:
    log = _mixed_log()
    assert [e.seq for e in log.filter(severity=(1, 4))] == [1, 5]
    assert [e.seq for e in log.filter(severity=(8, 8))] == [3]
    assert len(log.filter(severity=(1, 13))) == 5
    with pytest.raises(ValueError):
        log.filter(severity=(5, 4))
    with pytest.raises(ValueError):
        log.filter(severity=(0, 13))


def test_filter_by_peer_and_since() -> None:
    log = _mixed_log()
    assert [e.seq for e in log.filter(peer=B)] == [3, 5]
    assert [e.seq for e in log.filter(since_seq=3)] == [4, 5]
    assert [e.seq for e in log.filter(classes={EventClass.IKE}, severity=(1, 3), peer=B, since_seq=1)] == [5]
    assert log.filter() == list(log)


def test_listeners_see_every_entry_and_can_leave() -> None:
    log = EventLog()
    seen: list[LogEntry] = []
    stop = log.subscribe(seen.append)
    first = log.emit(catalog.NAT_KEEPALIVE_SENT, T0, peer=A)
    stop()
    log.emit(catalog.NAT_KEEPALIVE_SENT, T0, peer=A)
    assert seen == [first]

    def once(entry: LogEntry) -> None:
        seen.append(entry)
        log.listeners.remove(once)

    log.listeners.append(once)
    log.listeners.append(seen.append)
    third = log.emit(catalog.NAT_KEEPALIVE_SENT, T0, peer=A)
    assert seen == [first, third, third]  # both listeners ran although the first left mid-call


def test_scope_line_and_template_fields_from_peer_group_user() -> None:
    log = EventLog()
    entry = log.emit(catalog.SECURITY_NEGOTIATION_COMPLETE, T0, peer=A, group="ciscovpn", user="vpnclient2",
                     role="Responder", inbound_spi=0x350F3CB1, outbound_spi=0xC74E30E5)
    assert entry.text.split("\n")[:2] == ["Group [ciscovpn] User [vpnclient2]",
                                          "Security negotiation complete for User (vpnclient2)"]
    group_only = log.emit(catalog.PROCESSING_HASH, T0, peer=A, group="ciscovpn")
    assert group_only.text == "Group [ciscovpn]\nprocessing hash"
    sent = log.emit(catalog.ISAKMP_SENDING, T0, peer="198.51.100.50", exchange="OAK QM", payloads="*(HASH)")
    assert sent.text == "SENDING >>> ISAKMP OAK QM *(HASH) to 198.51.100.50"
    assert sent.peer == "198.51.100.50"


def test_emit_refuses_missing_fields_and_bad_times() -> None:
    log = EventLog()
    with pytest.raises(MessageFieldError, match="spi"):
        log.emit(catalog.KEY_ADD_RECEIVED, T0)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError):
            log.emit(catalog.NAT_KEEPALIVE_SENT, bad)
    assert len(log) == 0 and log.last_seq == 0


SECRETS = Message("TEST_SECRETS", EventClass.IKEDBG, 999, 9,
                  "psk={psk} key={enc_key:x} skeyid={skeyid} len={encr_key_len}", origin=Origin.NATT)


def test_secrets_are_masked_by_default() -> None:
    log = EventLog()
    entry = log.emit(SECRETS, T0, psk="cisco123", enc_key=0xDEADBEEF, skeyid=b"\x01\x02", encr_key_len=24,
                     password="hunter2")
    assert entry.text == f"psk={MASK} key={MASK} skeyid={MASK} len=24"
    fields = dict(entry.fields)
    assert fields["psk"] == fields["enc_key"] == fields["skeyid"] == fields["password"] == MASK
    assert fields["encr_key_len"] == 24
    dumped = repr(render_json(entry))
    for secret in ("cisco123", "hunter2", "deadbeef", "0102"):
        assert secret not in dumped.lower()


def test_secrets_revealed_only_on_request() -> None:
    log = EventLog(reveal_secrets=True)
    entry = log.emit(SECRETS, T0, psk="cisco123", enc_key=0xDEADBEEF, skeyid=b"\x01\x02", encr_key_len=24)
    assert entry.text == "psk=cisco123 key=deadbeef skeyid=0102 len=24"
    assert dict(entry.fields)["skeyid"] == "0102"


def test_entries_are_frozen_and_carry_their_catalogue_name() -> None:
    log = EventLog()
    entry = log.emit(catalog.NAT_T_NEGOTIATED, T0, peer=A)
    assert entry.name == "NAT_T_NEGOTIATED"
    assert (entry.cls, entry.event_id, entry.severity) == (EventClass.IKE, 173, 4)
    with pytest.raises(AttributeError):
        entry.text = "x"  # type: ignore[misc]
    hash(entry)  # usable in sets: fields hold only plain values


def test_peer_supplied_text_cannot_drive_a_terminal_or_forge_lines() -> None:
    """An ID or user name with ESC sequences, BEL, CR/LF or a bidi override reaches the log escaped."""
    from natt.events import catalog as C
    from natt.events.store import EventLog, printable

    log = EventLog(10)
    evil = "vpn\x1b[2J\x07user\r\n12 11/29/2026 SEV=1 forged\u202e"
    entry = log.emit(C.XAUTH_ACCEPTED, 1_000_000.0, "203.0.113.9", user=evil)
    assert entry is not None
    assert not any(ch in entry.text for ch in "\x1b\x07\r\u202e")
    assert "\\x1b[2J" in entry.text and "\\x0d\\x0a12 11/29" in entry.text
    plain = log.emit(C.XAUTH_ACCEPTED, 1_000_000.0, "203.0.113.9", user="u")
    assert plain is not None and entry.text.count("\n") == plain.text.count("\n"), "no line was added"
    assert printable("plain ünïcode") == "plain ünïcode"
