"""`dn wallet …` end to end through the CLI: keystores on disk, passwords, exports and imports."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from dn.encoding import is_address
from dn.errors import DNError, WrongPassword
from dn.wallet.keystore import KDF_MODERATE, Keystore
from tests.cli.conftest import PASSWORD
from tests.cli.helpers import dn, dn_json, said

FAST = ("--kdf", "fast")


def create(name: str, password_file: Path) -> str:
    """Create a devnet wallet through the CLI and return its address."""
    return str(dn_json("wallet", "create", name, *FAST, *pw(password_file))["address"])


def pw(password_file: Path) -> tuple[str, Path]:
    return ("--password-file", password_file)


def export_secret(
    password_file: Path, name: str = "alice", *, as_json: bool = False, **kwargs: Any
) -> Result:
    """`dn [--json] wallet export NAME --show-secret --yes` with the password from a file."""
    args = ("--json",) * as_json + ("wallet", "export", name, "--show-secret", "--yes")
    return dn(*args, *pw(password_file), **kwargs)


def keystore(dn_home: Path) -> Keystore:
    return Keystore(dn_home / "wallets")


def real_seed(dn_home: Path, name: str, password: str = PASSWORD) -> str:
    """The wallet's secret, read through the library (what must never leak into output)."""
    return keystore(dn_home).load(name, password).seed().hex()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- create, show, list --------------------------------------------------------------------


def test_create_then_show_prints_name_and_address(dn_home, password_file):
    result = dn("wallet", "create", "alice", *FAST, *pw(password_file))
    created_address = said(result).split()[-1]
    shown = dn_json("wallet", "show", "alice")
    assert shown["name"] == "alice"
    assert shown["address"] == created_address
    assert shown["address"].startswith("dn1") and is_address(shown["address"])
    path = Path(shown["path"])
    assert path == dn_home / "wallets" / "alice.json"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert shown["address"] in dn("wallet", "show", "alice").stdout
    assert keystore(dn_home).load("alice", PASSWORD).address == shown["address"]
    assert real_seed(dn_home, "alice") not in result.output


def test_list_shows_every_wallet_human_and_json(dn_home, password_file):
    assert dn_json("wallet", "list") == []
    assert "no wallets yet" in said(dn("wallet", "list"))
    bob = create("bob", password_file)
    alice = create("alice", password_file)
    assert dn_json("wallet", "list") == [
        {"name": "alice", "address": alice},
        {"name": "bob", "address": bob},
    ]
    table = dn("wallet", "list", env={"COLUMNS": "200"}).stdout
    for text in ("alice", "bob", alice, bob):
        assert text in table
    for name in ("alice", "bob"):
        assert real_seed(dn_home, name) not in table


def test_list_reports_a_damaged_keystore_and_keeps_going(dn_home, password_file):
    alice = create("alice", password_file)
    broken = dn_home / "wallets" / "broken.json"
    broken.write_text("{not json")
    broken.chmod(0o600)
    rows = dn_json("wallet", "list")
    assert rows[0] == {"name": "alice", "address": alice}
    assert rows[1]["name"] == "broken" and rows[1]["address"] is None
    assert "damaged" in rows[1]["error"]


def test_create_twice_is_refused_and_keeps_the_first_wallet(dn_home, password_file, tmp_path):
    first = create("alice", password_file)
    path = dn_home / "wallets" / "alice.json"
    before = path.read_bytes()
    other = tmp_path / "other-password"
    other.write_text("something else\n")
    result = dn("wallet", "create", "alice", *FAST, *pw(other), code=3)
    assert "wallet 'alice' exists already" in said(result)
    assert path.read_bytes() == before
    # the same through import, which must not overwrite either
    secret = tmp_path / "secret.hex"
    secret.write_text("11" * 32)
    result = dn("wallet", "import", "alice", "--secret-file", secret, *FAST, *pw(other), code=3)
    assert "exists already" in said(result)
    assert path.read_bytes() == before
    assert keystore(dn_home).load("alice", PASSWORD).address == first


def test_unknown_wallet_is_a_wallet_error(password_file):
    for args in (
        ["show", "ghost"],
        ["export", "ghost"],
        ["export", "ghost", "--show-secret", "--yes", "--password-file", str(password_file)],
    ):
        assert "no wallet named 'ghost'" in said(dn("wallet", *args, code=3))


# --- passwords -----------------------------------------------------------------------------


