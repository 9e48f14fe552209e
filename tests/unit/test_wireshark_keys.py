"""The Wireshark key tables (natt.wireshark) and how the daemons write them (natt_daemons.common.keyexport).

The algorithm names must be Wireshark's own (packet-ipsec.c: its UAT refuses any other spelling); the keys must
be the ones the SA really uses, which is checked by decrypting a packet the SA made with nothing but the
exported line and the `cryptography` primitives. The files hold every session's keys: 0600 in a 0700 directory
that only the daemon's user may enter, written without following a symlink.
"""

from __future__ import annotations

import csv
import hmac
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from natt.esp import SUPPORTED_TRANSFORMS, EspSA, EspTransform, make_transform
from natt.esp.table import SaTable
from natt.ike.events import ChildSaUp
from natt.ike.ikesa import IkeSA, ResponderHold, Role, State
from natt.ike.natd import NatStatus
from natt.wire.constants import AuthAlgorithm, EspTransformId
from natt.wireshark import ANY, esp_lines, esp_sa_line, ikev1_line, ikev1_lines
from natt_daemons.common.control import ControlError
from natt_daemons.common.keyexport import HEADER, write_tables

pytestmark = pytest.mark.unit

GCM128 = make_transform(EspTransformId.AES_GCM_16, 128, None)
AES_SHA1 = make_transform(EspTransformId.AES_CBC, 256, AuthAlgorithm.HMAC_SHA1)
AES_SHA256 = make_transform(EspTransformId.AES_CBC, 128, AuthAlgorithm.HMAC_SHA2_256)
DES3_MD5 = make_transform(EspTransformId.TRIPLE_DES, None, AuthAlgorithm.HMAC_MD5)
CONCENTRATOR, PAT, CLIENT = "198.51.100.50", "203.0.113.78", "10.10.10.2"


def fields(line: str) -> list[str]:
    """A UAT line's fields, as Wireshark's UAT reader splits them (comma-separated, double-quoted)."""
    (row,) = csv.reader([line])
    return row


def sa_of(t: EspTransform, spi: int = 0xC0FFEE01, outbound: bool = True) -> EspSA:
    return EspSA(spi, t, bytes(range(1, t.keymat_len + 1)), outbound=outbound)


# -- the esp_sa line ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "encryption", "authentication"), [
    (GCM128, "AES-GCM with 16 octet ICV [RFC4106]", "NULL"),
    (AES_SHA1, "AES-CBC [RFC3602]", "HMAC-SHA-1-96 [RFC2404]"),
    (AES_SHA256, "AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]"),
    (DES3_MD5, "TripleDES-CBC [RFC2451]", "HMAC-MD5-96 [RFC2403]"),
])
def test_esp_line_names_the_algorithms_as_wireshark_does(t: EspTransform, encryption: str,
                                                          authentication: str) -> None:
    keymat = bytes(range(1, t.keymat_len + 1))
    row = fields(esp_sa_line(sa_of(t), CONCENTRATOR, PAT))
    enc_key, auth_key = keymat[: t.enc_key_len], keymat[t.enc_key_len :]
    assert row == ["IPv4", CONCENTRATOR, PAT, "0xc0ffee01", encryption, "0x" + enc_key.hex(), authentication,
                   "0x" + auth_key.hex() if auth_key else ""]


def test_gcm_key_carries_its_salt() -> None:
    """RFC 4106 8.1: Wireshark's AES-GCM key is the cipher key and the 4-byte salt (160 bits for AES-128)."""
    row = fields(esp_sa_line(sa_of(GCM128), CONCENTRATOR, PAT))
    assert len(bytes.fromhex(row[5][2:])) == 16 + 4


def test_every_supported_transform_has_wireshark_names() -> None:
    for t in SUPPORTED_TRANSFORMS:
        assert len(fields(esp_sa_line(sa_of(t), CONCENTRATOR, PAT))) == 8, t.name


def _open_with_line(row: list[str], t: EspTransform, packet: bytes) -> bytes:
    """Decrypt an ESP packet (RFC 4303) with only the exported key fields: what Wireshark does with them."""
    enc_key = bytes.fromhex(row[5][2:])
    if t.is_aead:
        key, salt = enc_key[:-4], enc_key[-4:]
        plain = AESGCM(key).decrypt(salt + packet[8:16], packet[16:], packet[:8])
    else:
        auth_key = bytes.fromhex(row[7][2:])
        digest = {AuthAlgorithm.HMAC_MD5: "md5", AuthAlgorithm.HMAC_SHA1: "sha1",
                  AuthAlgorithm.HMAC_SHA2_256: "sha256"}[t.auth or 0]
        body, icv = packet[: -t.icv_len], packet[-t.icv_len :]
        assert hmac.new(auth_key, body, digest).digest()[: t.icv_len] == icv, "the ICV checks with the exported key"
        algo = TripleDES(enc_key) if t.transform_id == EspTransformId.TRIPLE_DES else algorithms.AES(enc_key)
        iv, ct = body[8 : 8 + t.iv_len], body[8 + t.iv_len :]
        d = Cipher(algo, modes.CBC(iv)).decryptor()
        plain = d.update(ct) + d.finalize()
    pad_len = plain[-2]
    return plain[: -2 - pad_len]


