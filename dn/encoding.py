"""Canonical JSON, hashes, addresses and amounts: the bytes everything else signs.

Canonical JSON is UTF-8, keys sorted, no insignificant whitespace, integers only (no floats, no
integer outside the signed 64-bit range), bytes as lowercase hex. `canonical()` is the only
function that builds bytes to hash or sign.

Addresses are the 32-byte Ed25519 public key in bech32m (BIP-350) with the human part `dn`, so a
typo is caught by the checksum instead of sending funds nowhere. The codec is the BIP's reference
algorithm; no maintained package on the registry implements bech32m without a large crypto stack.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from decimal import Decimal
from typing import Any

from dn.errors import EncodingError, InvalidAddress, InvalidAmount

UNITS_PER_DN = 10**9
DECIMALS = 9
MAX_AMOUNT = 2**63 - 1  # amounts are < 2^63 units
BPS = 10_000  # basis points in a whole: every share of an amount (fees, emission, slashes)
ADDRESS_HRP = "dn"

_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+", re.ASCII)
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


# --- canonical JSON -------------------------------------------------------------------------


def _check(value: Any, path: str) -> Any:
    """Return `value` with bytes turned into hex; refuse anything canonical JSON does not allow."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise EncodingError(f"integer out of range at {path or 'top'}: {value}")
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"non-string key at {path or 'top'}: {key!r}")
            out[key] = _check(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_check(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float):
        raise EncodingError(f"floats are not allowed in canonical data (at {path or 'top'})")
    raise EncodingError(f"cannot encode {type(value).__name__} at {path or 'top'}")


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes of `value` (the only bytes we hash or sign)."""
    return json.dumps(
        _check(value, ""), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hash_hex(value: Any) -> str:
    """SHA-256 of the canonical JSON of `value`, as hex."""
    return hashlib.sha256(canonical(value)).hexdigest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """Binary SHA-256 Merkle root; empty list hashes b''.

    Leaves and inner nodes are domain-separated (0x00 / 0x01 prefix) so a leaf can never pose as
    an inner node, and an odd last node moves up a level unpaired rather than paired with itself,
    so [a, b, c] and [a, b, c, c] have different roots (Bitcoin's CVE-2012-2459).
    """
    if not leaves:
        return sha256(b"")
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    while len(level) > 1:
        paired = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0]


# --- bech32m (BIP-350) ----------------------------------------------------------------------

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(_CHARSET)}
_BECH32M_CONST = 0x2BC830A3
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _gen_table() -> tuple[int, ...]:
    table = []
    for top in range(32):
        value = 0
        for i in range(5):
            if (top >> i) & 1:
                value ^= _GEN[i]
        table.append(value)
    return tuple(table)


_GEN_TABLE = _gen_table()  # the BIP's inner loop, folded into one lookup per character


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        chk = ((chk & 0x1FFFFFF) << 5) ^ v ^ _GEN_TABLE[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise ValueError("invalid padding")
    return out


def bech32m_encode(hrp: str, data: bytes) -> str:
    five = _convertbits(data, 8, 5, True)
    values = _hrp_expand(hrp) + five
    poly = _polymod(values + [0] * 6) ^ _BECH32M_CONST
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in five + checksum)


def bech32m_decode(text: str) -> tuple[str, bytes]:
    """Decode a bech32m string into (hrp, data); raise ValueError with a reason if invalid."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise ValueError("invalid characters")
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text) or len(text) > 90:
        raise ValueError("wrong length or missing separator")
    hrp, rest = text[:pos], text[pos + 1 :]
    if any(c not in _CHARSET_REV for c in rest):
        raise ValueError("invalid characters")
    values = [_CHARSET_REV[c] for c in rest]
    if _polymod(_hrp_expand(hrp) + values) != _BECH32M_CONST:
        raise ValueError("checksum mismatch (a typo?)")
    return hrp, bytes(_convertbits(values[:-6], 5, 8, False))


def address_from_pubkey(pubkey: bytes) -> str:
    if len(pubkey) != 32:
        raise InvalidAddress("a public key is 32 bytes")
    return bech32m_encode(ADDRESS_HRP, pubkey)


def pubkey_from_address(address: str) -> bytes:
    """The 32-byte public key inside `address`; InvalidAddress if it is not a valid dn1… address."""
    if not isinstance(address, str):
        raise InvalidAddress("an address is a string starting with 'dn1'")
    return _decode_address(address)


@functools.lru_cache(maxsize=65536)
def _decode_address(address: str) -> bytes:
    """Memoised: every transaction names its sender (and often a recipient) more than once, and
    a busy node sees the same addresses again and again. Failures raise and are not cached."""
    try:
        hrp, data = bech32m_decode(address)
    except ValueError as exc:
        raise InvalidAddress(f"invalid address {address!r}: {exc}") from None
    if hrp != ADDRESS_HRP:
        raise InvalidAddress(f"invalid address {address!r}: it must start with '{ADDRESS_HRP}1'")
    if len(data) != 32:
        raise InvalidAddress(f"invalid address {address!r}: wrong length")
    if address != address.lower():
        raise InvalidAddress(f"invalid address {address!r}: addresses are lowercase")
    return data


def is_address(text: str) -> bool:
    try:
        pubkey_from_address(text)
    except InvalidAddress:
        return False
    return True


# --- amounts --------------------------------------------------------------------------------


def check_amount(value: Any, *, allow_zero: bool = False, what: str = "amount") -> int:
    """Validate an amount in base units: an int, 0 < value < 2^63 (or 0 if allowed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(f"{what} must be an integer number of units")
    if value < 0:
        raise InvalidAmount(f"{what} must not be negative")
    if value == 0 and not allow_zero:
        raise InvalidAmount(f"{what} must be greater than zero")
    if value > MAX_AMOUNT:
        raise InvalidAmount(f"{what} must be below 2^63 units")
    return value


def parse_dn(text: str, *, allow_zero: bool = False, what: str = "amount") -> int:
    """Parse a DN amount like '1.5' (at most 9 decimals) into base units."""
    raw = text.strip()
    if raw.startswith("-") and _DECIMAL_RE.fullmatch(raw[1:]):
        raise InvalidAmount(f"{what} must not be negative")
    if not _DECIMAL_RE.fullmatch(raw):
        raise InvalidAmount(f"{what} {text!r} is not a plain decimal number like 1.5")
    dec = Decimal(raw)
    exponent = dec.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > DECIMALS:
        raise InvalidAmount(f"{what} {text!r} has more than {DECIMALS} decimals")
    units = int(dec * UNITS_PER_DN)
    return check_amount(units, allow_zero=allow_zero, what=what)


def format_dn(units: int) -> str:
    """Base units as a DN string without trailing zeros: 1500000000 -> '1.5'."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS_PER_DN)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:09d}".rstrip("0")