def test_wrong_password_on_export_is_refused_without_a_traceback(dn_home, password_file, tmp_path):
    create("alice", password_file)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    result = dn(
        "wallet", "export", "alice", "--show-secret", "--yes", "--password-file", wrong, code=3
    )
    assert "wrong password" in said(result)
    assert real_seed(dn_home, "alice") not in result.output


def test_missing_password_file_is_an_input_error(dn_home, tmp_path):
    missing = tmp_path / "no-such-file"
    result = dn("wallet", "create", "alice", *FAST, "--password-file", missing, code=2)
    assert "cannot read password file" in said(result)
    assert str(missing) in said(result)
    assert not (dn_home / "wallets" / "alice.json").exists()


@pytest.mark.parametrize("source", ["empty file", "newline only", "empty DN_PASSWORD"])
def test_empty_password_is_refused(dn_home, tmp_path, source):
    args: list[str | Path] = ["wallet", "create", "alice", *FAST]
    env = None
    if source == "empty DN_PASSWORD":
        env = {"DN_PASSWORD": ""}
    else:
        empty = tmp_path / "empty"
        empty.write_text("" if source == "empty file" else "\n")
        args += ["--password-file", empty]
    result = dn(*args, env=env, code=2)
    assert "the password is empty" in said(result)
    assert not (dn_home / "wallets" / "alice.json").exists()


def test_password_from_dn_password_env(dn_home):
    env = {"DN_PASSWORD": "from the environment"}
    address = dn_json("wallet", "create", "alice", *FAST, env=env)["address"]
    shown = dn_json("wallet", "export", "alice", "--show-secret", "--yes", env=env)
    assert shown["address"] == address
    assert shown["secret"] == real_seed(dn_home, "alice", "from the environment")


def test_password_prompt_asks_for_confirmation(dn_home):
    result = dn("wallet", "create", "alice", *FAST, input="typed secret\ntyped secret\n")
    assert "Password" in result.output
    assert "typed secret" not in result.output  # hidden input is not echoed
    assert keystore(dn_home).load("alice", "typed secret").address in result.output


def test_password_prompt_repeats_when_the_confirmation_differs(dn_home):
    result = dn("wallet", "create", "alice", *FAST, input="first\nsecond\nthird\nthird\n")
    assert "do not match" in said(result)
    address = keystore(dn_home).load("alice", "third").address
    assert address in result.output
    for typo in ("first", "second"):
        with pytest.raises(WrongPassword):
            keystore(dn_home).load("alice", typo)


def test_default_kdf_is_moderate(dn_home, password_file):
    dn("wallet", "create", "alice", *pw(password_file))
    kdf = json.loads((dn_home / "wallets" / "alice.json").read_text())["kdf"]
    assert (kdf["opslimit"], kdf["memlimit"]) == (KDF_MODERATE.opslimit, KDF_MODERATE.memlimit)
    result = dn("wallet", "create", "bob", "--kdf", "bogus", *pw(password_file), code=2)
    assert "--kdf must be one of" in said(result)


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad name", "../escape", ".hidden", "a/b", "x" * 65, "", "ö"])
def test_invalid_wallet_name_is_refused(dn_home, password_file, name):
    result = dn("wallet", "create", name, *FAST, *pw(password_file), code=2)
    assert "invalid wallet name" in said(result)
    assert not list(dn_home.rglob("*.json"))
    assert "invalid wallet name" in said(dn("wallet", "show", name, code=2))


# --- keystore files that were changed on disk ---------------------------------------------


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604])
def test_keystore_readable_by_others_is_refused(dn_home, password_file, bad_mode):
    create("alice", password_file)
    path = dn_home / "wallets" / "alice.json"
    seed = real_seed(dn_home, "alice")
    path.chmod(bad_mode)
    for args in (
        ["wallet", "show", "alice"],
        ["wallet", "export", "alice"],
        ["wallet", "export", "alice", "--show-secret", "--yes", *pw(password_file)],
    ):
        result = dn(*args, code=3)
        assert f"chmod 600 {path}" in said(result)
        assert seed not in result.output
    path.chmod(0o600)
    dn("wallet", "show", "alice")


def test_error_message_keeps_a_long_path_whole_at_80_columns(tmp_path, password_file):
    home = tmp_path / ("a-long-folder-name-" * 5)  # the path alone is wider than 80 columns
    dn("--home", home, "wallet", "create", "alice", *FAST, *pw(password_file))
    path = home / "wallets" / "alice.json"
    path.chmod(0o644)
    result = dn("--home", home, "wallet", "show", "alice", env={"COLUMNS": "80"}, code=3)
    assert f"chmod 600 {path}" in said(result)


