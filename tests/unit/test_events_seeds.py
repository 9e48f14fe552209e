"""The catalogue against the seeds: every log entry of both seed files (the Korean and the
Chinese copy of the Cisco tech note) must come out of a catalogue entry, and blocks copied
from the seeds must be reproduced byte for byte.

The seeds were re-typeset by the web page and the translators: lines are re-wrapped, blanks
collapsed or widened, "**" and "\\_" markdown added. The coverage test therefore compares
with all whitespace removed; the byte-for-byte tests use blocks that came through clean.
Where a seed is simply wrong (a header copied twice, a class misprinted, one copy disagreeing
with the other) ERRATA says so, and the test checks both that the raw entry does not match
and that the corrected one does, so the list cannot go stale.
"""

from __future__ import annotations

import dataclasses
import os
import re
import string
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from natt.events import EventClass, EventLog, LogEntry, Message, catalog, render_client, render_concentrator
from natt.events.catalog import Origin

pytestmark = pytest.mark.unit

# ---- finding and parsing the seeds ----------------------------------------------------------------


def _find_seeds() -> Path | None:
    """../shared/seeds from the repository root; NATT_SEEDS_DIR overrides."""
    root = Path(__file__).resolve().parents[2]
    candidates = [Path(os.environ["NATT_SEEDS_DIR"])] if os.environ.get("NATT_SEEDS_DIR") else []
    candidates += [root.parent / "shared" / "seeds", root / "shared" / "seeds"]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.txt")):
            return folder
    return None


SEEDS = _find_seeds()
needs_seeds = pytest.mark.skipif(SEEDS is None, reason="seed documents not found at ../shared/seeds "
                                                       "(set NATT_SEEDS_DIR to point at them)")

CONCENTRATOR_HEAD = re.compile(
    r"^(?P<seq>\d+) (?P<date>\d\d/\d\d/\d{4}) (?P<clock>\d\d:\d\d:\d\d\.\d{3}) SEV=(?P<sev>\d+) "
    r"(?P<cls>[A-Z]+)/(?P<id>\d+) RPT=(?P<rpt>\d+)(?: (?P<peer>\S+))?$")
CLIENT_HEAD = re.compile(
    r"^(?P<seq>\d+)\s+(?P<clock>\d\d:\d\d:\d\d\.\d{3})\s+(?P<date>\d\d/\d\d/\d\d)\s+"
    r"Sev=(?P<word>\w+)/(?P<sev>\d+)\s+(?P<cls>[A-Z]+)/0x(?P<code>[0-9A-F]{8})$")
# Lines inside an ISAKMP header or notify decode; an entry that starts with one begins in the
# middle of a dump whose head the excerpt cut off.
DUMP_LINE = re.compile(r"^\s*(Initiator Cookie\(8\)|Responder Cookie\(8\)|Next Payload|Exchange Type|Flags"
                       r"|Message ID|Length|DOI|Protocol|Message|Spi)\s*:")
SCOPE_LINE = re.compile(r"^Group \[(?P<group>[^\]]*)\] User \[(?P<user>[^\]]*)\]$")


@dataclasses.dataclass(frozen=True)
class SeedEntry:
    lang: str  # "ko" or "zh"
    kind: str  # "concentrator" or "client"
    seq: int
    time: float
    cls: str
    number: int  # concentrator id, or client code
    severity: int
    repeat: int | None
    peer: str | None
    head: str
    body: tuple[str, ...]

    @property
    def key(self) -> tuple[str, int]:
        return self.lang, self.seq


def _clean(line: str) -> str:
    """Undo the markdown the web page added."""
    return line.rstrip().replace("**", "").replace("\\_", "_").replace("\\*", "*")


def _epoch(date: str, clock: str) -> float:
    fmt = "%m/%d/%Y %H:%M:%S.%f" if len(date) == 10 else "%m/%d/%y %H:%M:%S.%f"
    return datetime.strptime(f"{date} {clock}", fmt).replace(tzinfo=UTC).timestamp()


def _language(text: str) -> str:
    return "ko" if re.search("[\uac00-\ud7a3]", text) else "zh"


def _entry(lang: str, head: str, match: re.Match[str], body: list[str]) -> SeedEntry:
    g = match.groupdict()
    concentrator = match.re is CONCENTRATOR_HEAD
    return SeedEntry(
        lang=lang, kind="concentrator" if concentrator else "client", seq=int(g["seq"]),
        time=_epoch(g["date"], g["clock"]), cls=g["cls"],
        number=int(g["id"]) if concentrator else int(g["code"], 16), severity=int(g["sev"]),
        repeat=int(g["rpt"]) if concentrator else None, peer=g.get("peer"), head=head, body=tuple(body),
    )