@pytest.mark.parametrize("t", SUPPORTED_TRANSFORMS, ids=lambda t: t.name)
def test_exported_keys_decrypt_what_the_sa_sent(t: EspTransform) -> None:
    """The key split (encryption first, then authentication: RFC 2409 5.5) is the one the data path uses. The SA
    sends first (its contexts are built then), and its keys stay readable after."""
    esp = EspSA(0x1001, t, os.urandom(t.keymat_len), outbound=True)
    inner = bytes(range(20)) + b"natt key export" * 5
    packet = esp.encrypt(inner)
    assert _open_with_line(fields(esp_sa_line(esp, CONCENTRATOR, PAT)), t, packet) == inner


def test_a_wrong_key_fails_the_same_check() -> None:
    """The check above can fail: another SA's keys do not open the packet."""
    esp, other = (EspSA(0x1001, AES_SHA1, os.urandom(AES_SHA1.keymat_len), outbound=True) for _ in range(2))
    packet = esp.encrypt(bytes(40))
    with pytest.raises(AssertionError, match="ICV"):
        _open_with_line(fields(esp_sa_line(other, CONCENTRATOR, PAT)), AES_SHA1, packet)


# -- the ikev1_decryption_table line ---------------------------------------------------------------------------


def ike_sa(sa_id: int, *, local: str = CONCENTRATOR, remote: str = PAT, nat: NatStatus | None = None,
           enc_key: bytes = b"", state: State = State.ESTABLISHED) -> IkeSA:
    sa = IkeSA(sa_id, Role.RESPONDER, bytes([sa_id]) * 8, bytes([0xAA]) * 8, (local, 4500), (remote, 4500), 0.0)
    sa.enc_key, sa.nat, sa.state = enc_key, nat, state
    return sa


def test_ikev1_line_is_the_initiator_cookie_and_the_encryption_key_in_hex() -> None:
    sa = ike_sa(1, enc_key=bytes(range(32)))
    assert ikev1_line(sa) == "0101010101010101," + bytes(range(32)).hex()


def test_ikev1_lines_skip_sas_without_keys_deleted_ones_and_decoys() -> None:
    keyed, early, gone, decoy = (ike_sa(1, enc_key=b"k" * 24), ike_sa(2, state=State.P1_SENT_1),
                                 ike_sa(3, enc_key=b"k" * 24, state=State.DELETED),
                                 ike_sa(4, enc_key=b"k" * 24, state=State.AM_SENT_2))
    decoy.responder = ResponderHold(decoy=True)
    assert ikev1_lines([keyed, early, gone, decoy]) == [ikev1_line(keyed)]


# -- addresses: the outer ones, a wildcard where a NAT hides this end -------------------------------------------


def child_up(sa_id: int, spi_in: int, spi_out: int, t: EspTransform = AES_SHA1) -> ChildSaUp:
    n = t.keymat_len
    return ChildSaUp(sa_id=sa_id, peer=PAT, message_id=spi_in, inbound_spi=spi_in, outbound_spi=spi_out,
                     transform=t.transform_id, key_bits=t.key_bits, auth=t.auth, keymat_in=b"i" * n,
                     keymat_out=b"o" * n, udp_encap=True, local_port=4500, remote_port=4500,
                     local_selector="0.0.0.0/0", remote_selector=f"10.40.1.{sa_id}/32", lifetime=28800)


def test_esp_lines_give_both_directions_with_the_outer_addresses() -> None:
    """The concentrator: NAT-D showed it is not translated, so its own address is exact; the peer is where its ESP
    goes (the PAT's outside address). Inbound: peer → us under our SPI; outbound: us → peer under the peer's."""
    table = SaTable()
    table.install(child_up(1, 0x100, 0x200), PAT, "sock", True)
    sas = {1: ike_sa(1, nat=NatStatus(local_behind_nat=False, remote_behind_nat=True))}
    rows = [fields(str(line)) for line in esp_lines(table, sas)]
    assert [(r[1], r[2], r[3]) for r in rows] == [(PAT, CONCENTRATOR, "0x00000100"), (CONCENTRATOR, PAT, "0x00000200")]
    assert rows[0][5] == "0x" + (b"i" * 32).hex() and rows[1][5] == "0x" + (b"o" * 32).hex()


