"""Diffie-Hellman groups: published vectors, agreement, encodings and refusal of bad peers."""

from __future__ import annotations

import hashlib

import pytest

from natt.crypto import dh as dh_module
from natt.crypto.dh import GROUPS, DHGroup, DHPrivateKey, get_group
from natt.errors import CryptoError, InvalidKeyInformation, UnsupportedAlgorithm

pytestmark = pytest.mark.unit

MODP_IDS = [1, 2, 5, 14, 15, 16]
ECP_IDS = [19, 20]

# RFC 5903 section 8.1 (256-bit random ECP group) and 8.2 (384-bit): initiator private i,
# responder private r, their public points, and the x coordinate of the shared point.
RFC5903 = {
    19: {
        "i": "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        "gix": "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180",
        "giy": "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
        "r": "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        "grx": "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63",
        "gry": "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
        "girx": "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
    },
    20: {
        "i": "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655E35B538041E649EE3FAEF896783AB194",
        "gix": "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6DE3AC808ACB4BDB4C88732AEE95F41AA",
        "giy": "9482ED1FC0EEB9CAFC4984625CCFC23F65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
        "r": "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942E0308312916B8ED2960E4BD55A7448FC",
        "grx": "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D0D1AC43A0336DEF96FDA41D0774A3571",
        "gry": "DCFBEC7AACF3196472169E838430367F66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
        "girx": "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4D603135569B9E9D09CF5D4A270F59746",
    },
}


@pytest.mark.parametrize("group_id", ECP_IDS)
def test_ecp_rfc5903_vectors(group_id: int) -> None:
    """RFC 5903 section 8.1 (group 19) and 8.2 (group 20): publics g^i, g^r and shared x."""
    v = {name: bytes.fromhex(value) for name, value in RFC5903[group_id].items()}
    group = get_group(group_id)
    initiator = group.generate(private=v["i"])
    responder = group.generate(private=v["r"])
    # KE payload data: x || y, no 0x04 prefix (RFC 5903 section 7).
    assert initiator.public_bytes() == v["gix"] + v["giy"]
    assert responder.public_bytes() == v["grx"] + v["gry"]
    # The shared secret is the x coordinate only (RFC 5903 section 9).
    assert initiator.shared_secret(responder.public_bytes()) == v["girx"]
    assert responder.shared_secret(initiator.public_bytes()) == v["girx"]
    assert initiator.private_bytes() == v["i"]


@pytest.mark.parametrize("group_id", MODP_IDS + ECP_IDS)
def test_agreement_both_ways(group_id: int) -> None:
    """Two fresh keys of every group agree, at the lengths RFC 2409 / RFC 5903 prescribe."""
    group = get_group(group_id)
    a, b = group.generate(), group.generate()
    assert isinstance(a, DHPrivateKey) and a.group is group
    assert len(a.public_bytes()) == len(b.public_bytes()) == group.public_len
    secret = a.shared_secret(b.public_bytes())
    assert secret == b.shared_secret(a.public_bytes())
    expected_secret_len = group.public_len if group.kind == "modp" else group.public_len // 2
    assert len(secret) == expected_secret_len
    assert a.public_bytes() != b.public_bytes()


@pytest.mark.parametrize("group_id", MODP_IDS)
def test_modp_public_length_is_the_prime_length(group_id: int) -> None:
    """RFC 2409 section 5: a MODP KE payload is exactly as long as the prime."""
    group = get_group(group_id)
    assert group.public_len == (group.prime.bit_length() + 7) // 8 == group.bits // 8


# Fixed private exponents for the known-answer tests (any value in 1 < x < (p-1)/2 will do).
X_OURS = 0x7F3A9C4E5D21B08866F1E2D3C4B5A69788796A5B4C3D2E1F00112233445566778899AABBCCDDEEFF
X_PEER = 0x1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF13579BDF02468ACE


