"""Models from a user's side (dn/client/models.py): finding one on this machine, registering one
(cheapest checks first, the password last), where a pull looks, and what a miner serves."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dn.client.models import (
    catalog,
    find_local_model,
    models_to_serve,
    pull_sources,
    resolve_on_node,
    submit_model,
)
from dn.client.txs import send
from dn.errors import InputError, ModelError, WalletNotFound
from dn.runner.catalog import CATALOG
from dn.runner.modelstore import ModelStore
from dn.wallet.keystore import KDF_FAST, Keystore, LockedWallet
from tests.unit.inprocess import DN, served_node
from tests.unit.test_gguf import METADATA, TENSOR, gguf_bytes

PASSWORD = "pw"
DATA = b"GGUF" + bytes(range(256)) * 10
SHA = hashlib.sha256(DATA).hexdigest()


class Asked:
    def __init__(self) -> None:
        self.times = 0

    def __call__(self) -> str:
        self.times += 1
        return PASSWORD


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def keystore(tmp_path: Path) -> Keystore:
    return Keystore(tmp_path / "wallets")


# --- on this machine ------------------------------------------------------------------------


def test_a_local_model_by_file_by_store_name_and_by_hash_prefix(
    tmp_path: Path, store: ModelStore
) -> None:
    loose = tmp_path / "mine.gguf"
    loose.write_bytes(DATA)
    found = find_local_model(str(loose), store)
    assert (found.path, found.name, found.sha256, found.domain) == (loose, "mine.gguf", None, None)
    store.add_file(loose, name="mine", source="test")
    for ref in ("mine", SHA[:10], SHA):
        found = find_local_model(ref, store)
        assert (found.path, found.name, found.sha256) == (store.path(SHA), "mine", SHA)


def test_a_local_model_that_is_not_there_says_what_to_run(tmp_path: Path, store: ModelStore):
    with pytest.raises(ModelError) as unknown:
        find_local_model("nothing-like-it", store)
    assert unknown.value.reason == "unknown-model"
    assert "dn model fetch NAME" in unknown.value.message
    with pytest.raises(ModelError) as missing:
        find_local_model(str(tmp_path / "gone.gguf"), store)
    assert missing.value.reason == "missing"
    known = sorted(CATALOG)[0]
    with pytest.raises(ModelError) as not_installed:
        find_local_model(known, store)
    assert not_installed.value.reason == "not-installed"
    assert f"dn model fetch {known}" in not_installed.value.message


def test_the_catalog_says_which_known_models_are_installed(store: ModelStore) -> None:
    rows = catalog(store)
    assert [r["name"] for r in rows] == list(CATALOG)
    assert not any(r["installed"] for r in rows)


# --- registering ----------------------------------------------------------------------------


def test_a_bad_option_fails_before_the_file_the_wallet_or_the_password(
    tmp_path: Path, store: ModelStore, keystore: Keystore
) -> None:
    asked = Asked()
    wallet = LockedWallet(keystore, "nobody", asked)
    with served_node(tmp_path, {}) as (node, client):
        with pytest.raises(InputError) as bad:
            submit_model(
                client, wallet, store, tmp_path / "none.gguf", name="m", domain="Law!", price=0
            )
        assert bad.value.message.startswith("--domain: ")
        not_gguf = tmp_path / "notes.gguf"
        not_gguf.write_bytes(b"PK\x03\x04 a zip")
        with pytest.raises(ModelError) as header:  # the file is looked at before the wallet
            submit_model(client, wallet, store, not_gguf, name="m", domain="general", price=0)
        assert header.value.reason == "not-gguf"
        unloadable = tmp_path / "tiny.gguf"
        unloadable.write_bytes(gguf_bytes(METADATA, [TENSOR]))
        with pytest.raises(WalletNotFound):  # the wallet before llama.cpp loads anything
            submit_model(client, wallet, store, unloadable, name="m", domain="general", price=0)
        keystore.create("alice", PASSWORD, KDF_FAST)
        wallet = LockedWallet(keystore, "alice", asked)
        with pytest.raises(ModelError) as load:
            submit_model(client, wallet, store, unloadable, name="m", domain="general", price=0)
        assert load.value.reason == "unloadable"
        assert asked.times == 0 and store.list() == [] and node.tip.height == 0


# --- pulling and serving --------------------------------------------------------------------


def test_a_pull_tries_the_given_source_then_the_miners_then_the_node() -> None:
    model = {"id": SHA, "miners": [{"url": "http://m1:1"}, {"url": "http://m2:2"}]}
    assert pull_sources(model, "http://first:9", "http://node:8") == [
        "http://first:9",
        "http://m1:1",
        "http://m2:2",
        "http://node:8",
    ]
    assert pull_sources({"id": SHA}, None, "http://node:8") == [None, "http://node:8"]


def test_what_a_miner_serves_is_resolved_on_its_chain(
    tmp_path: Path, store: ModelStore, keystore: Keystore
) -> None:
    alice = keystore.create("alice", PASSWORD, KDF_FAST)
    with served_node(tmp_path, {alice.address: 50 * DN}) as (node, client):
        payload = {"model": SHA, "name": "tiny", "domain": "general", "price": 0}
        send(client, alice, "model.register", {**payload, "license": "", "size": len(DATA)})
        assert resolve_on_node(node, [], "tiny") == SHA
        assert resolve_on_node(node, [], SHA[:8]) == SHA
        with pytest.raises(InputError) as unknown:
            resolve_on_node(node, [], "other")
        assert unknown.value.message == "no model 'other' on this chain (see 'dn model list')"
        with pytest.raises(ModelError) as nothing:  # none given, and none held
            models_to_serve(node, [], store, [])
        assert nothing.value.reason == "no-model"
        with pytest.raises(ModelError) as unpulled:  # no miner serves it, no peer to ask
            models_to_serve(node, [], store, ["tiny"])
        assert unpulled.value.reason == "pull-failed"
        loose = tmp_path / "tiny.gguf"
        loose.write_bytes(DATA)
        store.add_file(loose, name="tiny", source="test")
        assert models_to_serve(node, [], store, []) == [SHA]
        assert models_to_serve(node, [], store, ["tiny"]) == [SHA]


def test_an_evaluation_seed_without_a_sample_size_is_refused_first(store: ModelStore) -> None:
    from dn.client.powr import evaluate_local

    with pytest.raises(InputError) as refused:  # before the (unknown) model is looked for
        evaluate_local(store, "no-such-model", seed="abc")
    assert refused.value.message == "--seed picks which --items to run; give --items too"