def parse_seed(path: Path) -> list[SeedEntry]:
    """Log entries: a header line, then its text up to the next header or the prose after
    the log (any line with non-ASCII text, or a markdown heading)."""
    text = path.read_text(encoding="utf-8")
    lang = _language(text)
    found: list[tuple[str, re.Match[str], list[str]]] = []
    current: list[str] | None = None
    for raw in text.splitlines():
        line = _clean(raw)
        match = CONCENTRATOR_HEAD.match(line) or CLIENT_HEAD.match(line)
        if match:
            current = []
            found.append((line, match, current))
        elif current is None or not line.strip() or line.lstrip().startswith("```"):
            continue
        elif not line.isascii() or line.startswith("#"):
            current = None
        else:
            current.append(line)
    return [_entry(lang, head, match, body) for head, match, body in found]


def seed_entries() -> list[SeedEntry]:
    assert SEEDS is not None
    return [e for path in sorted(SEEDS.glob("*.txt")) for e in parse_seed(path)]


# ---- matching an entry against the catalogue -----------------------------------------------------


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _pattern(template: str) -> tuple[re.Pattern[str], list[tuple[str, str]]]:
    """The template as a whitespace-free regex, and its (field, format spec) in order."""
    parts, fields = [], []
    for literal, field, spec, _conv in string.Formatter().parse(template):
        parts.append(re.escape(_squash(literal)))
        if field is not None:
            parts.append("(.+?)")
            fields.append((field, spec or ""))
    return re.compile("".join(parts)), fields


def _value(text: str, spec: str) -> object:
    """A field value read back from the seed, typed so the template's spec applies to it."""
    if spec.endswith(("x", "X")):
        return int(text, 16)
    if spec.endswith("d"):
        return int(text)
    return text


def _candidates(entry: SeedEntry) -> list[Message]:
    out = []
    for message in catalog.messages(Origin.SEED):
        if message.cls != entry.cls or message.severity != entry.severity:
            continue
        if entry.kind == "client":
            same_event = message.client_code == entry.number
        else:
            same_event = message.client_code is None and message.event_id == entry.number
        if same_event:
            out.append(message)
    return out


def _rerender(entry: SeedEntry, message: Message, values: dict[str, object], scope: dict[str, str]) -> LogEntry:
    """Emit the message the way a daemon would, then give it the seed's number and RPT."""
    log = EventLog()
    # The seed's own PAT address, only to see whether the header prints the peer.
    peer = values.pop("peer", None) or entry.peer or "171.69.89.78"
    emitted = log.emit(message, entry.time, peer=str(peer), **{**values, **scope})
    return dataclasses.replace(emitted, seq=entry.seq, repeat=entry.repeat or 1)


def match_entry(entry: SeedEntry) -> list[str]:
    """Names of the SEED catalogue entries that reproduce this seed entry, header included."""
    body = list(entry.body)
    scope: dict[str, str] = {}
    if entry.kind == "concentrator" and body and (m := SCOPE_LINE.match(body[0])):
        scope = m.groupdict()
        body = body[1:]
    hits = []
    for message in _candidates(entry):
        regex, fields = _pattern(message.template)
        found = regex.fullmatch(_squash("\n".join(body)))
        if found is None:
            continue
        values = {name: _value(text, spec) for (name, spec), text in zip(fields, found.groups(), strict=True)}
        rebuilt = _rerender(entry, message, values, scope)
        rendering = render_concentrator(rebuilt) if entry.kind == "concentrator" else render_client(rebuilt)
        if _squash(rendering) == _squash("\n".join([entry.head, *entry.body])):
            hits.append(message.name)
    return hits


def match_partial_dump(entry: SeedEntry) -> list[str]:
    """A decode the excerpt cut short: each line present must be the template's line."""
    hits = []
    for message in _candidates(entry):
        template_lines = message.template.split("\n")
        if len(entry.body) > len(template_lines):
            continue
        if all(_pattern(t)[0].fullmatch(_squash(line)) for t, line in zip(template_lines, entry.body, strict=False)):
            hits.append(message.name)
    return hits


