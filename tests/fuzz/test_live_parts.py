"""The live fuzz run's parts without a lab: the mutation operators, the datagram mix, the capture's frame filter and
the record file (tests/lab/test_live_fuzz.py runs them against the real concentrator)."""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

import pytest

from natt.wire.constants import HEADER_LEN, IKE_PORT, NATT_PORT, NON_ESP_MARKER
from tests.fuzz.live import KINDS, Captured, LiveFuzz, read_record, write_record
from tests.fuzz.livecap import classify
from tests.fuzz.mutate import Corpus, Mutator, is_ike, payload_length_offsets
from tests.fuzz.seeds import seed_inputs

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_seed_inputs(seed_inputs())


def _first_message(corpus: Corpus) -> bytes:
    """Aggressive Mode message 1: plaintext, a chain of payloads."""
    return next(d for d in corpus.ike if d[8:16] == b"\x00" * 8)


def test_corpus_is_split_by_kind(corpus: Corpus) -> None:
    assert len(corpus.ike) >= 20 and len(corpus.esp) >= 2
    assert all(is_ike(d) for d in corpus.ike)
    assert not any(is_ike(d) for d in corpus.esp)


def test_payload_offsets_walk_a_plaintext_chain_only(corpus: Corpus) -> None:
    first = _first_message(corpus)
    offsets = payload_length_offsets(first)
    assert offsets[0] == HEADER_LEN + 2 and len(offsets) >= 5  # SA, KE, nonce, ID, vendor IDs ...
    lengths = [int.from_bytes(first[o : o + 2], "big") for o in offsets]
    assert offsets[-1] - 2 + lengths[-1] == len(first), "the chain ends where the message does"
    encrypted = next(d for d in corpus.ike if d[19] & 1)
    assert payload_length_offsets(encrypted) == []


def test_length_lie_changes_a_length_field_and_nothing_else(corpus: Corpus) -> None:
    first = _first_message(corpus)
    fields = {24, 25, 26, 27} | {o + i for o in payload_length_offsets(first) for i in (0, 1)}
    m = Mutator(random.Random(3))
    changed = 0
    for _ in range(200):
        lied = m.length_lie(first, [])
        diff = {i for i, (a, b) in enumerate(zip(first, lied, strict=True)) if a != b}
        assert diff <= fields, diff
        changed += bool(diff)
    assert changed > 150


def test_truncate_is_shorter_and_bitflip_keeps_the_length(corpus: Corpus) -> None:
    m = Mutator(random.Random(4))
    for data in corpus.ike[:10]:
        assert len(m.truncate(data, [])) < len(data)
        flipped = m.bitflip(data, [])
        assert len(flipped) == len(data) and flipped != data


def test_esp_garbage_carries_the_live_spi(corpus: Corpus) -> None:
    m = Mutator(random.Random(5))
    seqs = set()
    for _ in range(300):
        d = m.esp_garbage(0x0A0B0C0D, 1000)
        assert d[:4] == bytes.fromhex("0a0b0c0d") and len(d) >= 8
        seqs.add(int.from_bytes(d[4:8], "big"))
    assert {0, 1000, 1001, 0xFFFFFFFF} <= seqs


def test_the_mix_sends_every_kind_to_its_port(corpus: Corpus) -> None:
    esp = (0x11223344).to_bytes(4, "big") + (7).to_bytes(4, "big") + bytes(40)
    ike = corpus.ike[5]
    fuzz = LiveFuzz(corpus, [0x11223344], Captured(esp=[esp], ike=[ike]), seed=9)
    seen: dict[str, set[int]] = {}
    for _ in range(3000):
        kind, port, data = fuzz.next()
        seen.setdefault(kind, set()).add(port)
        if kind == "esp-live":
            assert data[:4] == esp[:4]
        if kind == "ike4500":
            assert data.startswith(NON_ESP_MARKER)
        if kind == "ike-live" and port == NATT_PORT and len(data) >= 20:
            assert data[4:20] == ike[:16], "a live IKE SA's cookies"
    assert set(seen) == set(KINDS)
    assert seen["ike500"] == {IKE_PORT} and seen["esp-live"] == {NATT_PORT}
    assert seen["ike-live"] == {IKE_PORT, NATT_PORT}
    again = LiveFuzz(corpus, [0x11223344], Captured(esp=[esp], ike=[ike]), seed=9)
    fuzz2 = LiveFuzz(corpus, [0x11223344], Captured(esp=[esp], ike=[ike]), seed=9)
    assert [again.next() for _ in range(50)] == [fuzz2.next() for _ in range(50)], "a seed reproduces a run"


def test_without_live_material_only_the_blind_kinds(corpus: Corpus) -> None:
    fuzz = LiveFuzz(corpus, [], Captured(), seed=1)
    kinds = {fuzz.next()[0] for _ in range(500)}
    assert kinds == {"ike500", "ike4500", "udp4500"}


def _frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src),
                     socket.inet_aton(dst)) + udp
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + b"\x00" * 4  # Ethernet padding past the IP length


def test_capture_keeps_esp_to_us_and_ike_both_ways() -> None:
    us, them = socket.inet_aton("198.51.100.50"), "203.0.113.78"
    esp = bytes.fromhex("0a0b0c0d00000001") + bytes(32)
    ike = bytes(8) + bytes(range(1, 29))
    assert classify(_frame(them, "198.51.100.50", 4500, 4500, esp), us) == ("esp", esp)
    assert classify(_frame("198.51.100.50", them, 4500, 4500, esp), us) is None  # our ESP: another SA's SPI
    assert classify(_frame(them, "198.51.100.50", 4500, 4500, NON_ESP_MARKER + ike), us) == ("ike", ike)
    assert classify(_frame("198.51.100.50", them, 4500, 4500, NON_ESP_MARKER + ike), us) == ("ike", ike)
    assert classify(_frame(them, "198.51.100.50", 4500, 500, esp), us) is None
    assert classify(_frame(them, "198.51.100.50", 4500, 4500, b"\xff"), us) is None  # keepalive


def test_record_reads_back(tmp_path: Path, corpus: Corpus) -> None:
    path = tmp_path / "rec"
    fuzz = LiveFuzz(corpus, [], Captured(), seed=2)
    sent = []
    with path.open("wb") as f:
        for _ in range(20):
            kind, port, data = fuzz.next()
            sent.append((kind, port, data))
            write_record(f, 1.5, kind, port, data)
    assert [(k, p, d) for _, k, p, d in read_record(path)] == sent
