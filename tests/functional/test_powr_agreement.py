"""Two honest validators agree on the real model, epoch after epoch (issue 11, attack 8).

Each validator once sampled its own benchmark items, a few per epoch, so two honest validators
revealed 1.0 and 0.667 for the same model and one of them had agreement 0 and earned nothing.
Now every validator evaluates every live model on one sample per epoch, seeded by a block hash
fixed before the commit phase (`sample_seed`), and greedy decoding gives the same answers on the
same items: two validator processes, each with `--validate`, both genesis validators of one
chain, grade the real SmolLM2 model for three closed epochs. Each epoch: both revealed, the same
score, and each validator's agreement ≥ 0.9 (DESIGN.md: agreement in [0, 1]). Marked `slow`
(four epochs of two minutes: about 9 minutes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dn.chain.powr_rules import result_key, reveal_key
from dn.chain.store import Store
from dn.node.node import NodeHome
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair
from tests.functional.harness import NodeProcess, make_keys, wait_until, write_genesis
from tests.functional.market import register_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

DN = 10**9
PPM = 1_000_000
# Blocks of about 1 s, so a commit phase of about a minute: both validators evaluate the same
# sample on the same two cores at once, and a sample of long answers took them 40 s (with epochs
# of 40 blocks a validator missed the commit phase and skipped the epoch, as a slow one would).
EPOCH = 120
ITEMS = 3
EPOCHS = 3
AGREEMENT = 900_000  # the bar: 0.9
NAMES = ["v1", "v2"]


def read(dn_home: Path, key: str) -> Any:
    store = Store.open(NodeHome.named(NAMES[0], dn_home).store_file, readonly=True)
    try:
        return store.state_get(key)
    finally:
        store.close()


def closed(dn_home: Path, first: int) -> list[dict[str, Any]]:
    """The result records of the epochs from `first` on that have closed, in order."""
    out = []
    epoch = first
    while (record := read(dn_home, result_key(epoch))) is not None:
        out.append({**record, "epoch": epoch})
        epoch += 1
    return out


def pin(node: NodeProcess, core: int) -> None:
    """Each validator on its own core, as on its own machine: two llama.cpp evaluations with
    two threads each on the same two cores slowed each other down many times over (a sample
    of long answers then outlasted even a minute of commit phase). Every thread of the process
    is pinned before the first model loads; llama.cpp then sizes its threads to that core."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return  # unpinned: slower, as two validators on one small machine are
    assert node.proc is not None
    subprocess.run(
        ["taskset", "-a", "-p", "-c", str(core), str(node.proc.pid)],
        check=True,
        capture_output=True,
    )


def test_two_honest_validators_agree_for_three_epochs(dn_home: Path, smollm2_gguf: Path) -> None:
    keys = make_keys(dn_home, NAMES)
    creator = Keypair.generate()
    allocations = {k.address: 1_000 * DN for k in keys.values()} | {creator.address: 1_000 * DN}
    genesis = write_genesis(
        dn_home,
        [k.address for k in keys.values()],
        allocations,
        NAMES,
        block_time_ms=1000,
        max_block_interval_ms=1000,
        epoch_blocks=EPOCH,
    )
    sha = ModelStore(dn_home / "models").add_file(smollm2_gguf, name="smollm2-135m", source="test")
    args = ["--no-mdns", "--validate", "--powr-items", str(ITEMS)]
    first = NodeProcess(dn_home, NAMES[0], None, args)
    second = NodeProcess(dn_home, NAMES[1], None, [*args, "--peer", f"127.0.0.1:{first.port}"])
    try:
        first.start()
        second.start()
        pin(first, 0)
        pin(second, 1)
        register_model(first, creator, genesis.chain_id, sha, smollm2_gguf.stat().st_size)
        # The model is live from the epoch after the one it was registered in.
        start = first.status()["height"] // EPOCH + 1
        records = wait_until(
            lambda: (done := closed(dn_home, start))[EPOCHS - 1 :] and done,
            EPOCHS * EPOCH * 1.5 + 240,
            1.0,
            f"{EPOCHS} epochs closed after the model went live",
        )
    finally:
        for node in (second, first):
            node.stop(timeout=10)

    for record in records[:EPOCHS]:
        epoch = record["epoch"]
        reveals = [read(dn_home, reveal_key(epoch, k.address)) for k in keys.values()]
        assert all(r is not None and sha in r for r in reveals), (epoch, reveals)
        assert reveals[0][sha] == reveals[1][sha], (epoch, reveals)  # the same sample, graded
        for key in keys.values():
            mine = record["validators"][key.address]
            assert mine["revealed"] is True, (epoch, mine)
            assert mine["agreement"] >= AGREEMENT, (epoch, key.address, mine)
    verify = subprocess.run(
        [sys.executable, "-m", "dn", "chain", "verify", "--name", NAMES[0]],
        env={**os.environ, "DN_HOME": str(dn_home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