def starts_inside_dump(entry: SeedEntry) -> bool:
    return bool(entry.body) and DUMP_LINE.match(entry.body[0]) is not None


def is_cut_dump(entry: SeedEntry) -> bool:
    return entry.cls == "IKEDECODE" and not starts_inside_dump(entry) and not match_entry(entry)


# ---- what is wrong in the seeds ------------------------------------------------------------------


def _with_class(cls: str) -> Callable[[SeedEntry], SeedEntry]:
    return lambda e: dataclasses.replace(e, cls=cls, head=e.head.replace(f" {e.cls}/", f" {cls}/"))


def _replace(old: str, new: str) -> Callable[[SeedEntry], SeedEntry]:
    return lambda e: dataclasses.replace(e, body=tuple("\n".join(e.body).replace(old, new).split("\n")))


def _drop_copied_header(e: SeedEntry) -> SeedEntry:
    body = tuple(line for line in e.body if not DUMP_LINE.match(line))
    fixed = _with_class("IKEDBG")(dataclasses.replace(e, body=body))
    return dataclasses.replace(fixed, repeat=9232, head=fixed.head.replace("RPT=8204", "RPT=9232"))


ERRATA: dict[tuple[str, int], tuple[str, Callable[[SeedEntry], SeedEntry]]] = {
    ("ko", 2931): ("class printed IKEDBG; the Chinese copy and the RPT series (IKEDECODE 8191, 8193) say IKEDECODE",
                   _with_class("IKEDECODE")),
    ("ko", 2942): ("class printed IKEDBG; the Chinese copy and the RPT series say IKEDECODE",
                   _with_class("IKEDECODE")),
    ("ko", 2920): ("'pitcher: rcv KEY_SA_ACTIVE'; the Chinese copy says 'recv'", _replace("rcv KEY_SA", "recv KEY_SA")),
    ("ko", 2927): ("'pitcher: rcv KEY_SA_ACTIVE'; the Chinese copy says 'recv'", _replace("rcv KEY_SA", "recv KEY_SA")),
    ("ko", 2896): ("re-wrapping doubled a letter: 'hashKey' / 'yLen'", _replace("hashKey\nyLen", "hashKey\nLen")),
    ("ko", 2856): ("'Processing KEY_ADD msg!'; the same event is 'MSG!' at 2900, and KEY_UPDATE is 'MSG!' twice",
                   _replace("msg!", "MSG!")),
    ("zh", 2856): ("'Processing KEY_ADD msg!'; the same event is 'MSG!' at 2900, and KEY_UPDATE is 'MSG!' twice",
                   _replace("msg!", "MSG!")),
    ("ko", 3073): ("the tech note repeats 3067's header (IKEDECODE/0 RPT=8204) over 3067's last two lines and the "
                   "IKEDBG/0 'RECEIVED Message' entry that follows (RPT 9232 by the series)", _drop_copied_header),
    ("zh", 3073): ("the same copied header as in the Korean copy", _drop_copied_header),
}

# Entries that begin inside a decode whose head the excerpt did not include.
CUT_AT_START = {("ko", 2835), ("zh", 2835)}


# ---- the tests ---------------------------------------------------------------------------------------


@needs_seeds
def test_both_seeds_parse_into_the_same_log() -> None:
    entries = seed_entries()
    by_lang = {lang: [e.seq for e in entries if e.lang == lang] for lang in ("ko", "zh")}
    assert by_lang["ko"] == by_lang["zh"]
    assert len(by_lang["ko"]) == 222  # 116-line client log excerpt + concentrator excerpt
    kinds = {e.kind for e in entries}
    assert kinds == {"client", "concentrator"}


@needs_seeds
def test_every_seed_entry_comes_from_the_catalogue() -> None:
    unmatched, ambiguous = [], []
    for entry in seed_entries():
        if entry.key in ERRATA or entry.key in CUT_AT_START:
            continue
        hits = match_entry(entry)
        if not hits and entry.cls == "IKEDECODE":
            hits = match_partial_dump(entry)
        if not hits:
            unmatched.append(f"{entry.lang} {entry.head} | {' / '.join(entry.body)}")
        elif len(hits) > 1:
            ambiguous.append(f"{entry.lang} {entry.seq}: {hits}")
    assert unmatched == []
    assert ambiguous == []


