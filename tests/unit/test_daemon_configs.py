"""The shipped configs load, and wrong ones are refused with a message that says where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from natt_daemons.client import config as client_config
from natt_daemons.common.config import ConfigError
from natt_daemons.common.passwords import hash_password, verify_password
from natt_daemons.concentrator import config as conc_config

pytestmark = pytest.mark.unit
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_concentrator_config_loads() -> None:
    s = conc_config.load(CONFIGS / "concentrator.toml")
    assert s.address == "198.51.100.50" and s.policy.nat_traversal is True
    g = s.policy.groups["ciscovpn"]
    assert g.pool == "10.40.1.0/24" and len(g.phase1) == 3 and g.xauth
    assert s.policy.session_limit == 100


def test_nat_transparency_is_off_by_default(tmp_path: Path) -> None:
    """SCENARIO.md: NAT-T is OFF by default on the concentrator and must be enabled."""
    p = tmp_path / "c.toml"
    p.write_text('[concentrator]\naddress = "198.51.100.50"\n[groups.g]\npsk = "k"\n')
    assert conc_config.load(p).policy.nat_traversal is False


@pytest.mark.parametrize(("body", "words"), [
    ('[concentrator]\naddress = "not-an-ip"\n[groups.g]\npsk = "k"\n', "not an IPv4 address"),
    ('[concentrator]\naddress = "198.51.100.50"\n[groups.g]\npool = "10.40.1.0/24"\n', "'psk'"),
    ('[concentrator]\naddress = "198.51.100.50"\n[groups.g]\npsk = "k"\nphase1 = ["rc4-md5-modp1024"]\n',
     "phase 1 suite"),
    ('[concentrator]\naddress = "198.51.100.50"\n[groups.g]\npsk = "k"\n[users]\nbob = "secret"\n',
     "natt-concentrator passwd"),
    ('[concentrator]\naddress = "198.51.100.50"\nsession_limit = "many"\n[groups.g]\npsk = "k"\n', "session_limit"),
    ("[concentrator\n", "c.toml"),
])
def test_bad_concentrator_configs(tmp_path: Path, body: str, words: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(body)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        conc_config.load(p)


def test_psk_file_and_hashed_users(tmp_path: Path) -> None:
    (tmp_path / "g.psk").write_text("from-a-file\n")
    p = tmp_path / "c.toml"
    p.write_text(f'[concentrator]\naddress = "198.51.100.50"\n[groups.g]\npsk_file = "g.psk"\n'
                 f'[users]\nbob = "{hash_password("pw")}"\n')
    s = conc_config.load(p)
    assert s.policy.groups["g"].psk == b"from-a-file"
    assert s.policy.verify_user("bob", "pw") and not s.policy.verify_user("bob", "nope")
    assert not s.policy.verify_user("alice", "pw")


def test_password_hash_is_salted() -> None:
    a, b = hash_password("same"), hash_password("same")
    assert a != b and verify_password(a, "same") and verify_password(b, "same")
    assert not verify_password(a, "other")


def test_client_profiles_load_and_validate(tmp_path: Path) -> None:
    s = client_config.load(CONFIGS / "client1.toml")
    assert s.profile.username == "vpnclient1" and s.profile.nat_traversal and s.ike_port == 500
    assert client_config.load(CONFIGS / "client2.toml").ike_port == 0
    assert client_config.load(CONFIGS / "client1.toml", password="typed").profile.password == "typed"
    p = tmp_path / "k.toml"
    p.write_text('[client]\nconcentrator = "198.51.100.50"\ngroup = "g"\npsk = "k"\nmode = "quick"\n')
    with pytest.raises(ConfigError, match="mode must be"):
        client_config.load(p)


def test_client_lifetimes_reach_the_proposals(tmp_path: Path) -> None:
    p = tmp_path / "k.toml"
    base = '[client]\nconcentrator = "198.51.100.50"\ngroup = "g"\npsk = "k"\n'
    p.write_text(base + "phase1_lifetime = 3600\nphase2_lifetime = 60\n")
    s = client_config.load(p)
    assert {x.lifetime for x in s.profile.phase1} == {3600}
    assert {x.lifetime for x in s.profile.phase2} == {60}
    p.write_text(base + "phase2_lifetime = 10\n")
    with pytest.raises(ConfigError, match="phase2_lifetime 10 is outside"):
        client_config.load(p)


def test_client_natt_versions(tmp_path: Path) -> None:
    from natt.wire.constants import VendorId

    p = tmp_path / "k.toml"
    base = '[client]\nconcentrator = "198.51.100.50"\ngroup = "g"\npsk = "k"\n'
    p.write_text(base + 'natt_versions = ["draft-02"]\n')
    assert client_config.load(p).profile.natt_vendor_ids == (VendorId.NATT_DRAFT_02,)
    p.write_text(base + 'natt_versions = ["rfc9999"]\n')
    with pytest.raises(ConfigError, match="choose from rfc3947"):
        client_config.load(p)


def test_caching_verifier_remembers_only_successes() -> None:
    from natt_daemons.common.passwords import CachingVerifier

    v = CachingVerifier()
    stored = hash_password("right")
    assert not v.verify("bob", stored, "wrong")
    assert v.verify("bob", stored, "right")
    assert v.verify("bob", stored, "right"), "the second login is answered from the cache"
    assert not v.verify("bob", stored, "wrong"), "a cached user still needs the right password"
    assert not v.verify("bob", hash_password("new"), "right"), "a new stored hash is checked afresh"


def test_tun_offload_setting(tmp_path: Path) -> None:
    """On unless switched off, in both daemons; a non-boolean is refused."""
    assert conc_config.load(CONFIGS / "concentrator.toml").tun_offload is True
    assert client_config.load(CONFIGS / "client1.toml").tun_offload is True
    p = tmp_path / "c.toml"
    p.write_text('[concentrator]\naddress = "198.51.100.50"\ntun_offload = false\n[groups.g]\npsk = "k"\n')
    assert conc_config.load(p).tun_offload is False
    k = tmp_path / "k.toml"
    k.write_text('[client]\nconcentrator = "198.51.100.50"\ngroup = "g"\npsk = "k"\ntun_offload = "yes"\n')
    with pytest.raises(ConfigError, match="tun_offload"):
        client_config.load(k)
