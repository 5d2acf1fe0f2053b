"""`dn validate --wallet NAME` on real processes (DESIGN.md sections 4 and 5): a wallet-backed
validator bonds once synced, joins the set at the next epoch boundary, produces blocks in turn
with the genesis validator, and leaves again with `dn validator unbond`; both nodes end on one
chain that `verify_store` accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dn.wallet.keystore import KDF_FAST, Keystore
from tests.functional.harness import (
    NodeProcess,
    make_keys,
    verify_offline,
    wait_until,
    write_genesis,
)

DN = 10**9
PASSWORD = "join-test"
EPOCH = 4


def dn(dn_home: Path, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "dn", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DN_HOME": str(dn_home), "DN_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def proposers(node: NodeProcess, start: int, end: int) -> list[str]:
    with node.client() as client:
        blocks = client.blocks(start, end - start + 1)["blocks"]
    return [b["header"]["proposer"] for b in blocks]


def test_a_wallet_validator_joins_takes_turns_and_leaves(dn_home: Path) -> None:
    wallet = Keystore(dn_home / "wallets").create("val", PASSWORD, KDF_FAST)
    genesis_key = make_keys(dn_home, ["v0"])["v0"]
    write_genesis(
        dn_home,
        [genesis_key.address],
        {wallet.address: 50 * DN, genesis_key.address: DN},
        ["v0", "v1"],
        block_time_ms=150,
        max_block_interval_ms=1000,
        epoch_blocks=EPOCH,
        validator_min_bond=10 * DN,
    )
    v0 = NodeProcess(dn_home, "v0", None, ["--no-mdns"]).start()
    v1 = NodeProcess(
        dn_home,
        "v1",
        None,
        ["--no-mdns", "--peer", f"127.0.0.1:{v0.port}", "--powr-items", "1"],
        command=["validate", "--wallet", "val", "--bond", "20"],
        env={"DN_PASSWORD": PASSWORD},
    )
    try:
        v1.start()
        with v0.client() as client:
            # Bonded, then in the set from an epoch boundary on.
            wait_until(lambda: wallet.address in client.validators()["active"], 60, what="join")
            row = next(
                v for v in client.validators()["validators"] if v["address"] == wallet.address
            )
            assert row["bond"] == 20 * DN and not row["genesis"]
            joined = client.status()["height"]
            # Both produce, each in its turn (difficulty 2 mostly; out of turn only if late).
            wait_until(lambda: client.status()["height"] >= joined + 8, 60, what="blocks")
            seen = proposers(v0, joined + 1, joined + 8)
            assert {genesis_key.address, wallet.address} <= set(seen)
            assert all(a != b for a, b in zip(seen, seen[1:], strict=False))  # never twice running
        shown = dn(dn_home, "--node", v0.url, "validator", "list")
        assert sorted(shown["active"]) == sorted([genesis_key.address, wallet.address])
        left = dn(dn_home, "--node", v0.url, "validator", "unbond", "20", "--wallet", "val")
        assert left["status"] == "included"
        with v0.client() as client:
            wait_until(
                lambda: client.validators()["active"] == [genesis_key.address], 60, what="leave"
            )
            gone = client.status()["height"]
            wait_until(lambda: client.status()["height"] >= gone + 4, 60, what="v0 alone")
            assert set(proposers(v0, gone + 1, gone + 4)) == {genesis_key.address}
            tip = client.status()["height"]
        with v1.client() as client:
            wait_until(lambda: client.status()["height"] >= tip, 30, what="v1 follows")
    finally:
        v1.stop()
        v0.stop()
    for name in ("v0", "v1"):
        report = verify_offline(dn_home, name)
        assert report["ok"], report["problems"]
