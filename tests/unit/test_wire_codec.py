"""ISAKMP codec: round trips for every payload, and strict refusal of malformed input (RFC 2408 3)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natt.errors import (
    BadProposalSyntax,
    DecodeError,
    DoiNotSupported,
    InvalidExchangeType,
    InvalidFlags,
    InvalidIdInformation,
    InvalidMajorVersion,
    InvalidPayloadType,
    LengthError,
    TruncatedError,
    UnequalPayloadLengths,
)
from natt.wire.constants import (
    ConfigAttr,
    ConfigType,
    ExchangeType,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    VendorId,
)
from natt.wire.message import (
    Header,
    decode_message,
    decode_payloads,
    describe_payloads,
    encode_message,
    encode_payloads,
)
from natt.wire.payloads import (
    CiscoFragment,
    ConfigAttributes,
    DataAttribute,
    Delete,
    Hash,
    Identification,
    KeyExchange,
    NatD,
    NatOA,
    Nonce,
    Notify,
    Proposal,
    SecurityAssociation,
    Signature,
    Transform,
    VendorIdPayload,
)
from natt.wire.payloads.config import attr, parse_split_include, split_include_value

pytestmark = pytest.mark.unit

IC, RC = bytes.fromhex("c5a0f08b6960d747"), bytes.fromhex("4865b16f361f9d3a")


def _hdr(exchange: int = ExchangeType.AGGRESSIVE, flags: int = 0, mid: int = 0) -> Header:
    return Header(IC, RC, 0, exchange, flags, mid)


def _phase1_sa() -> SecurityAssociation:
    t1 = Transform(1, 1, [DataAttribute(1, 5), DataAttribute(2, 1), DataAttribute(3, 65001),
                          DataAttribute(4, 2), DataAttribute(11, 1), DataAttribute.integer(12, 86400)])
    t2 = Transform(2, 1, [DataAttribute(1, 7), DataAttribute(14, 256)])
    return SecurityAssociation(proposals=[Proposal(1, ProtocolId.ISAKMP, b"", [t1, t2])])


EVERY_PAYLOAD = [
    _phase1_sa(),
    SecurityAssociation(proposals=[Proposal(1, 3, b"\x12\x34\x56\x78", [Transform(1, 3, [DataAttribute(4, 3)])]),
                                   Proposal(2, 3, b"\x12\x34\x56\x78", [Transform(1, 12, [DataAttribute(6, 256)])])]),
    KeyExchange(data=bytes(range(128))),
    Nonce(data=b"n" * 20),
    Identification.text(IdType.KEY_ID, "ciscovpn", 17, 500),
    Identification.text(IdType.FQDN, "vpn.example.net"),
    Identification.text(IdType.USER_FQDN, "vpnclient1@example.net"),
    Identification.ipv4("198.51.100.50", 17, 500),
    Identification.ipv4_subnet("0.0.0.0/0"),
    Identification.ipv4_range("10.40.1.1", "10.40.1.254"),
    Hash(data=b"h" * 16),
    Signature(data=b"s" * 64),
    Notify(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP, IC + RC),
    Notify(NotifyType.R_U_THERE, ProtocolId.ISAKMP, IC + RC, b"\x2d\x93\x25\x52"),
    Delete(ProtocolId.IPSEC_ESP, [b"\x2a\x2e\x2d\xcd", b"\xf1\xf4\xd3\x28"], 4),
    Delete(ProtocolId.ISAKMP, [IC + RC], 16),
    VendorIdPayload(data=VendorId.CISCO_UNITY),
    NatD(data=b"d" * 16),
    NatD(data=b"d" * 20, draft=True),
    NatOA(address="10.10.10.2"),
    NatOA(address="10.10.10.3", draft=True),
    ConfigAttributes(ConfigType.REQUEST, 7, [attr(ConfigAttr.XAUTH_TYPE, 0), attr(ConfigAttr.XAUTH_USER_NAME),
                                            attr(ConfigAttr.XAUTH_USER_PASSWORD)]),
    ConfigAttributes(ConfigType.REPLY, 8, [attr(ConfigAttr.INTERNAL_IP4_ADDRESS, bytes([10, 40, 1, 1])),
                                          attr(ConfigAttr.UNITY_NATT_PORT, 4500),
                                          attr(ConfigAttr.APPLICATION_VERSION, "natt 0.1")]),
    CiscoFragment(fragment_id=1, number=2, flags=1, data=b"frag"),
]


@pytest.mark.parametrize("payload", EVERY_PAYLOAD, ids=lambda p: type(p).__name__)
def test_every_payload_round_trips(payload) -> None:
    """RFC 2408 3.2-3.15: encode(decode(x)) == x for each payload type, inside a whole message."""
    data = encode_message(_hdr(), [payload, Nonce(data=b"z" * 8)])
    msg = decode_message(data)
    assert type(msg.payloads[0]) is type(payload)
    assert msg.payloads[0] == payload
    assert msg.payloads[0].payload_type == payload.payload_type
    assert msg.payloads[0].raw == payload.body()
    assert encode_message(msg.header, msg.payloads) == data


def test_seed_aggressive_mode_shapes() -> None:
    """Seed client log: 'SENDING >>> ISAKMP OAK AG (SA, KE, NON, ID, VID, VID, VID, VID, VID)'."""
    payloads = [_phase1_sa(), KeyExchange(data=b"k" * 128), Nonce(data=b"n" * 20),
                Identification.text(IdType.KEY_ID, "ciscovpn")] + [VendorIdPayload(data=VendorId.XAUTH)] * 5
    msg = decode_message(encode_message(_hdr(), payloads))
    assert describe_payloads(msg.payload_types()) == "SA, KE, NON, ID, VID, VID, VID, VID, VID"
    info = [Hash(data=b"h" * 16), Notify(NotifyType.R_U_THERE, 1, IC + RC, b"\0\0\0\1")]
    assert describe_payloads([p.payload_type for p in info], "concentrator") == (
        "HDR + HASH (8) + NOTIFY (11) + NONE (0)")


def test_bytes_after_first_is_what_quick_mode_hashes() -> None:
    payloads = [Hash(data=b"h" * 20), Nonce(data=b"n" * 16), Identification.ipv4("10.40.1.1")]
    msg = decode_message(encode_message(_hdr(ExchangeType.QUICK_MODE, mid=5), payloads))
    assert msg.bytes_after_first() == encode_payloads(payloads[1:])[1]


def test_split_include_round_trip() -> None:
    value = split_include_value(["192.168.2.0/24", "10.1.0.0/16"])
    assert [str(n) for n in parse_split_include(value)] == ["192.168.2.0/24", "10.1.0.0/16"]
    with pytest.raises(LengthError):
        parse_split_include(value[:-1])


def test_attribute_integer_forms() -> None:
    assert DataAttribute.integer(12, 28800).is_tv
    big = DataAttribute.integer(12, 86400)
    assert not big.is_tv and big.value == (86400).to_bytes(4, "big") and big.as_int() == 86400


# -- refusals --------------------------------------------------------------------------------


def _valid() -> bytes:
    return encode_message(_hdr(), [_phase1_sa(), Nonce(data=b"n" * 20)])


def test_truncated_header() -> None:
    with pytest.raises(TruncatedError):
        decode_message(_valid()[:27])


def test_header_length_longer_than_datagram() -> None:
    with pytest.raises(TruncatedError):
        decode_message(_valid()[:-1])


def test_header_length_shorter_than_datagram() -> None:
    with pytest.raises(UnequalPayloadLengths):
        decode_message(_valid() + b"\0")


def test_bad_version_exchange_flags() -> None:
    data = bytearray(_valid())
    data[17] = 0x20
    with pytest.raises(InvalidMajorVersion):
        decode_message(bytes(data))
    data = bytearray(_valid())
    data[18] = 99
    with pytest.raises(InvalidExchangeType):
        decode_message(bytes(data))
    data = bytearray(_valid())
    data[19] = 0x80
    with pytest.raises(InvalidFlags):
        decode_message(bytes(data))


def test_unknown_payload_type() -> None:
    data = bytearray(_valid())
    data[16] = 99
    with pytest.raises(InvalidPayloadType):
        decode_message(bytes(data))


def test_payload_length_lies() -> None:
    data = bytearray(_valid())
    data[28 + 2 : 28 + 4] = (3).to_bytes(2, "big")  # below the generic header
    with pytest.raises(LengthError):
        decode_message(bytes(data))
    data = bytearray(_valid())
    data[28 + 2 : 28 + 4] = (0xFFF0).to_bytes(2, "big")  # beyond the message
    with pytest.raises(TruncatedError):
        decode_message(bytes(data))


def test_nested_transform_length_lie() -> None:
    """A transform that claims more bytes than its proposal holds."""
    sa = _phase1_sa().body()
    bad = bytearray(sa)
    # SA body: DOI(4) SIT(4) | proposal hdr(4) + fields(4) | transform hdr at offset 16
    bad[16 + 2 : 16 + 4] = (200).to_bytes(2, "big")
    with pytest.raises(DecodeError):
        decode_payloads(PayloadType.SA, b"\0\0" + (len(bad) + 4).to_bytes(2, "big") + bytes(bad), False)


def test_proposal_transform_count_lie() -> None:
    body = bytearray(_phase1_sa().body())
    body[8 + 7] = 3  # says 3 transforms, carries 2
    with pytest.raises(BadProposalSyntax):
        SecurityAssociation.decode_body(__import__("natt.wire.buffer", fromlist=["Reader"]).Reader(bytes(body)), 1)


def test_unknown_doi() -> None:
    from natt.wire.buffer import Reader

    body = bytearray(_phase1_sa().body())
    body[3] = 2
    with pytest.raises(DoiNotSupported):
        SecurityAssociation.decode_body(Reader(bytes(body)), 1)


def test_id_lengths_are_exact() -> None:
    from natt.wire.buffer import Reader

    with pytest.raises(LengthError):
        Identification.decode_body(Reader(bytes([IdType.IPV4_ADDR, 0, 0, 0, 1, 2, 3])), 5)
    with pytest.raises(InvalidIdInformation):
        Identification.decode_body(Reader(bytes([200, 0, 0, 0, 1, 2, 3, 4])), 5)


def test_nonce_length_bounds() -> None:
    """RFC 2409 5: nonces are 8 to 256 bytes."""
    with pytest.raises(LengthError):
        decode_message(encode_message(_hdr(), [Nonce(data=b"n" * 7)]))
    with pytest.raises(LengthError):
        decode_message(encode_message(_hdr(), [Nonce(data=b"n" * 257)]))


def test_delete_spi_count_must_match() -> None:
    from natt.wire.buffer import Reader

    body = Delete(3, [b"abcd", b"efgh"], 4).body()
    with pytest.raises(LengthError):
        Delete.decode_body(Reader(body[:-1]), 12)


def test_trailing_bytes_only_as_cipher_padding() -> None:
    _, chain = encode_payloads([Nonce(data=b"n" * 8)])
    with pytest.raises(UnequalPayloadLengths):
        decode_payloads(PayloadType.NONCE, chain + b"\0\0\3", allow_padding=False)
    payloads, _ = decode_payloads(PayloadType.NONCE, chain + b"\0\0\3", allow_padding=True)
    assert len(payloads) == 1


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_random_bytes_only_raise_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(data)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 255), st.binary(min_size=0, max_size=300))
def test_random_payload_chains_only_raise_decode_errors(first: int, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_payloads(first, data, allow_padding=True)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_messages_only_raise_decode_errors(data: st.DataObject) -> None:
    msg = bytearray(encode_message(_hdr(), EVERY_PAYLOAD[:12]))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(msg) - 1))
        msg[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        decode_message(bytes(msg))