@needs_seeds
def test_errata_are_still_wrong_and_their_correction_matches() -> None:
    entries = {e.key: e for e in seed_entries()}
    for key, (reason, fix) in ERRATA.items():
        raw = entries[key]
        assert not match_entry(raw), f"{key} now matches as printed; drop the erratum ({reason})"
        assert len(match_entry(fix(raw))) == 1, f"{key}: the correction does not match ({reason})"


@needs_seeds
def test_cut_entries_really_start_inside_a_decode() -> None:
    entries = {e.key: e for e in seed_entries()}
    for key in CUT_AT_START:
        assert starts_inside_dump(entries[key])
        assert all(DUMP_LINE.match(line) for line in entries[key].body)


@needs_seeds
def test_every_seed_catalogue_entry_occurs_in_the_seeds() -> None:
    """SEED means the wording is in the seeds; anything else must say VARIANT or NATT."""
    used: set[str] = set()
    for entry in seed_entries():
        if entry.key in ERRATA:
            entry = ERRATA[entry.key][1](entry)
        if entry.key in CUT_AT_START:
            continue
        used.update(match_entry(entry) or match_partial_dump(entry))
    assert {m.name for m in catalog.messages(Origin.SEED)} - used == set()


@needs_seeds
def test_client_severity_words_agree_with_the_codes() -> None:
    for entry in seed_entries():
        if entry.kind == "client":
            assert entry.number >> 28 == 0x6  # every seed client line is Sev=Info/n
            assert f"Sev=Info/{entry.severity}" in _squash(entry.head)


# ---- byte for byte --------------------------------------------------------------------------------------

PAT = "171.69.89.78"  # the seed's addresses, used only as text to compare with the seed
CONCENTRATOR = "172.16.172.50"


def _t(date: str, clock: str) -> float:
    return _epoch(date, clock)


def _at(entry: LogEntry, seq: int, repeat: int) -> LogEntry:
    return dataclasses.replace(entry, seq=seq, repeat=repeat)


def _in_seeds(block: str) -> None:
    """The expected text is a verbatim copy from a seed file (checked when they are here)."""
    if SEEDS is not None:
        assert any(block in path.read_text(encoding="utf-8") for path in SEEDS.glob("*.txt"))


KO_CLIENT_START = """\
1      21:06:48.208 10/18/02 Sev=Info/6   DIALER/0x63300002
Initiating connection.
2      21:06:48.218 10/18/02 Sev=Info/4   CM/0x63100002
Begin connection process
3      21:06:48.218 10/18/02 Sev=Info/4   CM/0x63100004
Establish secure connection using Ethernet
4      21:06:48.218 10/18/02 Sev=Info/4   CM/0x63100026
Attempt connection with server "172.16.172.50"
42     21:07:42.326 10/18/02 Sev=Info/6   IKE/0x6300003B
Attempting to establish a connection with 172.16.172.50.
43     21:07:42.366 10/18/02 Sev=Info/4   IKE/0x63000013
SENDING >>> ISAKMP OAK AG (SA, KE, NON, ID, VID, VID, VID, VID, VID)"""


def test_client_log_start_byte_for_byte() -> None:
    _in_seeds(KO_CLIENT_START)
    log = EventLog()
    day = "10/18/02"
    rows = [
        (1, log.emit(catalog.CONNECTION_INITIATING, _t(day, "21:06:48.208"))),
        (2, log.emit(catalog.CONNECTION_BEGIN, _t(day, "21:06:48.218"))),
        (3, log.emit(catalog.CONNECTION_MEDIUM, _t(day, "21:06:48.218"), medium="Ethernet")),
        (4, log.emit(catalog.CONNECTION_ATTEMPT, _t(day, "21:06:48.218"), server=CONCENTRATOR)),
        (42, log.emit(catalog.IKE_ATTEMPT, _t(day, "21:07:42.326"), peer=CONCENTRATOR)),
        (43, log.emit(catalog.ISAKMP_SENDING, _t(day, "21:07:42.366"), peer=CONCENTRATOR, exchange="OAK AG",
                      payloads=catalog.isakmp_payloads(["SA", "KE", "NON", "ID"] + ["VID"] * 5, encrypted=False))),
    ]
    text = "\n".join(render_client(_at(entry, seq, entry.repeat)) for seq, entry in rows)
    # The seed wraps "to 172.16.172.50" onto a line of its own after a code fence.
    assert text == KO_CLIENT_START + " to 172.16.172.50"


