"""Keys and password-sealed keystore files (DESIGN.md section 3)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import dn.wallet.keystore as keystore_mod
from dn.errors import (
    InputError,
    KeystoreCorrupt,
    KeystoreInsecure,
    WalletError,
    WalletExists,
    WalletNotFound,
    WrongPassword,
)
from dn.wallet.keys import Keypair, verify
from dn.wallet.keystore import (
    KDF_FAST,
    KDF_MODERATE,
    MAX_MEMLIMIT,
    MAX_OPSLIMIT,
    Keystore,
    LockedWallet,
    check_name,
)

PW = "correct horse battery staple"


@pytest.fixture
def ks(tmp_path: Path) -> Keystore:
    return Keystore(tmp_path / "wallets")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _edit(path: Path, change: object) -> None:
    """Rewrite the keystore JSON after `change(doc)`, keeping the file's 0600 mode."""
    doc = json.loads(path.read_text())
    change(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    assert _mode(path) == 0o600


def _no_kdf(*args: object, **kwargs: object) -> bytes:
    raise AssertionError("the KDF ran on a keystore that should have been refused first")


# --- keys -----------------------------------------------------------------------------------


def test_keypair_signs_and_verifies() -> None:
    kp = Keypair.generate()
    sig = kp.sign(b"hello")
    assert len(sig) == 64
    assert verify(kp.address, b"hello", sig)


def test_verify_is_false_for_another_key_or_a_changed_message() -> None:
    kp, other = Keypair.generate(), Keypair.generate()
    sig = kp.sign(b"pay 5 DN")
    assert not verify(other.address, b"pay 5 DN", sig)
    assert not verify(kp.address, b"pay 6 DN", sig)
    assert not verify(kp.address, b"pay 5 DN ", sig)
    assert not verify(kp.address, b"pay 5 DN", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify(kp.address, b"pay 5 DN", sig[:63])
    assert not verify(kp.address, b"pay 5 DN", b"")


def test_keypair_from_seed_is_deterministic() -> None:
    seed = bytes(range(32))
    a, b = Keypair.from_seed(seed), Keypair.from_seed(seed)
    assert a.address == b.address and a.pubkey == b.pubkey
    assert a.seed() == seed
    assert Keypair.from_seed(bytes(32)).address != a.address


def test_keypair_repr_and_str_never_show_the_seed() -> None:
    kp = Keypair.generate()
    secret = kp.seed().hex()
    for shown in (repr(kp), str(kp), f"{kp}", f"{kp!r}", repr([kp]), repr({"k": kp})):
        assert secret not in shown
        assert secret.upper() not in shown
        assert kp.address in shown


# --- create and load ------------------------------------------------------------------------


def test_create_then_load_gives_the_same_key(ks: Keystore) -> None:
    kp = ks.create("alice", PW, KDF_FAST)
    loaded = ks.load("alice", PW)
    assert loaded.seed() == kp.seed()
    assert loaded.address == kp.address == ks.address("alice")
    assert ks.names() == ["alice"]
    assert ks.exists("alice")


def test_save_an_existing_key(ks: Keystore) -> None:
    kp = Keypair.from_seed(bytes(range(32)))
    path = ks.save("imported", kp, PW, KDF_FAST)
    assert path == ks.path("imported")
    assert ks.load("imported", PW).seed() == kp.seed()


def test_the_file_holds_no_secret_in_the_clear(ks: Keystore) -> None:
    kp = ks.create("alice", PW, KDF_FAST)
    text = ks.path("alice").read_text()
    assert kp.seed().hex() not in text
    assert PW not in text
    doc = json.loads(text)
    assert doc["version"] == 1
    assert doc["address"] == kp.address
    assert doc["kdf"]["name"] == "argon2id"
    assert doc["cipher"]["name"] == "xsalsa20poly1305"


def test_every_file_gets_a_fresh_salt_and_nonce(ks: Keystore) -> None:
    kp = Keypair.generate()
    ks.save("one", kp, PW, KDF_FAST)
    ks.save("two", kp, PW, KDF_FAST)
    ks.create("three", PW, KDF_FAST)
    docs = [json.loads(ks.path(n).read_text()) for n in ("one", "two", "three")]
    salts = {d["kdf"]["salt"] for d in docs}
    nonces = {d["cipher"]["nonce"] for d in docs}
    ciphertexts = {d["cipher"]["ciphertext"] for d in docs}
    assert len(salts) == len(nonces) == len(ciphertexts) == 3
    assert all(len(bytes.fromhex(s)) == 16 for s in salts)
    assert all(len(bytes.fromhex(n)) == 24 for n in nonces)


def test_default_kdf_is_moderate() -> None:
    # The default Keystore() lives in $DN_HOME/wallets (the autouse fixture's temp folder).
    store = Keystore()
    kp = store.create("real", PW)
    doc = json.loads(store.path("real").read_text())
    assert (doc["kdf"]["opslimit"], doc["kdf"]["memlimit"]) == (
        KDF_MODERATE.opslimit,
        KDF_MODERATE.memlimit,
    )
    assert KDF_MODERATE.memlimit > KDF_FAST.memlimit
    assert store.load("real", PW).seed() == kp.seed()


def test_default_folder_follows_dn_home(dn_home: Path) -> None:
    assert Keystore().folder == dn_home / "wallets"


def test_file_is_0600_in_a_0700_folder_even_with_a_lax_umask(ks: Keystore) -> None:
    old = os.umask(0)
    try:
        ks.create("alice", PW, KDF_FAST)
    finally:
        os.umask(old)
    assert _mode(ks.path("alice")) == 0o600
    assert _mode(ks.folder) == 0o700
    assert [p.name for p in ks.folder.iterdir()] == ["alice.json"]  # no temp file left


def test_an_existing_lax_folder_is_tightened(ks: Keystore) -> None:
    ks.folder.mkdir(mode=0o755)
    os.chmod(ks.folder, 0o755)
    ks.create("alice", PW, KDF_FAST)
    assert _mode(ks.folder) == 0o700


def test_wrong_password(ks: Keystore) -> None:
    ks.create("alice", PW, KDF_FAST)
    for wrong in ("", PW + " ", PW.upper(), "x"):
        with pytest.raises(WrongPassword) as exc:
            ks.load("alice", wrong)
        assert exc.value.reason == "wrong-password"


def test_second_create_refuses_and_keeps_the_first(ks: Keystore) -> None:
    kp = ks.create("alice", PW, KDF_FAST)
    before = ks.path("alice").read_bytes()
    with pytest.raises(WalletExists):
        ks.create("alice", "another password", KDF_FAST)
    assert ks.path("alice").read_bytes() == before
    assert ks.load("alice", PW).seed() == kp.seed()


def test_missing_wallet(ks: Keystore) -> None:
    with pytest.raises(WalletNotFound) as exc:
        ks.load("nobody", PW)
    assert exc.value.http_status == 404
    with pytest.raises(WalletNotFound):
        ks.address("nobody")
    assert not ks.exists("nobody")
    assert ks.names() == []


@pytest.mark.parametrize(
    "name", ["", ".hidden", "a/b", "../escape", "a b", "x" * 65, "-dash", "ünï", "a\nb", "/abs"]
)
def test_invalid_names_are_refused(ks: Keystore, tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="invalid wallet name"):
        check_name(name)
    with pytest.raises(InputError):
        ks.create(name, PW, KDF_FAST)
    with pytest.raises(InputError):
        ks.load(name, PW)
    assert not ks.folder.exists() or list(ks.folder.iterdir()) == []
    assert not (tmp_path / "escape.json").exists()


def test_a_trailing_newline_is_not_a_valid_name() -> None:
    with pytest.raises(InputError):
        check_name("alice\n")


@pytest.mark.parametrize("name", ["a", "Alice_2", "node-1.backup", "x" * 64])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


# --- refused files --------------------------------------------------------------------------


def test_a_keystore_readable_by_others_is_refused(ks: Keystore) -> None:
    ks.create("alice", PW, KDF_FAST)
    for mode in (0o644, 0o640, 0o604, 0o660):
        os.chmod(ks.path("alice"), mode)
        with pytest.raises(KeystoreInsecure, match="chmod 600"):
            ks.load("alice", PW)
    os.chmod(ks.path("alice"), 0o600)
    assert ks.load("alice", PW)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("opslimit", MAX_OPSLIMIT + 1),
        ("opslimit", 2**40),
        ("memlimit", MAX_MEMLIMIT + 1),
        ("memlimit", 2**62),
        ("opslimit", 0),
        ("memlimit", 1024),
    ],
)
def test_kdf_parameters_out_of_range_fail_fast(
    ks: Keystore, monkeypatch: pytest.MonkeyPatch, field: str, value: int
) -> None:
    ks.create("alice", PW, KDF_FAST)
    _edit(ks.path("alice"), lambda doc: doc["kdf"].__setitem__(field, value))
    monkeypatch.setattr(keystore_mod, "_derive", _no_kdf)
    with pytest.raises(KeystoreCorrupt, match="out of range"):
        ks.load("alice", PW)


