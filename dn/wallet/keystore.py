"""Password-sealed keystore files.

A keystore is versioned JSON::

    {"version": 1, "address": "dn1…",
     "kdf": {"name": "argon2id", "opslimit": 3, "memlimit": 268435456, "salt": "<16 bytes hex>"},
     "cipher": {"name": "xsalsa20poly1305", "nonce": "<24 bytes hex>", "ciphertext": "<hex>"}}

The key is Argon2id of the password with a fresh random salt per file (never one salt for all
users). SecretBox seals, under a fresh nonce, the seed followed by the SHA-256 of the canonical
header (version, address, KDF section, cipher name), so a changed header fails to open even where
the KDF would derive the same key. Hex must be lowercase: one file has one spelling. Files
are written atomically (temp file, fsync, rename) with mode 0600 in a 0700 folder, and a keystore
that others can read is refused.

`KDF_FAST` is for devnet wallets only (documented in the README); real wallets default to
`KDF_MODERATE`.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from dn.config import atomic_write, private_dir, wallets_dir
from dn.encoding import canonical, is_address, pubkey_from_address, sha256
from dn.errors import (
    InputError,
    KeystoreCorrupt,
    KeystoreInsecure,
    WalletExists,
    WalletNotFound,
    WrongPassword,
)
from dn.wallet.keys import Keypair

VERSION = 1
_ARGON = nacl.pwhash.argon2id


@dataclass(frozen=True)
class KdfParams:
    opslimit: int
    memlimit: int


KDF_MODERATE = KdfParams(_ARGON.OPSLIMIT_MODERATE, _ARGON.MEMLIMIT_MODERATE)
KDF_FAST = KdfParams(_ARGON.OPSLIMIT_MIN, _ARGON.MEMLIMIT_MIN)  # devnet only
KDF_PRESETS = {"moderate": KDF_MODERATE, "fast": KDF_FAST}
# A file asking for more than this is refused rather than letting it hog the machine.
MAX_OPSLIMIT = _ARGON.OPSLIMIT_SENSITIVE
MAX_MEMLIMIT = _ARGON.MEMLIMIT_SENSITIVE

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEX_RE = re.compile(r"(?:[0-9a-f]{2})*")


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise InputError(
            f"invalid wallet name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    return name


def _derive(password: str, salt: bytes, kdf: KdfParams) -> bytes:
    return _ARGON.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        password.encode("utf-8"),
        salt,
        opslimit=kdf.opslimit,
        memlimit=kdf.memlimit,
    )


def _header_digest(doc: dict[str, Any]) -> bytes:
    """What the sealed seed is bound to: everything in the file except nonce and ciphertext."""
    header = {**doc, "cipher": {"name": doc["cipher"]["name"]}}
    return sha256(canonical(header))


def seal(keypair: Keypair, password: str, kdf: KdfParams = KDF_MODERATE) -> dict[str, Any]:
    salt = nacl.utils.random(_ARGON.SALTBYTES)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    doc: dict[str, Any] = {
        "version": VERSION,
        "address": keypair.address,
        "kdf": {
            "name": "argon2id",
            "opslimit": kdf.opslimit,
            "memlimit": kdf.memlimit,
            "salt": salt.hex(),
        },
        "cipher": {"name": "xsalsa20poly1305"},
    }
    box = nacl.secret.SecretBox(_derive(password, salt, kdf))
    sealed = box.encrypt(keypair.seed() + _header_digest(doc), nonce).ciphertext
    doc["cipher"].update(nonce=nonce.hex(), ciphertext=sealed.hex())
    return doc


def _hex(obj: dict[str, Any], key: str, size: int | None) -> bytes:
    value = obj.get(key)
    if not isinstance(value, str):
        raise KeystoreCorrupt(f"keystore field {key!r} is missing")
    if not _HEX_RE.fullmatch(value):
        raise KeystoreCorrupt(f"keystore field {key!r} is not lowercase hex")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise KeystoreCorrupt(f"keystore field {key!r} has the wrong length")
    return raw


def unseal(doc: object, password: str) -> Keypair:
    """Open a keystore document; WrongPassword, KeystoreCorrupt on any mismatch."""
    if not isinstance(doc, dict) or set(doc) != {"version", "address", "kdf", "cipher"}:
        raise KeystoreCorrupt("not a DeepNode keystore")
    if doc["version"] != VERSION:
        raise KeystoreCorrupt(f"unsupported keystore version {doc['version']!r}")
    kdf, cipher, address = doc["kdf"], doc["cipher"], doc["address"]
    if not isinstance(kdf, dict) or set(kdf) != {"name", "opslimit", "memlimit", "salt"}:
        raise KeystoreCorrupt("keystore KDF section is malformed")
    if not isinstance(cipher, dict) or set(cipher) != {"name", "nonce", "ciphertext"}:
        raise KeystoreCorrupt("keystore cipher section is malformed")
    if kdf["name"] != "argon2id" or cipher["name"] != "xsalsa20poly1305":
        raise KeystoreCorrupt("keystore names an unknown KDF or cipher")
    ops, mem = kdf["opslimit"], kdf["memlimit"]
    if not (isinstance(ops, int) and isinstance(mem, int)) or isinstance(ops, bool):
        raise KeystoreCorrupt("keystore KDF parameters are not integers")
    if not (
        _ARGON.OPSLIMIT_MIN <= ops <= MAX_OPSLIMIT and _ARGON.MEMLIMIT_MIN <= mem <= MAX_MEMLIMIT
    ):
        raise KeystoreCorrupt(
            f"keystore KDF parameters out of range (opslimit {ops}, memlimit {mem}); "
            f"at most {MAX_OPSLIMIT} and {MAX_MEMLIMIT} are accepted"
        )
    if not isinstance(address, str) or not is_address(address):
        raise KeystoreCorrupt("keystore address is not a valid address")
    salt = _hex(kdf, "salt", _ARGON.SALTBYTES)
    nonce = _hex(cipher, "nonce", nacl.secret.SecretBox.NONCE_SIZE)
    ciphertext = _hex(cipher, "ciphertext", 64 + nacl.secret.SecretBox.MACBYTES)
    box = nacl.secret.SecretBox(_derive(password, salt, KdfParams(ops, mem)))
    try:
        plain = box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        # Salt, nonce, parameters and ciphertext all feed the check, so a tampered file and a
        # wrong password look the same here; say both.
        raise WrongPassword("wrong password (or the keystore file was altered)") from None
    seed, digest = plain[:32], plain[32:]
    if digest != _header_digest(doc):
        raise KeystoreCorrupt("keystore header was altered after it was sealed")
    keypair = Keypair.from_seed(seed)
    if keypair.address != address:
        raise KeystoreCorrupt("keystore address does not match its key: the file was altered")
    return keypair


class Keystore:
    """The wallets in one folder (`$DN_HOME/wallets` unless told otherwise)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder if folder is not None else wallets_dir()

    def path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.json"

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def save(
        self, name: str, keypair: Keypair, password: str, kdf: KdfParams = KDF_MODERATE
    ) -> Path:
        path = self.path(name)
        if path.exists():
            raise WalletExists(f"wallet {name!r} exists already; pick another name")
        private_dir(self.folder)
        doc = seal(keypair, password, kdf)
        atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), 0o600)
        return path

    def create(self, name: str, password: str, kdf: KdfParams = KDF_MODERATE) -> Keypair:
        keypair = Keypair.generate()
        self.save(name, keypair, password, kdf)
        return keypair

    def _read(self, name: str) -> dict[str, Any]:
        path = self.path(name)
        if not path.exists():
            raise WalletNotFound(f"no wallet named {name!r} in {self.folder}")
        for item, fix in ((path, "600"), (self.folder, "700")):
            mode = stat.S_IMODE(item.stat().st_mode)
            if mode & 0o077:
                raise KeystoreInsecure(
                    f"{item} is open to other users (mode {mode:o}); run 'chmod {fix} {item}'"
                )
        try:
            doc = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            raise KeystoreCorrupt(f"{path} is not valid JSON: the file is damaged") from None
        if not isinstance(doc, dict):
            raise KeystoreCorrupt(f"{path} is not a DeepNode keystore")
        return doc

    def address(self, name: str) -> str:
        """The wallet's address, read without the password (it is stored in the clear)."""
        address = self._read(name).get("address")
        if not isinstance(address, str) or not is_address(address):
            raise KeystoreCorrupt(f"wallet {name!r} has no valid address")
        return address

    def load(self, name: str, password: str) -> Keypair:
        return unseal(self._read(name), password)

    def unlock(self, name: str, password: Callable[[], str]) -> Keypair:
        """Open wallet `name`, asking `password()` (a prompt, a file, …) only once the wallet is
        known to be there, sound and private: a missing, damaged or world-readable wallet fails
        before anyone is asked for a password. Every command that signs opens its wallet here."""
        self.address(name)
        return self.load(name, password())

    def resolve(self, name_or_address: str) -> str:
        """A `dn1…` address as it is (checked: a mistyped one is an error, never a guess), or
        the address of the wallet with that name."""
        if name_or_address.lower().startswith("dn1"):
            pubkey_from_address(name_or_address)
            return name_or_address
        return self.address(name_or_address)


@dataclass(frozen=True)
class LockedWallet:
    """Wallet `name` in `store`, not yet opened: `address()` reads it without the password
    (failing for a missing, damaged or world-readable wallet), `unlock()` asks `password()` and
    opens it (`Keystore.unlock`). A flow that checks other things before it signs takes one of
    these, so the password is asked for only once those checks have passed."""

    store: Keystore
    name: str
    password: Callable[[], str]

    def address(self) -> str:
        return self.store.address(self.name)

    def unlock(self) -> Keypair:
        return self.store.unlock(self.name, self.password)
