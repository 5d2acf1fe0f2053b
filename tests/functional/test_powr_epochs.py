"""PoWR epochs on a real node process: a validator started with `--validate` evaluates the real
SmolLM2 model with llama.cpp, commits and reveals its score, and the epoch close pays the emission.

One validator node, no miners: quality alone earns (DESIGN.md section 8), so the model's creator
and the validator are paid while the miners' share stays unminted. Epochs of 24 blocks (a block
a second when idle) leave the validator 12 blocks to load the model and run 3 items before the
commit phase ends (8 were too few on a loaded 2-core machine: it missed the commit phase).
SmolLM2 gets about half of the general suite right (0.47 of its 150 items, docs/verification.md),
so an epoch whose 3 items are all wrong is possible (about one in seven): the test waits,
bounded, for the first closed epoch in which the model earned a nonzero score, usually the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dn.chain.powr_rules import result_key, reveal_key
from dn.chain.store import Store
from dn.node.node import NodeHome
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair
from tests.functional.harness import NodeProcess, make_keys, wait_until, write_genesis
from tests.functional.market import register_model

DN = 10**9
EPOCH = 24
ITEMS = 3
NAME = "val"


def closed_epochs(dn_home: Path) -> dict[int, dict[str, Any]]:
    """Every closed epoch's result record, read from the node's store (read-only, safe while the
    node runs), with the validator reveals of that epoch under "reveals"."""
    store = Store.open(NodeHome.named(NAME, dn_home).store_file, readonly=True)
    try:
        height = store.tip().height
        newest = (height - 1) // EPOCH - 1  # epoch e is closed by block (e+1)*EPOCH + 1
        out = {}
        for epoch in range(newest + 1):
            record = store.state_get(result_key(epoch))
            assert record is not None, f"epoch {epoch} closed at height {height} without a result"
            out[epoch] = record
        return out
    finally:
        store.close()


def state_get(dn_home: Path, key: str) -> Any:
    store = Store.open(NodeHome.named(NAME, dn_home).store_file, readonly=True)
    try:
        return store.state_get(key)
    finally:
        store.close()


def test_a_validator_evaluates_commits_reveals_and_the_epoch_pays(
    dn_home: Path, smollm2_gguf: Path
) -> None:
    validator = make_keys(dn_home, [NAME])[NAME]
    creator = Keypair.generate()
    genesis = write_genesis(
        dn_home,
        [validator.address],
        {validator.address: 1_000 * DN, creator.address: 1_000 * DN},
        [NAME],
        block_time_ms=300,
        max_block_interval_ms=1000,
        epoch_blocks=EPOCH,
    )
    sha = ModelStore(dn_home / "models").add_file(smollm2_gguf, name="smollm2-135m", source="test")
    node = NodeProcess(dn_home, NAME, None, ["--no-mdns", "--validate", "--powr-items", str(ITEMS)])
    try:
        node.start()
        assert "powr" in node.status()["roles"]
        register_model(node, creator, genesis.chain_id, sha, smollm2_gguf.stat().st_size)

        def scored() -> list[int]:
            return [
                epoch
                for epoch, record in sorted(closed_epochs(dn_home).items())
                if record["models"].get(sha, {}).get("quality", 0) > 0
            ]

        epoch = wait_until(scored, 180, 0.5, "an epoch that scored the model")[0]
    finally:
        node.stop(timeout=10)

    results = closed_epochs(dn_home)
    record = results[epoch]
    revealed = state_get(dn_home, reveal_key(epoch, validator.address))
    assert record["validators"][validator.address]["revealed"] is True
    assert set(revealed) == {sha}
    assert revealed[sha] in {round(k * 1_000_000 / ITEMS) for k in range(1, ITEMS + 1)}
    model = record["models"][sha]
    assert model["median"] == model["quality"] == revealed[sha]  # one validator: its own score
    assert model["score"] > 0 and model["reward"] > 0
    # Each epoch mints exactly what it credits; nothing else mints.
    for closed in results.values():
        assert closed["paid"] == sum(c["amount"] for c in closed["credits"]) <= closed["emission"]
    supply = state_get(dn_home, "supply")
    assert supply["emitted"] == sum(r["paid"] for r in results.values()) > 0
    to_creator = sum(
        c["amount"]
        for r in results.values()
        for c in r["credits"]
        if c["address"] == creator.address
    )
    assert to_creator > 0
    fee = genesis.param("min_fee")
    assert state_get(dn_home, "acct:" + creator.address)["balance"] == 1_000 * DN - fee + to_creator

    verify = subprocess.run(
        [sys.executable, "-m", "dn", "chain", "verify", "--name", NAME],
        env={**os.environ, "DN_HOME": str(dn_home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