@pytest.mark.parametrize("group_id", MODP_IDS)
def test_modp_known_answer_against_pow(group_id: int) -> None:
    """Fixed exponents; expected g^x and g^xy computed here with Python's pow(), which for
    groups 5-16 is a path independent of the OpenSSL code under test (groups 1 and 2 use pow()
    internally too, so for them this checks encoding and padding more than arithmetic)."""
    group = get_group(group_id)
    p, size = group.prime, group.public_len
    ours = group.generate(private=X_OURS.to_bytes(40, "big"))
    peer_public = pow(2, X_PEER, p).to_bytes(size, "big")
    assert ours.public_bytes() == pow(2, X_OURS, p).to_bytes(size, "big")
    assert ours.shared_secret(peer_public) == pow(2, X_OURS * X_PEER, p).to_bytes(size, "big")


# SHA-256 of the full g^x and g^xy for the fixed exponents, groups 2 and 14: computed once
# with pow() and pasted, so neither the primes nor the encodings can drift unnoticed.
PINNED = {
    2: (
        "f17f9a2913f48320c5c37e436751a8b87d4215f2609c51d5185f3885ce479250",
        "6776cd3b2d0559fe70324787d49c88753a6bb35159466d841e77c16d045d35d6",
    ),
    14: (
        "41894ff22616a1d870a79544caa743c8f8f7e828ab49e206841f34799898fc04",
        "a5c59fb0a94abc93362162b6e794aa92cb217fd54a0530c2c3a5731831ef8b00",
    ),
}


@pytest.mark.parametrize("group_id", [2, 14])
def test_modp_known_answer_pinned(group_id: int) -> None:
    """Groups 2 (pow() inside) and 14 (OpenSSL inside) against values pasted from a one-off
    pow() computation with the same fixed exponents."""
    group = get_group(group_id)
    ours = group.generate(private=X_OURS.to_bytes(40, "big"))
    shared = ours.shared_secret(pow(2, X_PEER, group.prime).to_bytes(group.public_len, "big"))
    assert (hashlib.sha256(ours.public_bytes()).hexdigest(), hashlib.sha256(shared).hexdigest()) == PINNED[group_id]


@pytest.mark.parametrize("group_id", [2, 14])
def test_modp_leading_zeros_are_kept(group_id: int) -> None:
    """RFC 2409: values are left-padded to the prime length. A tiny exponent gives g^x = 2^5
    and, with peer value 2, g^xy = 2^5: both must still come out at full length."""
    group = get_group(group_id)
    key = group.generate(private=b"\x05")
    assert key.public_bytes() == (32).to_bytes(group.public_len, "big")
    assert key.shared_secret((2).to_bytes(group.public_len, "big")) == (32).to_bytes(group.public_len, "big")


@pytest.mark.parametrize("group_id", MODP_IDS + ECP_IDS)
def test_private_bytes_round_trip(group_id: int) -> None:
    """private_bytes() feeds back into generate(private=...) to rebuild the same key."""
    group = get_group(group_id)
    key = group.generate()
    again = group.generate(private=key.private_bytes())
    assert again.public_bytes() == key.public_bytes()


@pytest.mark.parametrize("group_id", MODP_IDS)
def test_modp_refuses_degenerate_peer_values(group_id: int) -> None:
    """0, 1, p-1 (and p itself) force a known shared secret: InvalidKeyInformation."""
    group = get_group(group_id)
    key = group.generate()
    p, size = group.prime, group.public_len
    for bad in (0, 1, p - 1, p, 2**group.bits - 1):
        with pytest.raises(InvalidKeyInformation, match="out of range"):
            key.shared_secret(bad.to_bytes(size, "big"))


@pytest.mark.parametrize("group_id", MODP_IDS + ECP_IDS)
def test_refuses_wrong_length(group_id: int) -> None:
    """A KE payload shorter or longer than the group's length is InvalidKeyInformation."""
    group = get_group(group_id)
    key = group.generate()
    good = group.generate().public_bytes()
    for bad in (good[1:], b"\x00" + good, good + b"\x00", b""):
        with pytest.raises(InvalidKeyInformation, match="bytes, expected"):
            key.shared_secret(bad)