FLIPS = {"bit0": 0x01, "bit5-case": 0x20}


def test_keystore_with_a_flipped_bit_anywhere_is_refused(dn_home, password_file):
    """Every single-bit change anywhere in the file is caught: a wallet error (exit 3) whose
    message holds no secret. Every byte through the calls `wallet export` makes; a sample of
    them through the command itself (a CLI call costs ~100 times the library's).

    Bit 5 turns hex letters upper-case; changes like that, or a memlimit moved within the same
    KiB (which derives the same Argon2 key), must fail too: a file has one valid spelling.
    """
    create("alice", password_file)
    path = dn_home / "wallets" / "alice.json"
    seed = real_seed(dn_home, "alice")
    original = path.read_bytes()
    sample = {0, len(original) - 1, *range(0, len(original), 17)}
    accepted = []
    for name, bit in FLIPS.items():
        for index in range(len(original)):
            damaged = bytearray(original)
            damaged[index] ^= bit
            path.write_bytes(bytes(damaged))
            store = keystore(dn_home)
            try:
                store.address("alice")
                store.load("alice", PASSWORD)
                accepted.append((name, index, "library", "opened"))
            except DNError as refused:
                if refused.exit_code != 3 or seed in str(refused):
                    accepted.append((name, index, "library", refused.exit_code))
            if index in sample:
                result = export_secret(password_file, code=None)
                if result.exit_code != 3 or seed in result.output:
                    accepted.append((name, index, "dn wallet export", result.exit_code))
    assert accepted == []
    path.write_bytes(original)
    assert json.loads(export_secret(password_file, as_json=True).stdout)["secret"] == seed


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("ciphertext", "wrong password (or the keystore file was altered)"),
        ("salt", "wrong password (or the keystore file was altered)"),
        ("nonce", "wrong password (or the keystore file was altered)"),
        ("address", "wallet 'alice' has no valid address"),
    ],
)
def test_keystore_with_a_changed_field_is_refused(dn_home, password_file, field, message):
    create("alice", password_file)
    path = dn_home / "wallets" / "alice.json"
    seed = real_seed(dn_home, "alice")
    doc = json.loads(path.read_text())
    section = {"ciphertext": doc["cipher"], "nonce": doc["cipher"], "salt": doc["kdf"]}.get(
        field, doc
    )
    value = section[field]
    section[field] = value[:10] + ("0" if value[10] != "0" else "2") + value[11:]
    path.write_text(json.dumps(doc))
    result = export_secret(password_file, code=3)
    assert message in said(result)
    assert seed not in result.output


@pytest.mark.parametrize("edit", ["memlimit+1", "memlimit+1023", "uppercase ciphertext"])
def test_edited_but_equivalent_keystore_is_refused(dn_home, password_file, edit):
    """Edits that leave the derived key unchanged (libsodium counts memory in whole KiB, and hex
    parsing ignores case) still make a different file, which must not open."""
    create("alice", password_file)
    path = dn_home / "wallets" / "alice.json"
    doc = json.loads(path.read_text())
    if edit.startswith("memlimit"):
        doc["kdf"]["memlimit"] += int(edit.split("+")[1])
    else:
        doc["cipher"]["ciphertext"] = doc["cipher"]["ciphertext"].upper()
    path.write_text(json.dumps(doc))
    export_secret(password_file, code=3)


# --- export and import ---------------------------------------------------------------------


def test_export_prints_the_sealed_keystore_and_no_secret(dn_home, password_file):
    create("alice", password_file)
    seed = real_seed(dn_home, "alice")
    on_disk = json.loads((dn_home / "wallets" / "alice.json").read_text())
    for args in (["wallet", "export", "alice"], ["--json", "wallet", "export", "alice"]):
        result = dn(*args)  # no password needed, and none asked for (no input to give)
        assert json.loads(result.stdout) == on_disk
        assert seed not in result.output
        assert PASSWORD not in result.output


@pytest.mark.parametrize("answer", ["n\n", "\n", ""])
def test_export_secret_without_yes_asks_and_a_no_prints_nothing(dn_home, password_file, answer):
    create("alice", password_file)
    seed = real_seed(dn_home, "alice")
    result = dn(
        "wallet", "export", "alice", "--show-secret", *pw(password_file), input=answer, code=None
    )
    assert "secret key" in said(result)
    assert seed not in result.output


