"""Canonical JSON, hashes, bech32m addresses and DN amounts (DESIGN.md section 2)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dn.encoding import (
    MAX_AMOUNT,
    UNITS_PER_DN,
    address_from_pubkey,
    bech32m_decode,
    bech32m_encode,
    canonical,
    check_amount,
    format_dn,
    hash_hex,
    is_address,
    merkle_root,
    parse_dn,
    pubkey_from_address,
    sha256,
)
from dn.errors import EncodingError, InputError, InvalidAddress, InvalidAmount
from dn.wallet.keys import Keypair

PUBKEY = bytes(range(32))
CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

# --- canonical JSON -------------------------------------------------------------------------


def test_canonical_sorts_keys_at_every_level_without_whitespace() -> None:
    value = {"b": 1, "a": {"z": [3, 2, 1], "y": None}, "c": [{"k": True, "j": False}]}
    assert canonical(value) == b'{"a":{"y":null,"z":[3,2,1]},"b":1,"c":[{"j":false,"k":true}]}'


def test_canonical_does_not_depend_on_insertion_order() -> None:
    assert canonical({"x": 1, "y": 2}) == canonical({"y": 2, "x": 1})
    assert hash_hex({"x": 1, "y": 2}) == hash_hex({"y": 2, "x": 1})
    assert hash_hex({"x": 1}) == hashlib.sha256(b'{"x":1}').hexdigest()


def test_canonical_is_utf8_not_ascii_escaped() -> None:
    assert canonical({"name": "café ☕"}) == '{"name":"café ☕"}'.encode()
    assert canonical("ü") == b'"\xc3\xbc"'


def test_canonical_turns_bytes_into_lowercase_hex() -> None:
    assert canonical({"b": b"\x00\xab\xff"}) == b'{"b":"00abff"}'
    assert canonical([bytearray(b"\x10")]) == b'["10"]'


def test_canonical_turns_tuples_into_lists() -> None:
    assert canonical((1, "a")) == b'[1,"a"]'


@pytest.mark.parametrize(
    "value",
    [1.0, 0.5, {"amount": 1.5}, [1, [2.0]], {"a": {"b": float("nan")}}],
)
def test_canonical_refuses_floats_anywhere(value: object) -> None:
    with pytest.raises(EncodingError, match="float"):
        canonical(value)


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), 0, -1])
def test_canonical_accepts_signed_64_bit_integers(value: int) -> None:
    assert canonical({"n": value}) == f'{{"n":{value}}}'.encode()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30, {"deep": [2**64]}])
def test_canonical_refuses_integers_outside_signed_64_bit(value: object) -> None:
    with pytest.raises(EncodingError, match="out of range"):
        canonical(value)


@pytest.mark.parametrize("value", [{1: "a"}, {"s": {1, 2}}, object(), {"d": 1j}])
def test_canonical_refuses_other_types_and_non_string_keys(value: object) -> None:
    with pytest.raises(EncodingError):
        canonical(value)


# --- hashes ---------------------------------------------------------------------------------


def test_sha256_matches_the_standard_vector() -> None:
    assert sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_merkle_root_of_nothing_is_the_hash_of_empty_bytes() -> None:
    assert merkle_root([]) == hashlib.sha256(b"").digest()


def test_merkle_root_shapes() -> None:
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = (sha256(b"\x00" + x) for x in (a, b, c))
    assert merkle_root([a]) == la
    assert merkle_root([a, b]) == sha256(b"\x01" + la + lb)
    # An odd last node moves up unpaired, so a duplicated last leaf changes the root.
    assert merkle_root([a, b, c]) == sha256(b"\x01" + sha256(b"\x01" + la + lb) + lc)
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])


def test_merkle_root_depends_on_order_and_content() -> None:
    assert merkle_root([b"a", b"b"]) != merkle_root([b"b", b"a"])
    assert merkle_root([b"a", b"b"]) != merkle_root([b"a", b"c"])
    assert merkle_root([b"a"]) != merkle_root([b"a", b"a"])


def test_merkle_leaf_cannot_pose_as_an_inner_node() -> None:
    la, lb = sha256(b"\x00a"), sha256(b"\x00b")
    assert merkle_root([la + lb]) != merkle_root([b"a", b"b"])


# --- bech32m (BIP-350 test vectors) ---------------------------------------------------------

VALID_BECH32M = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]


@pytest.mark.parametrize("text", VALID_BECH32M)
def test_bip350_valid_vectors_decode(text: str) -> None:
    hrp, data = bech32m_decode(text)
    assert hrp == text.lower()[: text.lower().rfind("1")]
    assert bech32m_encode(hrp, data) == text.lower()


def test_bip350_vector_payload() -> None:
    # The data part is the charset backwards: 5-bit values 31, 30, ..., 0.
    hrp, data = bech32m_decode("abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx")
    assert hrp == "abcdef"
    assert data.hex() == "ffbbcdeb38bdab49ca307b9ac5a928398a418820"


INVALID_BECH32M = [
    "\x201xj0phk",  # HRP character out of range
    "\x7f1g6xzxy",
    "\x801vctc34",
    # overall length above 90
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
    "qyrz8wqd2c9m",  # no separator
    "1qyrz8wqd2c9m",  # empty HRP
    "y1b0jsk6g",  # invalid data character
    "lt1igcx5c0",
    "in1muywd",  # checksum too short
    "mm1crxm3i",  # invalid character in checksum
    "au1s5cgom",
    "M1VUXWEZ",  # checksum computed with an uppercase HRP
    "16plkw9",  # empty HRP
    "1p2gdwpf",
    "A1lqfn3a",  # mixed case
    "a1lqfn3A",
    "a1lqfn3b",  # last character changed
]

# Valid under the original bech32 (BIP-173) checksum, so invalid bech32m.
BECH32_NOT_M = [
    "a12uel5l",
    "A12UEL5L",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]


@pytest.mark.parametrize("text", INVALID_BECH32M + BECH32_NOT_M)
def test_invalid_bech32m_strings_fail(text: str) -> None:
    with pytest.raises(ValueError):
        bech32m_decode(text)


def test_mixed_case_is_named_as_such() -> None:
    with pytest.raises(ValueError, match="mixed case"):
        bech32m_decode("A1lqfn3a")


# --- addresses ------------------------------------------------------------------------------


def test_address_round_trip_from_a_generated_key() -> None:
    kp = Keypair.generate()
    assert kp.address.startswith("dn1")
    assert len(kp.address) == 61  # "dn1" + 52 data characters + 6 checksum characters
    assert kp.address == address_from_pubkey(kp.pubkey)
    assert pubkey_from_address(kp.address) == kp.pubkey
    assert is_address(kp.address)


def test_address_of_fixed_key_is_stable() -> None:
    address = address_from_pubkey(PUBKEY)
    assert address == bech32m_encode("dn", PUBKEY)
    assert pubkey_from_address(address) == PUBKEY


@pytest.mark.parametrize("size", [0, 31, 33])
def test_address_from_pubkey_needs_32_bytes(size: int) -> None:
    with pytest.raises(InvalidAddress):
        address_from_pubkey(bytes(size))


def test_every_single_character_substitution_is_rejected() -> None:
    address = address_from_pubkey(bytes.fromhex("a3" * 16 + "5c" * 16))
    replacements = CHARSET + "1bioDNQL"
    tried = 0
    for pos, original in enumerate(address):
        for char in replacements:
            if char == original:
                continue
            typo = address[:pos] + char + address[pos + 1 :]
            tried += 1
            assert not is_address(typo), f"typo at {pos} ({original!r}->{char!r}) accepted"
            with pytest.raises(InvalidAddress):
                pubkey_from_address(typo)
    assert tried > 61 * 30


def test_swapped_neighbours_are_rejected() -> None:
    address = address_from_pubkey(PUBKEY)
    for pos in range(3, len(address) - 1):
        if address[pos] == address[pos + 1]:
            continue
        swapped = address[:pos] + address[pos + 1] + address[pos] + address[pos + 2 :]
        assert not is_address(swapped), pos


def test_wrong_prefix_is_rejected() -> None:
    with pytest.raises(InvalidAddress, match="dn1") as exc:
        pubkey_from_address(bech32m_encode("bc", PUBKEY))
    assert exc.value.reason == "bad-address"
    assert isinstance(exc.value, InputError)


@pytest.mark.parametrize("size", [20, 31, 33, 64])
def test_wrong_length_is_rejected(size: int) -> None:
    with pytest.raises(InvalidAddress, match="length"):
        pubkey_from_address(bech32m_encode("dn", bytes(size)))


def test_uppercase_address_is_rejected() -> None:
    address = address_from_pubkey(PUBKEY)
    with pytest.raises(InvalidAddress, match="lowercase"):
        pubkey_from_address(address.upper())


@pytest.mark.parametrize("value", ["", "dn1", "dn1qqqq", " " + "dn1x", None, b"dn1", 42])
def test_junk_is_not_an_address(value: object) -> None:
    with pytest.raises(InvalidAddress):
        pubkey_from_address(value)  # type: ignore[arg-type]


def test_address_with_surrounding_whitespace_is_rejected() -> None:
    address = address_from_pubkey(PUBKEY)
    assert not is_address(address + " ")
    assert not is_address(" " + address)
    assert not is_address(address + "\n")


# --- amounts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("1.5", 1_500_000_000),
        ("0.000000001", 1),
        ("1", UNITS_PER_DN),
        ("0.1", 100_000_000),
        ("42.000000000", 42 * UNITS_PER_DN),
        (" 2 ", 2 * UNITS_PER_DN),
        (".5", 500_000_000),
        ("9223372036.854775807", 2**63 - 1),
    ],
)
def test_parse_dn(text: str, units: int) -> None:
    assert parse_dn(text) == units


@pytest.mark.parametrize(
    "text",
    [
        "0.0000000001",  # 10 decimals
        "1.1234567891",
        "-1",
        "-0.5",
        "0",
        "0.0",
        "-0",
        "9223372036.854775808",  # 2^63 units
        "99999999999999999999999999",
        "",
        "   ",
        "abc",
        "1.2.3",
        "1,5",
        "5 DN",
        "1e5",
        "1E5",
        "1e-9",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "+1",
        "0x10",
    ],
)
def test_parse_dn_rejects(text: str) -> None:
    with pytest.raises(InvalidAmount) as exc:
        parse_dn(text)
    assert exc.value.reason == "bad-amount"


def test_parse_dn_zero_only_when_allowed() -> None:
    assert parse_dn("0", allow_zero=True) == 0
    assert parse_dn("0.000000000", allow_zero=True) == 0
    with pytest.raises(InvalidAmount, match="greater than zero"):
        parse_dn("0")


def test_parse_dn_names_the_problem() -> None:
    with pytest.raises(InvalidAmount, match="decimals"):
        parse_dn("0.0000000001")
    with pytest.raises(InvalidAmount, match="negative"):
        parse_dn("-1")
    with pytest.raises(InvalidAmount, match="2\\^63"):
        parse_dn("9223372036.854775808")
    with pytest.raises(InvalidAmount, match="fee"):
        parse_dn("x", what="fee")


@pytest.mark.parametrize("value", [1, 2**63 - 1, UNITS_PER_DN])
def test_check_amount_accepts(value: int) -> None:
    assert check_amount(value) == value


@pytest.mark.parametrize("value", [0, -1, 2**63, True, False, 1.0, "5", None])
def test_check_amount_rejects(value: object) -> None:
    with pytest.raises(InvalidAmount):
        check_amount(value)


def test_check_amount_zero_when_allowed() -> None:
    assert check_amount(0, allow_zero=True) == 0


@pytest.mark.parametrize(
    ("units", "text"),
    [
        (0, "0"),
        (1, "0.000000001"),
        (1_500_000_000, "1.5"),
        (UNITS_PER_DN, "1"),
        (10 * UNITS_PER_DN + 10, "10.00000001"),
        (2**63 - 1, "9223372036.854775807"),
    ],
)
def test_format_dn(units: int, text: str) -> None:
    assert format_dn(units) == text


@given(st.integers(min_value=0, max_value=MAX_AMOUNT))
def test_format_then_parse_round_trips(units: int) -> None:
    text = format_dn(units)
    assert "e" not in text.lower()
    assert parse_dn(text, allow_zero=True) == units


@pytest.mark.parametrize("text", ["1_000", "١٢", "1,5", " ", "", ".", "1.", "0x10", "+1"])
def test_amounts_are_plain_ascii_decimals(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_dn(text)