@pytest.mark.parametrize("group_id", ECP_IDS)
def test_ecp_refuses_points_off_the_curve(group_id: int) -> None:
    """y + 1 moves a valid point off the curve; the all-zero encoding (no point at infinity
    in x || y form) and coordinates >= the field prime are refused too."""
    group = get_group(group_id)
    key = group.generate()
    size = group.public_len // 2
    public = group.generate().public_bytes()
    y = int.from_bytes(public[size:], "big")
    off_curve = public[:size] + ((y + 1) % group.prime).to_bytes(size, "big")
    with pytest.raises(InvalidKeyInformation, match="not a point on the curve"):
        key.shared_secret(off_curve)
    with pytest.raises(InvalidKeyInformation, match="not a point on the curve"):
        key.shared_secret(bytes(group.public_len))
    with pytest.raises(InvalidKeyInformation, match="field prime"):
        key.shared_secret(b"\xff" * group.public_len)


@pytest.mark.parametrize("group_id", ECP_IDS)
def test_ecp_field_prime_matches_the_curve(group_id: int) -> None:
    """Points of the curve satisfy y^2 = x^3 - 3x + b mod p for one b: checks our field primes
    against OpenSSL's curve without trusting either."""
    group = get_group(group_id)
    size, p = group.public_len // 2, group.prime
    constants = set()
    for _ in range(3):
        public = group.generate().public_bytes()
        x, y = int.from_bytes(public[:size], "big"), int.from_bytes(public[size:], "big")
        constants.add((y * y - x**3 + 3 * x) % p)
    assert len(constants) == 1


@pytest.mark.parametrize("group_id", MODP_IDS)
def test_modp_refuses_bad_injected_private(group_id: int) -> None:
    """An injected exponent must be 1 < x < (p-1)/2: others are a CryptoError, not a key."""
    group = get_group(group_id)
    q = (group.prime - 1) // 2
    for bad in (
        b"",
        b"\x00",
        b"\x01",
        q.to_bytes(group.public_len, "big"),
        (group.prime - 2).to_bytes(group.public_len, "big"),
    ):
        with pytest.raises(CryptoError, match="private value"):
            group.generate(private=bad)
    assert group.generate(private=(q - 1).to_bytes(group.public_len, "big")).public_bytes()


@pytest.mark.parametrize("group_id", ECP_IDS)
def test_ecp_refuses_bad_injected_private(group_id: int) -> None:
    """An ECP private value must have the field's length and lie in 1 <= d < n."""
    group = get_group(group_id)
    size = group.public_len // 2
    for bad in (bytes(size), b"\xff" * size, b"\x01", b"\x01" * (size + 1)):
        with pytest.raises(CryptoError, match="private value"):
            group.generate(private=bad)


def test_group_table() -> None:
    """Ids, display names, sizes, kinds and weak flags the proposal code and logs rely on."""
    summary = {g.id: (g.name, g.bits, g.kind, g.weak) for g in GROUPS.values()}
    assert summary == {
        1: ("MODP-768 (group 1)", 768, "modp", True),
        2: ("MODP-1024 (group 2)", 1024, "modp", True),
        5: ("MODP-1536 (group 5)", 1536, "modp", True),
        14: ("MODP-2048 (group 14)", 2048, "modp", False),
        15: ("MODP-3072 (group 15)", 3072, "modp", False),
        16: ("MODP-4096 (group 16)", 4096, "modp", False),
        19: ("ECP-256 (group 19)", 256, "ecp", False),
        20: ("ECP-384 (group 20)", 384, "ecp", False),
    }
    assert all(isinstance(g, DHGroup) and get_group(i) is g for i, g in GROUPS.items())


