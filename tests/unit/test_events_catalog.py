"""The catalogue's own rules: names, id ranges, client codes, severities and field helpers."""

from __future__ import annotations

import pytest

from natt.events import (
    EventClass,
    EventLog,
    Message,
    MessageFieldError,
    catalog,
    client_code,
    client_severity,
    is_secret_field,
    severity_category,
)
from natt.events.catalog import NATT_ID_BASE, Origin

pytestmark = pytest.mark.unit


def test_every_entry_is_the_module_attribute_of_its_name() -> None:
    assert catalog.MESSAGES
    for name, message in catalog.MESSAGES.items():
        assert message.name == name
        assert getattr(catalog, name) is message


def test_natt_ids_never_collide_with_the_seeds() -> None:
    seedlike = [m for m in catalog.MESSAGES.values() if m.origin is not Origin.NATT]
    ours = catalog.messages(Origin.NATT)
    seed_keys = {(m.cls, m.event_id) for m in seedlike}
    seed_codes = {m.client_code for m in seedlike if m.client_code is not None}
    assert all(m.event_id >= NATT_ID_BASE for m in ours)
    assert len({m.event_id for m in ours}) == len(ours)  # one number, one event, in every class
    assert not {(m.cls, m.event_id) for m in ours} & seed_keys
    assert all(m.client_code is not None for m in ours)
    assert not {m.client_code for m in ours} & seed_codes


def test_variants_belong_to_a_seed_event() -> None:
    seed_keys = {(m.cls, m.event_id) for m in catalog.messages(Origin.SEED)}
    for message in catalog.messages(Origin.VARIANT):
        assert (message.cls, message.event_id) in seed_keys


def test_seed_client_codes_follow_the_class_facilities() -> None:
    for message in catalog.messages(Origin.SEED):
        if message.client_code is not None:
            rebuilt = client_code(message.cls, message.severity, message.client_code & 0xFFFF)
            assert rebuilt == message.client_code, message.name


def test_client_code_layout() -> None:
    assert client_code(EventClass.IKE, 4, 0x13) == 0x63000013
    assert client_code(EventClass.CM, 4, 0x0E) == 0x6310000E
    assert client_code(EventClass.IKE, 3, 0x1F4) == 0xA30001F4
    assert client_code(EventClass.IKE, 1, 1) == 0xE3000001
    assert client_code(EventClass.IKEDBG, 8, 0) == 0x63000000  # debug shares IKE's facility
    with pytest.raises(ValueError):
        client_code(EventClass.IKE, 4, 0x10000)


def test_client_code_must_agree_with_severity() -> None:
    with pytest.raises(ValueError, match="disagrees"):
        Message("BAD", EventClass.IKE, 1, 3, "text", client_code=0x63000001)


def test_severity_scale() -> None:
    assert [severity_category(s) for s in (1, 2, 3, 4, 6, 7, 9, 10, 13)] == [
        "Fault", "Warning", "Warning", "Information", "Information", "Debug", "Debug", "Packet Decode",
        "Packet Decode"]
    assert client_severity(4) == ("Info", 4)
    assert client_severity(2) == ("Warning", 2)
    assert client_severity(1) == ("Fault", 1)
    assert client_severity(8) == ("Debug", 8)
    for bad in (0, 14):
        with pytest.raises(ValueError):
            severity_category(bad)


def test_every_template_renders() -> None:
    for message in catalog.MESSAGES.values():
        text = message.render(**dict.fromkeys(message.fields, 1))
        assert text and "{" not in text, message.name


def test_missing_field_is_named() -> None:
    with pytest.raises(MessageFieldError, match="PHASE2_COMPLETED needs msgid"):
        catalog.PHASE2_COMPLETED.render()


def test_templates_refuse_positional_and_dotted_fields() -> None:
    for template in ("{0}", "{}", "{a.b}", "{a[0]}"):
        with pytest.raises(ValueError):
            Message("BAD", EventClass.IKE, 1, 4, template)