@pytest.mark.parametrize("value", [1.0, "1", True, None, [1]])
def test_kdf_parameters_must_be_integers(
    ks: Keystore, monkeypatch: pytest.MonkeyPatch, value: object
) -> None:
    ks.create("alice", PW, KDF_FAST)
    _edit(ks.path("alice"), lambda doc: doc["kdf"].__setitem__("opslimit", value))
    monkeypatch.setattr(keystore_mod, "_derive", _no_kdf)
    with pytest.raises(KeystoreCorrupt):
        ks.load("alice", PW)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.__setitem__("version", 2),
        lambda d: d.__setitem__("extra", 1),
        lambda d: d.pop("address"),
        lambda d: d.__setitem__("address", "dn1notanaddress"),
        lambda d: d["kdf"].__setitem__("name", "scrypt"),
        lambda d: d["cipher"].__setitem__("name", "aes"),
        lambda d: d["kdf"].__setitem__("salt", "00" * 15),
        lambda d: d["kdf"].__setitem__("salt", "zz" * 16),
        lambda d: d["cipher"].__setitem__("nonce", "00" * 23),
        lambda d: d["cipher"].__setitem__("ciphertext", d["cipher"]["ciphertext"][:-2]),
        lambda d: d["cipher"].pop("nonce"),
        lambda d: d.__setitem__("kdf", "argon2id"),
    ],
)
def test_malformed_keystores_are_corrupt(ks: Keystore, change: object) -> None:
    ks.create("alice", PW, KDF_FAST)
    _edit(ks.path("alice"), change)
    with pytest.raises(KeystoreCorrupt):
        ks.load("alice", PW)