def test_export_secret_after_confirming_prints_the_seed(dn_home, password_file):
    address = create("alice", password_file)
    seed = real_seed(dn_home, "alice")
    result = dn("wallet", "export", "alice", "--show-secret", *pw(password_file), input="y\n")
    assert result.stdout.strip().splitlines()[-1] == seed
    result = export_secret(password_file)
    assert result.stdout.strip() == seed
    data = json.loads(export_secret(password_file, as_json=True).stdout)
    assert data == {"name": "alice", "address": address, "secret": seed}


def test_import_from_secret_file_gives_the_same_address(dn_home, password_file, tmp_path):
    address = create("alice", password_file)
    secret = tmp_path / "secret.hex"
    secret.write_text(real_seed(dn_home, "alice") + "\n")
    imported = dn_json(
        "wallet", "import", "copy", "--secret-file", secret, *FAST, *pw(password_file)
    )
    assert imported["address"] == address
    assert dn_json("wallet", "show", "copy")["address"] == address
    assert mode(dn_home / "wallets" / "copy.json") == 0o600
    assert real_seed(dn_home, "copy") == real_seed(dn_home, "alice")
    # a fresh salt and nonce: the two files seal the same key differently
    assert (dn_home / "wallets" / "copy.json").read_text() != (
        dn_home / "wallets" / "alice.json"
    ).read_text()


@pytest.mark.parametrize("content", ["", "zz" * 32, "ab" * 31, "ab" * 33, "not hex at all"])
def test_import_of_a_bad_secret_is_refused(dn_home, password_file, tmp_path, content):
    secret = tmp_path / "secret.hex"
    secret.write_text(content)
    result = dn(
        "wallet", "import", "copy", "--secret-file", secret, *FAST, *pw(password_file), code=2
    )
    assert "64 hexadecimal digits" in said(result)
    assert not (dn_home / "wallets" / "copy.json").exists()


def test_import_from_exported_keystore_gives_the_same_address(dn_home, password_file, tmp_path):
    address = create("alice", password_file)
    backup = tmp_path / "alice-backup.json"
    backup.write_text(dn("wallet", "export", "alice").stdout)
    imported = dn_json(
        "wallet", "import", "restored", "--keystore", backup, *FAST, *pw(password_file)
    )
    assert imported["address"] == address
    assert dn_json("wallet", "show", "restored")["address"] == address
    assert real_seed(dn_home, "restored") == real_seed(dn_home, "alice")


def test_import_keystore_with_wrong_password_or_junk_is_refused(dn_home, password_file, tmp_path):
    create("alice", password_file)
    backup = tmp_path / "alice-backup.json"
    backup.write_text(dn("wallet", "export", "alice").stdout)
    result = dn(
        "wallet",
        "import",
        "restored",
        "--keystore",
        backup,
        *FAST,
        env={"DN_PASSWORD": "wrong"},
        code=3,
    )
    assert "wrong password" in said(result)
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2, 3]")
    result = dn(
        "wallet", "import", "restored", "--keystore", junk, *FAST, *pw(password_file), code=3
    )
    assert "not a DeepNode keystore" in said(result)
    missing = tmp_path / "missing.json"
    result = dn(
        "wallet", "import", "restored", "--keystore", missing, *FAST, *pw(password_file), code=3
    )
    assert str(missing) in said(result)
    assert not (dn_home / "wallets" / "restored.json").exists()
    assert sorted(os.listdir(dn_home / "wallets")) == ["alice.json"]


# --- files that cannot be read: a message, never a traceback -------------------------------


@pytest.mark.parametrize("problem", ["missing", "not utf-8"])
def test_unreadable_secret_file_is_an_input_error(dn_home, password_file, tmp_path, problem):
    secret = tmp_path / "secret.hex"
    if problem == "not utf-8":
        secret.write_bytes(b"\xff\xfe" + b"ab" * 31)
    result = dn(
        "wallet", "import", "copy", "--secret-file", secret, *FAST, *pw(password_file), code=2
    )
    assert str(secret) in said(result)
    assert not (dn_home / "wallets" / "copy.json").exists()


def test_password_file_that_is_not_utf8_is_an_input_error(dn_home, tmp_path):
    binary = tmp_path / "password.bin"
    binary.write_bytes(b"\xffpassword\n")
    result = dn("wallet", "create", "alice", *FAST, "--password-file", binary, code=2)
    assert "cannot read password file" in said(result)
    assert not (dn_home / "wallets" / "alice.json").exists()


def test_home_that_is_a_file_is_refused_with_a_message(tmp_path, password_file):
    home = tmp_path / "not-a-folder"
    home.write_text("")
    result = dn("--home", home, "wallet", "create", "alice", *FAST, *pw(password_file), code=None)
    assert str(home) in said(result)