def test_failure_messages_the_brief_asks_for() -> None:
    assert catalog.NAT_T_DISABLED.render() == (
        "Peer offered NAT-T while NAT transparency is disabled on this concentrator: enable nat_traversal")
    assert catalog.NO_DATA_DECRYPTED.render(encrypted=13) == (
        "No packets decrypted (13 encrypted, 0 decrypted): the concentrator is probably not doing NAT-T; "
        "ask its administrator to enable NAT Transparency")
    assert catalog.AUTH_FAILED.render().startswith("Phase 1 authentication failed")
    assert catalog.DECODE_ERROR.render(peer="p", notify="PAYLOAD-MALFORMED", detail="d") == (
        "Refused a malformed message from p (PAYLOAD-MALFORMED): d")
    for message in (catalog.NAT_T_DISABLED, catalog.NO_DATA_DECRYPTED, catalog.AUTH_FAILED, catalog.XAUTH_FAILED,
                    catalog.SESSION_LIMIT_REACHED, catalog.ADDRESS_POOL_EXHAUSTED, catalog.ESP_AUTH_FAILED):
        assert message.severity <= 3  # warnings: the default concentrator log (1-5) and console (1-3) show them


# ---- field helpers ------------------------------------------------------------------------------------


def test_host_order_spi_matches_the_seed_client() -> None:
    """Seed client lines 93-113: loaded SPIs and the driver's "Added key with SPI=" lines."""
    for loaded, added in ((0x02CC3526, 0x2635CC02), (0x5BEEBB4C, 0x4CBBEE5B), (0x3316C6C9, 0xC9C61633),
                          (0x6B96ED76, 0x76ED966B)):
        assert catalog.host_order_spi(loaded) == added
    added_line = catalog.KEY_ADDED.render(spi=catalog.host_order_spi(0x02CC3526))
    assert added_line == "Added key with SPI=0x2635cc02 into key list"


def test_nat_detection_words() -> None:
    text = catalog.NAT_DETECTION_STATUS.render(remote=catalog.nat_word(False), local=catalog.nat_word(True))
    assert text == ("Automatic NAT Detection Status:\nRemote end is NOT behind a NAT device\n"
                    "This end IS behind a NAT device")


def test_payload_helpers() -> None:
    assert catalog.isakmp_payloads(["HASH", "ATTR"], encrypted=True) == "*(HASH, ATTR)"
    assert catalog.isakmp_payloads(["SA", "KE"], encrypted=False) == "(SA, KE)"
    assert catalog.payload_chain([("HASH", 8), ("NOTIFY", 11)], terminated=True) == (
        "HDR + HASH (8) + NOTIFY (11) + NONE (0)")
    assert catalog.payload_chain([("HASH", 8), ("NOTIFY", 11)], terminated=False) == "HDR + HASH (8) + NOTIFY (11)"
    assert catalog.isakmp_flags(1) == "1 (ENCRYPT )"
    assert catalog.isakmp_flags(3) == "3 (ENCRYPT COMMIT )"
    assert catalog.isakmp_flags(0) == "0"
    assert catalog.spaced_hex(b"\xb6\x92\x24") == "B6 92 24"
    assert catalog.tunnel_scope("ciscovpn", "vpnclient1") == "Group [ciscovpn] User [vpnclient1]"
    assert catalog.tunnel_scope("ciscovpn", None) == "Group [ciscovpn]"
    assert catalog.tunnel_scope(None, None) is None


def test_seed_number_formats() -> None:
    """The concentrator prints %x ("msgid=d678099", "mess_id 0x0"), the client 0x%08X."""
    assert catalog.MESSAGE_SENT.render(msgid=0xD678099, payloads="HDR", length=80).startswith(
        "SENDING Message (msgid=d678099)")
    assert catalog.SA_ACTIVE_NO_REKEY.render(spi=0x2A2E2DCD, msgid=0).endswith("spi 0x2a2e2dcd, mess_id 0x0")
    assert catalog.MODECFG_REPLY_NAT_T_PORT.render(port=4500).endswith("value = 0x00001194")
    assert catalog.DPD_ACK_SENT.render(seq=0x2D932552) == (
        "Sending keep-alive of type DPD R-U-THERE-ACK (seq number 0x2d932552)")
    assert catalog.VENDOR_ID_PAYLOAD.render(vid=bytes.fromhex("09002689dfd6b712")) == (
        "Vendor ID payload = 09002689DFD6B712")


def test_secret_field_names() -> None:
    for name in ("psk", "password", "key", "secret", "skeyid", "skeyid_e", "enc_key", "xauth_password", "PSK"):
        assert is_secret_field(name), name
    for name in ("encr_key_len", "hash_key_len", "spi", "user", "keyboard", "peer"):
        assert not is_secret_field(name), name


def test_a_natt_entry_in_both_logs() -> None:
    log = EventLog()
    entry = log.emit(catalog.NAT_T_NOT_OFFERED, 0.0, peer="198.51.100.50")
    assert entry.code == 0xA3B00200
    assert entry.cls is EventClass.NAT
