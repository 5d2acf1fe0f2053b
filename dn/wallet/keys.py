"""Ed25519 keys (PyNaCl). A `Keypair` never shows its secret in `repr` or `str`."""

from __future__ import annotations

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from dn.encoding import address_from_pubkey, pubkey_from_address


class Keypair:
    __slots__ = ("_signing", "pubkey", "address")

    def __init__(self, signing: SigningKey) -> None:
        self._signing = signing
        self.pubkey = bytes(signing.verify_key)
        self.address = address_from_pubkey(self.pubkey)

    @classmethod
    def generate(cls) -> Keypair:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        return cls(SigningKey(seed))

    def seed(self) -> bytes:
        """The 32-byte secret seed. Only the keystore and an explicit export call this."""
        return bytes(self._signing)

    def sign(self, message: bytes) -> bytes:
        return self._signing.sign(message).signature

    def __repr__(self) -> str:
        return f"Keypair(address={self.address!r})"

    __str__ = __repr__


def verify(address: str, message: bytes, signature: bytes) -> bool:
    """True when `signature` over `message` was made by the key behind `address`."""
    if len(signature) != 64:
        return False
    try:
        VerifyKey(pubkey_from_address(address)).verify(message, signature)
    except (BadSignatureError, ValueError):
        return False
    return True
