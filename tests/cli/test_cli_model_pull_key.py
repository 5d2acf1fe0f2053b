"""`dn model pull --network-key` against a real `dn node start --network-key` (issue 12): the
model blob is a peer-to-peer route, so a keyed node serves it only to a member. A small random
file registered on chain stands in for a model (the chain records a size and a hash, nothing
more), so the test costs one node process and no llama.cpp."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from dn.chain.types import Tx
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair
from tests.cli.helpers import dn, dn_json, said
from tests.functional.harness import NodeProcess, init_chain

KEY = "the passphrase of our lan party"
BLOB_BYTES = 256 * 1024
INCLUDED_WITHIN_S = 30


def test_pull_from_a_keyed_node_needs_the_network_key(
    dn_home: Path, node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    creator = Keypair.generate()
    genesis = init_chain(dn_home, {creator.address: 1000 * 10**9}, block_time_ms=100)
    blob = os.urandom(BLOB_BYTES)
    sha = hashlib.sha256(blob).hexdigest()
    ModelStore.default(dn_home).add_stream([blob], name="blob", source="test")  # it serves it
    node = node_factory("default", None, ["--no-mdns", "--network-key", KEY]).start()
    with node.client() as client:
        tx = Tx.create(
            creator,
            chain_id=genesis.chain_id,
            kind="model.register",
            nonce=0,
            fee=genesis.params["min_fee"],
            payload={
                "model": sha,
                "name": "blob",
                "domain": "general",
                "price": 1000,
                "license": "MIT",
                "size": BLOB_BYTES,
            },
        )
        client.submit(tx.to_json())
        client.wait_for_tx(tx.id, timeout=INCLUDED_WITHIN_S)

    puller = tmp_path / "puller"
    where = ("--home", puller, "--node", node.url)
    part = puller / "models" / f"{sha}.gguf.part"

    refused = dn(*where, "model", "pull", "blob", code=6)  # ModelError: no source served it
    assert f"could not pull blob from any source ({node.url}: HTTP 401" in said(refused)
    assert not (puller / "models" / f"{sha}.gguf").exists() and not part.exists()

    wrong = dn(*where, "model", "pull", "blob", "--network-key", "another passphrase", code=6)
    assert f"({node.url}: HTTP 403: the peer does not know our network key)" in said(wrong)
    assert not (puller / "models" / f"{sha}.gguf").exists()

    pulled = dn_json(*where, "model", "pull", "blob", "--network-key", KEY)
    assert pulled["pulled"] is True and pulled["source"] == node.url
    assert pulled["size"] == BLOB_BYTES
    assert (puller / "models" / f"{sha}.gguf").read_bytes() == blob

    elsewhere = tmp_path / "elsewhere"  # the key from $DN_NETWORK_KEY, as for `dn mine`
    env = {"DN_NETWORK_KEY": KEY}
    by_env = dn_json("--home", elsewhere, "--node", node.url, "model", "pull", sha, env=env)
    assert by_env["pulled"] is True and by_env["source"] == node.url


def test_pull_names_the_option_and_its_variable_in_its_help() -> None:
    help_text = said(dn("model", "pull", "--help"))
    assert "--network-key" in help_text and "DN_NETWORK_KEY" in help_text
