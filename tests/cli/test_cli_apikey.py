"""`dn apikey create | list | revoke`: keys for LAN clients of a node's OpenAI API, kept hashed in
the node's folder (the running node reads the same file: tests/unit/test_openai_keys.py)."""

from __future__ import annotations

import time
from pathlib import Path

from dn.config import wallets_dir
from dn.node.market.apikeys import FILE_NAME, KeyStore
from dn.node.node import NodeHome
from dn.wallet.keystore import KDF_FAST, Keystore
from tests.cli.helpers import dn, dn_json, said


def _setup(dn_home: Path, node: str = "default") -> tuple[str, Path]:
    wallet = Keystore(wallets_dir(dn_home)).create("gw", "pw", KDF_FAST)
    home = NodeHome.named(node, dn_home)
    home.key()  # the node's folder, as `dn chain init` or `dn node start` makes it
    return wallet.address, home.path


def test_create_list_revoke(dn_home: Path) -> None:
    address, folder = _setup(dn_home)
    made = dn_json("apikey", "create", "--wallet", "gw", "--budget", "2.5", "--expires", "30d")
    assert made["key"].startswith("dn-key-" + made["id"] + ".")
    assert (made["wallet"], made["budget"], made["spent"], made["revoked"]) == (
        address,
        2_500_000_000,
        0,
        False,
    )
    days = (made["expires_ms"] - time.time() * 1000) / 86_400_000
    assert 29.9 < days <= 30
    # hashed at rest: the secret is in no file of the node's folder
    secret = made["key"].split(".", 1)[1].encode()
    assert all(secret not in p.read_bytes() for p in folder.iterdir() if p.is_file())
    # the node checks the key it printed
    store = KeyStore.in_folder(folder)
    assert store.check(made["key"]).id == made["id"]

    listed = dn_json("apikey", "list")["keys"]
    assert [k["id"] for k in listed] == [made["id"]]
    assert "key" not in listed[0] and made["key"] not in dn("apikey", "list").output
    assert "2.5" in said(dn("apikey", "list"))

    assert dn_json("apikey", "revoke", made["id"])["revoked"] is True
    assert dn_json("apikey", "list")["keys"][0]["revoked"] is True
    assert f"revoked key {made['id']}" in said(dn("apikey", "revoke", made["id"]))
    store.close()


def test_human_create_prints_the_key_alone_on_stdout(dn_home: Path) -> None:
    _setup(dn_home, "n2")
    result = dn("apikey", "create", "--wallet", "gw", "--budget", "1", "--name", "n2")
    key = result.stdout.strip()
    assert key.startswith("dn-key-") and len(key.split(".", 1)[1]) == 64
    assert (NodeHome.named("n2", dn_home).path / FILE_NAME).exists()


def test_mistakes_are_clear_errors(dn_home: Path) -> None:
    _setup(dn_home)
    assert "not-a-wallet" in said(
        dn("apikey", "create", "--wallet", "not-a-wallet", "--budget", "1", code=None)
    )
    for budget in ("0", "-1", "lots"):
        dn("apikey", "create", "--wallet", "gw", "--budget", budget, code=2)
    for when in ("soon", "2001-01-01", "0d"):
        assert "--expires" in said(
            dn("apikey", "create", "--wallet", "gw", "--budget", "1", "--expires", when, code=2)
        )
    assert "no local node 'elsewhere'" in said(
        dn("apikey", "list", "--name", "elsewhere", code=None)
    )
    assert "no API key nope" in said(dn("apikey", "revoke", "nope", code=None))