@pytest.mark.parametrize("nat", [NatStatus(local_behind_nat=True, remote_behind_nat=False), None],
                         ids=["behind-nat", "no-nat-d"])
def test_this_end_is_a_wildcard_when_a_nat_may_translate_it(nat: NatStatus | None) -> None:
    """A client behind a PAT cannot know the address its packets leave the PAT with (nor can one that exchanged
    no NAT-D): `*` matches it at any capture point."""
    table = SaTable()
    table.install(child_up(1, 0x100, 0x200), CONCENTRATOR, "sock", True)
    sas = {1: ike_sa(1, local=CLIENT, remote=CONCENTRATOR, nat=nat)}
    rows = [fields(str(line)) for line in esp_lines(table, sas)]
    assert [(r[1], r[2]) for r in rows] == [(CONCENTRATOR, ANY), (ANY, CONCENTRATOR)]


def test_replaced_pairs_are_exported_while_they_live() -> None:
    table = SaTable()
    table.install(child_up(1, 0x100, 0x200), PAT, "sock", True)
    table.install(child_up(1, 0x101, 0x201), PAT, "sock", True)  # a rekey: the old pair still takes inbound ESP
    sas = {1: ike_sa(1, nat=NatStatus(False, True))}
    assert sorted(fields(str(line))[3] for line in esp_lines(table, sas)) == [
        "0x00000100", "0x00000101", "0x00000200", "0x00000201"]


# -- the files ------------------------------------------------------------------------------------------------


def test_tables_are_written_0600_in_a_new_0700_directory(tmp_path: Path) -> None:
    target = tmp_path / "keys"
    done = write_tables(str(target), ["aa,bb"], ['"IPv4","*"'])
    assert (done.ike_sas, done.esp_sas) == (1, 1)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for name, body in (("ikev1_decryption_table", "aa,bb\n"), ("esp_sa", '"IPv4","*"\n')):
        f = target / name
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert f.read_text() == HEADER + body
    assert sorted(p.name for p in target.iterdir()) == ["esp_sa", "ikev1_decryption_table"], "no temporary left"


def test_a_second_export_replaces_the_tables(tmp_path: Path) -> None:
    target = tmp_path / "keys"
    write_tables(str(target), ["aa,bb", "cc,dd"], [])
    write_tables(str(target), ["ee,ff"], [])
    assert (target / "ikev1_decryption_table").read_text() == HEADER + "ee,ff\n"


def test_a_directory_others_may_enter_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "open"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    with pytest.raises(ControlError, match="mode 0755"):
        write_tables(str(target), ["aa,bb"], [])
    assert not list(target.iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    os.chown(target, 65534, 65534)
    with pytest.raises(ControlError, match="owned by uid 65534"):
        write_tables(str(target), ["aa,bb"], [])


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ControlError, match="cannot open directory"):
        write_tables(str(tmp_path / "link"), ["aa,bb"], [])
    assert not list(real.iterdir())


def test_a_symlink_at_a_table_name_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "keys"
    target.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (target / "esp_sa").symlink_to(victim)
    write_tables(str(target), [], ['"IPv4"'])
    assert victim.read_text() == "untouched\n"
    assert not (target / "esp_sa").is_symlink()


def test_a_relative_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="absolute"):
        write_tables("keys", [], [])


def test_a_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"cannot make directory .*No such file"):
        write_tables(str(tmp_path / "missing" / "keys"), [], [])


# -- the control command ----------------------------------------------------------------------------------------


def test_both_daemons_offer_keys_to_root_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`keys` is in the root class on both control sockets (the control server checks SO_PEERCRED uid 0)."""
    from natt_daemons.client import daemon as client_daemon
    from natt_daemons.client.config import load as load_client
    from natt_daemons.concentrator import config as conc_config
    from natt_daemons.concentrator.daemon import Concentrator

    configs = Path(__file__).resolve().parents[2] / "configs"
    settings = conc_config.load(configs / "concentrator.toml")
    settings.control_socket = str(tmp_path / "c.sock")
    conc = Concentrator(settings)
    conc._register_commands()
    assert conc.control.classes["keys"] == "root"
    monkeypatch.setattr(client_daemon, "source_address_for", lambda peer: CLIENT)
    profile = tmp_path / "client.toml"
    profile.write_text(f'[client]\nconcentrator = "{CONCENTRATOR}"\ngroup = "ciscovpn"\npsk = "secret"\n'
                       f'username = "u"\npassword = "p"\ncontrol_socket = "{tmp_path / "k.sock"}"\n')
    profile.chmod(0o600)
    client = client_daemon.Client(load_client(profile))
    client.register_commands()
    assert client.control.classes["keys"] == "root"