KO_CLIENT_VENDOR_IDS = """\
56 21:07:42.716 10/18/02 Sev=Info/5 IKE/0x63000059
Vendor ID payload = 1F07F70EAA6514D3B0FA96542A500306
57 21:07:42.757 10/18/02 Sev=Info/4 IKE/0x63000013
SENDING >>> ISAKMP OAK AG *(HASH, NOTIFY:STATUS_INITIAL_CONTACT, NAT-D, NAT-D) to 172.16.172.50"""


def test_client_encrypted_send_and_vendor_id_text() -> None:
    """This part of the seed lost its blanks; the text lines still come through whole."""
    _in_seeds(KO_CLIENT_VENDOR_IDS)
    log = EventLog()
    vid = log.emit(catalog.VENDOR_ID_PAYLOAD, _t("10/18/02", "21:07:42.716"),
                   vid=bytes.fromhex("1F07F70EAA6514D3B0FA96542A500306"))
    sent = log.emit(catalog.ISAKMP_SENDING, _t("10/18/02", "21:07:42.757"), peer=CONCENTRATOR, exchange="OAK AG",
                    payloads=catalog.isakmp_payloads(["HASH", "NOTIFY:STATUS_INITIAL_CONTACT", "NAT-D", "NAT-D"],
                                                     encrypted=True))
    expected = KO_CLIENT_VENDOR_IDS.split("\n")
    assert render_client(_at(vid, 56, 1)).split("\n")[1] == expected[1]
    assert render_client(_at(sent, 57, 1)).split("\n")[1] == expected[3]
    assert _squash(render_client(_at(vid, 56, 1))) == _squash("\n".join(expected[:2]))


KO_QUICK_MODE = """\
2838 10/20/2002 20:22:42.390 SEV=8 IKEDBG/0 RPT=9197 171.69.89.78
RECEIVED Message (msgid=1b050792) with payloads :
HDR + HASH (8) + NONE (0)
total length : 48
2840 10/20/2002 20:22:42.390 SEV=9 IKEDBG/0 RPT=9198 171.69.89.78
Group [ciscovpn] User [vpnclient2]
processing hash
2841 10/20/2002 20:22:42.390 SEV=9 IKEDBG/0 RPT=9199 171.69.89.78
Group [ciscovpn] User [vpnclient2]
loading all IPSEC SAs
2842 10/20/2002 20:22:42.390 SEV=9 IKEDBG/1 RPT=793 171.69.89.78
Group [ciscovpn] User [vpnclient2]
Generating Quick Mode Key!"""

KO_NAT_T = """\
2844 10/20/2002 20:22:42.400 SEV=4 IKE/173 RPT=41 171.69.89.78
Group [ciscovpn] User [vpnclient2]
NAT-Traversal successfully negotiated!
IPSec traffic will be encapsulated to pass through NAT devices."""

ZH_SA_LOADED = """\
2847 10/20/2002 20:22:42.400 SEV=7 IKEDBG/0 RPT=9200 171.69.89.78
Group [ciscovpn] User [vpnclient2]
Loading host:
  Dst: 172.16.172.50
  Src: 40.1.1.2
2849 10/20/2002 20:22:42.400 SEV=4 IKE/49 RPT=63 171.69.89.78
Group [ciscovpn] User [vpnclient2]
Security negotiation complete for User (vpnclient2)
Responder, Inbound SPI = 0x350f3cb1, Outbound SPI = 0xc74e30e5
2852 10/20/2002 20:22:42.400 SEV=9 IPSECDBG/6 RPT=309
IPSEC key message parse - msgtype 1, Len 704, vers 1, pid 00000000, seq 0, err 0
, type 2, mode 1, state 320, label 0, pad 0, spi c74e30e5, encrKeyLen 24, hashKe
yLen 16, ivlen 8, alg 2, hmacAlg 3, lifetype 0, lifetime1 21, lifetime2 0, dsId
0"""