def test_an_address_swapped_for_another_valid_one_is_caught(ks: Keystore) -> None:
    ks.create("alice", PW, KDF_FAST)
    other = Keypair.generate().address
    _edit(ks.path("alice"), lambda doc: doc.__setitem__("address", other))
    with pytest.raises(KeystoreCorrupt, match="altered"):
        ks.load("alice", PW)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"\xff\xfe", b"null", b'"x"'])
def test_garbage_files_are_corrupt(ks: Keystore, content: bytes) -> None:
    ks.create("alice", PW, KDF_FAST)
    ks.path("alice").write_bytes(content)
    with pytest.raises(KeystoreCorrupt):
        ks.load("alice", PW)


def test_errors_never_carry_the_seed(ks: Keystore) -> None:
    kp = ks.create("alice", PW, KDF_FAST)
    secret = kp.seed().hex()
    with pytest.raises(WrongPassword) as exc:
        ks.load("alice", "nope")
    assert secret not in str(exc.value) and PW not in str(exc.value)
    assert secret not in json.dumps(exc.value.to_json())


# --- tampering, one byte at a time ----------------------------------------------------------

WHITESPACE = b" \t\r\n"


@pytest.fixture(scope="module")
def flip_outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[bytes, list[tuple[int, int, object]]]:
    """Flip every byte of one keystore file in several ways and record what `load` did.

    Each outcome is a WalletError instance or the Keypair that opened.
    """
    ks = Keystore(tmp_path_factory.mktemp("flips") / "wallets")
    kp = ks.create("w", PW, KDF_FAST)
    path = ks.path("w")
    original = path.read_bytes()
    outcomes: list[tuple[int, int, object]] = []
    for pos, byte in enumerate(original):
        variants = {byte ^ 0x01, byte ^ 0x20}
        if byte in WHITESPACE:
            variants |= {b for b in WHITESPACE if b != byte}
        for new in sorted(variants):
            data = bytearray(original)
            data[pos] = new
            path.write_bytes(bytes(data))
            try:
                outcome: object = ks.load("w", PW)
            except WalletError as exc:
                outcome = exc
            outcomes.append((pos, new, outcome))
    path.write_bytes(original)
    assert ks.load("w", PW).seed() == kp.seed()
    return original, [(p, n, o if isinstance(o, WalletError) else o.seed()) for p, n, o in outcomes]