@pytest.mark.parametrize("group_id", [0, 3, 4, 17, 18, 21, 24, 31])
def test_unknown_group_is_unsupported(group_id: int) -> None:
    """EC2N (3, 4), 17/18 (MODP-6144/8192), 21 (ECP-521), 24 and 31 are not offered here."""
    with pytest.raises(UnsupportedAlgorithm, match=str(group_id)):
        get_group(group_id)


def _pi_times_2_to_the(bits: int) -> int:
    """floor(pi * 2^bits) from Machin's formula in integer arithmetic."""
    one = 1 << (bits + 32)

    def arctan_inverse(n: int) -> int:
        total = term = one // n
        k, sign = 1, -1
        while term:
            term //= n * n
            k += 2
            total += sign * (term // k)
            sign = -sign
        return total

    return (4 * (4 * arctan_inverse(5) - arctan_inverse(239))) >> 32


@pytest.mark.parametrize(
    ("group_id", "k"),
    [(1, 149686), (2, 129093), (5, 741804), (14, 124476), (15, 1690314), (16, 240904)],
)
def test_modp_primes_follow_the_rfc_formula(group_id: int, k: int) -> None:
    """RFC 2409 section 6 and RFC 3526: p = 2^n - 2^(n-64) - 1 + 2^64 * ([2^(n-130) pi] + k),
    generator 2. Recomputing p from pi catches any typo in the pasted hex."""
    group = get_group(group_id)
    n = group.bits
    assert group.prime == 2**n - 2 ** (n - 64) - 1 + 2**64 * (_pi_times_2_to_the(n - 130) + k)
    assert group.generator == 2


def test_repr_hides_private_value() -> None:
    """repr() of a key names the group only, so a stray log line cannot leak the exponent."""
    key = get_group(14).generate(private=X_OURS.to_bytes(40, "big"))
    assert "MODP-2048" in repr(key)
    assert format(X_OURS, "x") not in repr(key).lower()


def test_pow_fallback_interoperates_with_openssl(monkeypatch: pytest.MonkeyPatch) -> None:
    """If OpenSSL ever refuses a MODP group (FFDH is deprecated in cryptography), pow() takes
    over for it; such a key must agree with an OpenSSL-backed one and give the same public value."""
    group = get_group(14)
    openssl_key = group.generate()
    monkeypatch.setattr(dh_module, "_openssl_parameters", lambda prime, generator: None)
    pow_key = group.generate()
    assert type(pow_key).__name__ == "_PowModpKey"
    assert pow_key.shared_secret(openssl_key.public_bytes()) == openssl_key.shared_secret(pow_key.public_bytes())
    fixed = X_OURS.to_bytes(40, "big")
    assert group.generate(private=fixed).public_bytes() == pow(2, X_OURS, group.prime).to_bytes(256, "big")


@pytest.mark.parametrize("group_id", [1, 2])
def test_fixed_base_table_matches_pow(group_id: int) -> None:
    """Groups 1 and 2 compute g^x from a table of powers of g: the same value as pow(), at the edges too."""
    import os

    from natt.crypto.dh import _fixed_base_pow

    g = GROUPS[group_id]
    edges = [1, 2, 255, 256, 2**8 - 1, 2**248, 2**256 - 1, int.from_bytes(b"\x01" * 32, "big")]
    for x in edges + [int.from_bytes(os.urandom(32), "big") for _ in range(50)]:
        assert _fixed_base_pow(g.prime, g.generator, x) == pow(g.generator, x, g.prime), hex(x)
    key = g.generate()
    other = g.generate()
    assert key.shared_secret(other.public_bytes()) == other.shared_secret(key.public_bytes())


def test_prepare_builds_the_table_once() -> None:
    dh_module._fixed_base_rows.cache_clear()
    GROUPS[2].prepare()
    GROUPS[14].prepare()  # OpenSSL's group: nothing to build
    assert dh_module._fixed_base_rows.cache_info().currsize == 1
    GROUPS[2].generate()
    assert dh_module._fixed_base_rows.cache_info().hits >= 1