def test_quick_mode_entries_byte_for_byte() -> None:
    for block in (KO_QUICK_MODE, KO_NAT_T, ZH_SA_LOADED):
        _in_seeds(block)
    day, t1, t2 = "10/20/2002", "20:22:42.390", "20:22:42.400"
    scope = {"group": "ciscovpn", "user": "vpnclient2"}
    log = EventLog()
    received = log.emit(catalog.MESSAGE_RECEIVED, _t(day, t1), peer=PAT, msgid=0x1B050792, length=48,
                        payloads=catalog.payload_chain([("HASH", 8)], terminated=True))
    hashing = log.emit(catalog.PROCESSING_HASH, _t(day, t1), peer=PAT, **scope)
    loading = log.emit(catalog.LOADING_ALL_IPSEC_SAS, _t(day, t1), peer=PAT, **scope)
    keying = log.emit(catalog.QM_KEY_GENERATING, _t(day, t1), peer=PAT, **scope)
    assert "\n".join([
        render_concentrator(_at(received, 2838, 9197)), render_concentrator(_at(hashing, 2840, 9198)),
        render_concentrator(_at(loading, 2841, 9199)), render_concentrator(_at(keying, 2842, 793)),
    ]) == KO_QUICK_MODE

    natt = log.emit(catalog.NAT_T_NEGOTIATED, _t(day, t2), peer=PAT, **scope)
    assert render_concentrator(_at(natt, 2844, 41)) == KO_NAT_T

    host = log.emit(catalog.LOADING_HOST, _t(day, t2), peer=PAT, dst=CONCENTRATOR, src="40.1.1.2", **scope)
    done = log.emit(catalog.SECURITY_NEGOTIATION_COMPLETE, _t(day, t2), peer=PAT, role="Responder",
                    inbound_spi=0x350F3CB1, outbound_spi=0xC74E30E5, **scope)
    parse = log.emit(catalog.IPSEC_KEY_MESSAGE_PARSE, _t(day, t2), peer=PAT, msgtype=1, length=704, state=320,
                     spi=0xC74E30E5, encr_key_len=24, hash_key_len=16, iv_len=8, alg=2, hmac_alg=3, lifetime1=21)
    assert "\n".join([
        render_concentrator(_at(host, 2847, 9200)), render_concentrator(_at(done, 2849, 63)),
        render_concentrator(_at(parse, 2852, 309)),
    ]) == ZH_SA_LOADED


KO_KEEPALIVES = """\
3029 10/20/2002 20:23:22.430 SEV=9 IKEDBG/0 RPT=9228 171.69.89.78
Group [ciscovpn] User [vpnclient2]
Processing Notify payload
3030 10/20/2002 20:23:22.430 SEV=8 IKEDECODE/0 RPT=8201 171.69.89.78
Notify Payload Decode :
  DOI          :IPSEC (1)
  Protocol     :ISAKMP (1)
  Message      :Altiga keep-alive (40500)
  Spi         :C5 A0 F0 8B 69 60 D7 47 48 65 B1 6F 36 1F 9D 3A
  Length      :28
3036 10/20/2002 20:23:22.430 SEV=9 IKEDBG/41 RPT=339 171.69.89.78
Group [ciscovpn] User [vpnclient2]
Received keep-alive of type Altiga keep-alive, not the negotiated type
3038 10/20/2002 20:23:22.430 SEV=9 IPSECDBG/17 RPT=674
Received an IPSEC-over-NAT-T NAT keepalive packet
3039 10/20/2002 20:23:23.530 SEV=9 IPSECDBG/18 RPT=836 171.69.89.78
Xmit IPSEC-over-UDP NAT keepalive packet: success
3040 10/20/2002 20:23:23.530 SEV=9 IPSECDBG/18 RPT=837 171.69.89.78
Xmit IPSEC-over-UDP NAT keepalive packet: success"""


def test_keepalive_entries_byte_for_byte() -> None:
    """Including IPSECDBG/17, which the device logs without the peer although it knows it."""
    _in_seeds(KO_KEEPALIVES)
    day, t1, t2 = "10/20/2002", "20:23:22.430", "20:23:23.530"
    scope = {"group": "ciscovpn", "user": "vpnclient2"}
    cookies = bytes.fromhex("C5A0F08B6960D7474865B16F361F9D3A")
    log = EventLog()
    rows = [
        (3029, 9228, log.emit(catalog.PROCESSING_NOTIFY, _t(day, t1), peer=PAT, **scope)),
        (3030, 8201, log.emit(catalog.NOTIFY_DECODE, _t(day, t1), peer=PAT, doi=catalog.decode_label("IPSEC", 1),
                              protocol=catalog.decode_label("ISAKMP", 1),
                              notify=catalog.decode_label("Altiga keep-alive", 40500),
                              spi=catalog.spaced_hex(cookies), length=28)),
        (3036, 339, log.emit(catalog.KEEPALIVE_TYPE_MISMATCH, _t(day, t1), peer=PAT, kind="Altiga keep-alive",
                             **scope)),
        (3038, 674, log.emit(catalog.NAT_KEEPALIVE_RECEIVED, _t(day, t1), peer=PAT)),
        (3039, 836, log.emit(catalog.NAT_KEEPALIVE_SENT, _t(day, t2), peer=PAT)),
        (3040, 837, log.emit(catalog.NAT_KEEPALIVE_SENT, _t(day, t2), peer=PAT)),
    ]
    assert "\n".join(render_concentrator(_at(e, seq, rpt)) for seq, rpt, e in rows) == KO_KEEPALIVES