def test_byte_flips_never_open_a_different_key(
    flip_outcomes: tuple[bytes, list[tuple[int, int, object]]],
) -> None:
    original, outcomes = flip_outcomes
    doc = json.loads(original)
    assert len({pos for pos, _, _ in outcomes}) == len(original)
    opened = [(pos, new, o) for pos, new, o in outcomes if not isinstance(o, WalletError)]
    refused = [o for _, _, o in outcomes if isinstance(o, WalletError)]
    assert all(isinstance(o, (WrongPassword, KeystoreCorrupt)) for o in refused)
    # A flip that still opens must give back exactly the key that was sealed.
    seeds = {o for _, _, o in opened}
    assert len(seeds) <= 1
    if seeds:
        kp = Keypair.from_seed(seeds.pop())  # type: ignore[arg-type]
        assert kp.address == doc["address"]
    # Whitespace-for-whitespace swaps are insignificant JSON and must still open.
    ws_swaps = [(p, n) for p, n, _ in opened if original[p] in WHITESPACE and n in WHITESPACE]
    assert len(ws_swaps) == sum(
        1 for p, n, _ in outcomes if original[p] in WHITESPACE and n in WHITESPACE
    )
    assert len(refused) > len(original)


def test_byte_flips_open_only_on_insignificant_whitespace(
    flip_outcomes: tuple[bytes, list[tuple[int, int, object]]],
) -> None:
    original, outcomes = flip_outcomes
    opened = [
        (pos, chr(original[pos]), chr(new))
        for pos, new, o in outcomes
        if not isinstance(o, WalletError)
    ]
    assert all(original[pos] in WHITESPACE for pos, _, _ in opened), opened


def test_memlimit_changed_by_a_few_bytes_is_refused(ks: Keystore) -> None:
    ks.create("alice", PW, KDF_FAST)
    _edit(ks.path("alice"), lambda doc: doc["kdf"].__setitem__("memlimit", KDF_FAST.memlimit + 1))
    with pytest.raises((KeystoreCorrupt, WrongPassword)):
        ks.load("alice", PW)


def test_uppercased_hex_is_refused(ks: Keystore) -> None:
    ks.create("alice", PW, KDF_FAST)
    _edit(ks.path("alice"), lambda doc: doc["kdf"].__setitem__("salt", doc["kdf"]["salt"].upper()))
    with pytest.raises(KeystoreCorrupt):
        ks.load("alice", PW)


def test_a_wallet_folder_open_to_others_is_refused(ks: Keystore) -> None:
    ks.create("alice", PW, KDF_FAST)
    os.chmod(ks.folder, 0o755)
    with pytest.raises(KeystoreInsecure, match="chmod 700"):
        ks.load("alice", PW)


# --- opening a wallet to sign ---------------------------------------------------------------


class Asked:
    """A password source that counts how often it was asked."""

    def __init__(self, password: str = PW) -> None:
        self.password = password
        self.times = 0

    def __call__(self) -> str:
        self.times += 1
        return self.password


def test_unlock_asks_for_the_password_only_for_a_sound_private_wallet(ks: Keystore) -> None:
    made = ks.create("alice", PW, KDF_FAST)
    asked = Asked()
    with pytest.raises(WalletNotFound):
        ks.unlock("bob", asked)
    ks.path("bob").write_text("not json")
    os.chmod(ks.path("bob"), 0o600)
    with pytest.raises(KeystoreCorrupt):
        ks.unlock("bob", asked)
    os.chmod(ks.path("alice"), 0o644)
    with pytest.raises(KeystoreInsecure):
        ks.unlock("alice", asked)
    assert asked.times == 0
    os.chmod(ks.path("alice"), 0o600)
    assert ks.unlock("alice", asked).address == made.address and asked.times == 1
    with pytest.raises(WrongPassword):
        ks.unlock("alice", Asked("not it"))


def test_a_locked_wallet_reads_its_address_without_the_password(ks: Keystore) -> None:
    made = ks.create("alice", PW, KDF_FAST)
    asked = Asked()
    wallet = LockedWallet(ks, "alice", asked)
    assert wallet.address() == made.address and asked.times == 0
    assert wallet.unlock().seed() == made.seed() and asked.times == 1
    with pytest.raises(WalletNotFound):
        LockedWallet(ks, "nobody", asked).address()


def test_resolve_takes_a_checked_address_or_a_wallet_name(ks: Keystore) -> None:
    made = ks.create("alice", PW, KDF_FAST)
    other = Keypair.generate().address
    assert ks.resolve(other) == other
    assert ks.resolve("alice") == made.address
    typo = other[:-1] + ("q" if other[-1] != "q" else "p")
    with pytest.raises(InputError):  # a checksum failure, never a wallet lookup
        ks.resolve(typo)
    with pytest.raises(WalletNotFound):
        ks.resolve("carol")