ZH_HEADER_TAIL = """\
  Exchange Type :Oakley Quick Mode
  Flags         :1 (ENCRYPT )
  Message ID    : 1b050792
  Length        : 52"""


def test_isakmp_header_decode_layout() -> None:
    """The seed's only aligned copy of the header decode is the tail of 2835 (Chinese)."""
    _in_seeds(ZH_HEADER_TAIL)
    log = EventLog()
    entry = log.emit(catalog.ISAKMP_HEADER_DECODE, _t("10/20/2002", "20:22:42.390"), peer=PAT,
                     icookie=catalog.spaced_hex(bytes.fromhex("C5A0F08B6960D747")),
                     rcookie=catalog.spaced_hex(bytes.fromhex("4865B16F361F9D3A")),
                     next_payload=catalog.decode_label("HASH", 8), exchange=catalog.DECODE_EXCHANGE_NAMES[32],
                     flags=catalog.isakmp_flags(1), msgid=0x1B050792, length=52)
    lines = render_concentrator(_at(entry, 2835, 8190)).split("\n")
    assert lines[0] == "2835 10/20/2002 20:22:42.390 SEV=8 IKEDECODE/0 RPT=8190 171.69.89.78"
    assert lines[1:4] == ["ISAKMP HEADER : ( Version 1.0 )", "  Initiator Cookie(8): C5 A0 F0 8B 69 60 D7 47",
                          "  Responder Cookie(8): 48 65 B1 6F 36 1F 9D 3A"]
    assert "\n".join(lines[-4:]) == ZH_HEADER_TAIL


def test_rpt_counts_per_event_across_peers_as_in_the_seed() -> None:
    """Seed 2838-2874: IKEDBG/0 goes 9197, 9198, 9199, 9200 (peer), 9201 (no peer), while
    IKEDBG/1 goes 793, 794 and IKE/173, IKE/49, IKE/120 count on their own."""
    log = EventLog()
    t = _t("10/20/2002", "20:22:42.390")
    scope = {"group": "ciscovpn", "user": "vpnclient2"}
    series = [
        log.emit(catalog.MESSAGE_RECEIVED, t, peer=PAT, msgid=1, length=48, payloads="HDR + NONE (0)"),
        log.emit(catalog.PROCESSING_HASH, t, peer=PAT, **scope),
        log.emit(catalog.LOADING_ALL_IPSEC_SAS, t, peer=PAT, **scope),
        log.emit(catalog.QM_KEY_GENERATING, t, peer=PAT, **scope),
        log.emit(catalog.QM_KEY_GENERATING, t, peer=PAT, **scope),
        log.emit(catalog.NAT_T_NEGOTIATED, t, peer=PAT, **scope),
        log.emit(catalog.LOADING_HOST, t, peer=PAT, dst="a", src="b", **scope),
        log.emit(catalog.SECURITY_NEGOTIATION_COMPLETE, t, peer=PAT, role="Responder", inbound_spi=1,
                 outbound_spi=2, **scope),
        log.emit(catalog.KEY_ADD_RECEIVED, t, spi=2),
        log.emit(catalog.PITCHER_KEY_UPDATE, t, spi=1),
        log.emit(catalog.PHASE2_COMPLETED, t, peer=PAT, msgid=1, **scope),
        log.emit(catalog.MESSAGE_RECEIVED, t, peer=PAT, msgid=2, length=48, payloads="HDR + NONE (0)"),
    ]
    seed_rpt = [9197, 9198, 9199, 793, 794, 41, 9200, 63, 63, 9201, 63, 9202]
    first: dict[tuple[EventClass, int], tuple[int, int]] = {}
    for entry, rpt in zip(series, seed_rpt, strict=True):
        base_ours, base_seed = first.setdefault((entry.cls, entry.event_id), (entry.repeat, rpt))
        assert entry.repeat - base_ours == rpt - base_seed
