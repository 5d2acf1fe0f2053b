"""`dn chain …`, `dn wallet send/balance` and `dn node status` against a real `dn node start`.

Every rejected command is checked three ways: its exit code, a message that says what was wrong,
and that the chain did not move (balances, nonces, mempool, height, tip and state root).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dn.wallet.keys import Keypair
from tests.cli.conftest import PASSWORD
from tests.cli.helpers import dn, dn_json, mistype, said
from tests.functional.harness import NodeProcess, free_port, init_chain

DN = 10**9
FAST = ("--kdf", "fast")


def make_wallet(name: str, password_file: Path, home: Path | None = None) -> str:
    where = ("--home", home) if home else ()
    created = dn_json(*where, "wallet", "create", name, *FAST, "--password-file", password_file)
    return str(created["address"])


@dataclass
class Devnet:
    home: Path
    node: NodeProcess
    genesis: dict[str, Any]  # what `dn --json chain init` printed
    alice: str
    bob: str
    password_file: Path

    def dn(self, *args: str | Path, **kwargs: Any):
        return dn("--home", self.home, "--node", self.node.url, *args, **kwargs)

    def dn_json(self, *args: str | Path, **kwargs: Any) -> Any:
        return dn_json("--home", self.home, "--node", self.node.url, *args, **kwargs)

    def send(self, *args: str, **kwargs: Any):
        return self.dn("wallet", "send", "--password-file", self.password_file, *args, **kwargs)

    def send_json(self, *args: str) -> dict[str, Any]:
        return dict(self.dn_json("wallet", "send", "--password-file", self.password_file, *args))

    def snapshot(self) -> dict[str, Any]:
        """What a rejected command must leave exactly as it was."""
        with self.node.client() as client:
            status = client.status()
            return {
                "height": status["height"],
                "tip": status["tip"],
                "state_root": status["state_root"],
                "mempool": status["mempool"],
                "supply": status["supply"],
                "accounts": [client.account(a) for a in (self.alice, self.bob)],
            }


def start_devnet(
    home: Path, password_file: Path, start: Callable[[], NodeProcess], *, via_cli: bool = True
) -> Devnet:
    """alice (1000 DN) and bob (nothing) on a one-validator dev chain with 100 ms blocks."""
    alice = make_wallet("alice", password_file, home)
    bob = make_wallet("bob", password_file, home)
    if via_cli:
        genesis = dn_json(
            "--home", home, "chain", "init", "--dev", "--alloc", "alice=1000",
            "--block-time-ms", "100",
        )  # fmt: skip
    else:
        # No idle blocks for an hour: a chain that must stand still stays still however slow
        # the machine is (the CLI cannot set max_block_interval_ms).
        made = init_chain(
            home, {alice: 1000 * DN}, block_time_ms=100, max_block_interval_ms=3_600_000
        )
        genesis = {"chain_id": made.chain_id, "allocations": made.allocations}
    assert genesis["allocations"] == {alice: 1000 * DN}
    return Devnet(home, start(), genesis, alice, bob, password_file)


@pytest.fixture
def devnet(dn_home, password_file, node_factory: Callable[..., NodeProcess]) -> Devnet:
    """A devnet of this test's own, under its DN_HOME, made with `dn chain init`."""
    return start_devnet(dn_home, password_file, lambda: node_factory().start())


@pytest.fixture(scope="module")
def shared_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """One devnet for the commands that must change nothing (each checks that it did not)."""
    home = tmp_path_factory.mktemp("shared") / "dnhome"
    password_file = home.parent / "password.txt"
    password_file.write_text(PASSWORD + "\n")
    node = NodeProcess(home)
    try:
        yield start_devnet(home, password_file, node.start, via_cli=False)
    finally:
        node.stop(timeout=5)


# --- chain init ----------------------------------------------------------------------------


def test_init_allocates_to_wallet_names_and_addresses(dn_home, password_file):
    alice = make_wallet("alice", password_file)
    carol = Keypair.generate().address
    data = dn_json(
        "chain",
        "init",
        "--dev",
        "--alloc",
        "alice=1000",
        "--alloc",
        f"{carol}=2.5",
        "--alloc",
        "alice=0.000000001",
    )
    assert data["allocations"] == {alice: 1000 * DN + 1, carol: 2_500_000_000}
    genesis_file = Path(data["genesis_file"])
    assert genesis_file == dn_home / "nodes" / "default" / "genesis.json"
    assert data["chain_id"] and data["genesis_hash"] and data["validator"].startswith("dn1")
    assert json.loads(genesis_file.read_text())  # a readable genesis document
    assert (dn_home / "nodes" / "default" / "chain.sqlite").exists()


@pytest.mark.parametrize(
    ("alloc", "code", "message"),
    [
        ("mistyped", 2, "invalid address"),
        ("dn1qqqq=5", 2, "invalid address"),
        ("ghost=5", 3, "no wallet named 'ghost'"),
        ("alice=-1", 2, "must not be negative"),
        ("alice=lots", 2, "'lots'"),
        ("alice=1.0000000001", 2, "more than 9 decimals"),
        ("alice", 2, "--alloc wants NAME_OR_ADDRESS=AMOUNT"),
        ("=5", 2, "--alloc wants NAME_OR_ADDRESS=AMOUNT"),
    ],
)
def test_init_with_a_bad_allocation_is_refused(dn_home, password_file, alloc, code, message):
    alice = make_wallet("alice", password_file)
    if alloc == "mistyped":
        alloc = f"{mistype(alice, at=20)}=5"
    result = dn("chain", "init", "--dev", "--alloc", alloc, code=code)
    assert message in said(result)
    assert not (dn_home / "nodes").exists() or not list((dn_home / "nodes").rglob("*.sqlite"))
    assert not list(dn_home.rglob("genesis.json"))


def test_init_without_dev_is_refused(dn_home):
    result = dn("chain", "init", code=2)
    assert "--dev" in said(result)
    assert not list(dn_home.rglob("genesis.json"))


def test_init_twice_needs_force(dn_home):
    first = dn_json("chain", "init", "--dev")
    genesis_file = Path(first["genesis_file"])
    before = genesis_file.read_bytes()
    result = dn("chain", "init", "--dev", code=None)
    assert "already holds a chain" in said(result) and "--force" in said(result)
    assert genesis_file.read_bytes() == before
    again = dn_json("chain", "init", "--dev", "--force")
    assert again["validator"] == first["validator"]  # the node keeps its key


# --- the happy path ------------------------------------------------------------------------


def test_send_and_look_at_the_chain(devnet: Devnet):
    sent = devnet.send_json("alice", "bob", "1.5")
    assert sent["status"] == "included" and sent["height"] >= 1
    assert (sent["from"], sent["to"], sent["amount"], sent["nonce"]) == (
        devnet.alice,
        devnet.bob,
        1_500_000_000,
        0,
    )

    bob = devnet.dn_json("wallet", "balance", "bob")
    assert bob["balance"] == 1_500_000_000 and bob["balance_dn"] == "1.5"
    assert bob["name"] == "bob" and bob["address"] == devnet.bob
    alice = devnet.dn_json("wallet", "balance", devnet.alice)  # by address
    assert alice["balance"] == 1000 * DN - 1_500_000_000 - sent["fee"]
    assert alice["nonce"] == 1 and alice["name"] is None

    info = devnet.dn_json("chain", "info")
    assert info["height"] >= 1
    assert info["chain_id"] == devnet.genesis["chain_id"]
    assert info["genesis_hash"] == devnet.genesis["genesis_hash"]
    assert info["node_address"] == devnet.genesis["validator"]

    listed = devnet.dn_json("chain", "blocks", "--from", "0", "--limit", "5")
    heights = [b["height"] for b in listed["blocks"]]
    assert heights == list(range(len(heights))) and 2 <= len(heights) <= 5
    assert any(sent["id"] in b["tx_ids"] for b in listed["blocks"])

    by_height = devnet.dn_json("chain", "block", str(sent["height"]))
    assert by_height["height"] == sent["height"] and sent["id"] in by_height["tx_ids"]
    by_hash = devnet.dn_json("chain", "block", by_height["hash"])
    assert by_hash == by_height
    assert devnet.dn_json("chain", "block", by_height["hash"].upper()) == by_height

    found = devnet.dn_json("chain", "tx", sent["id"])
    assert found["status"] == "included" and found["height"] == sent["height"]
    assert found["tx"]["payload"] == {"to": devnet.bob, "amount": 1_500_000_000}

    report = devnet.dn_json("chain", "verify")  # reads the store while the node runs
    assert report["ok"] is True and report["problems"] == []
    assert report["height"] >= sent["height"]

    status = devnet.dn_json("node", "status")
    assert status["chain_id"] == devnet.genesis["chain_id"] and status["validator"] is True
    assert status["height"] >= sent["height"]


def test_human_output_of_every_read_command(devnet: Devnet):
    sent = devnet.send_json("alice", devnet.bob, "2", "--no-wait")
    assert sent["status"] == "pending"
    devnet.dn("chain", "tx", sent["id"])  # pending or included: both render
    with devnet.node.client() as client:
        included = client.wait_for_tx(sent["id"], timeout=20)
    outputs = {
        "balance": devnet.dn("wallet", "balance", "bob").stdout,
        "list": devnet.dn("wallet", "list", "--balances").stdout,
        "info": devnet.dn("chain", "info").stdout,
        "blocks": devnet.dn("chain", "blocks").stdout,
        "block": devnet.dn("chain", "block", str(included["height"])).stdout,
        "tx": devnet.dn("chain", "tx", sent["id"]).stdout,
        "verify": devnet.dn("chain", "verify").stdout,
        "status": devnet.dn("node", "status").stdout,
    }
    assert "2 DN" in outputs["balance"]
    assert "alice" in outputs["list"] and "997.999999" in outputs["list"]
    assert devnet.genesis["chain_id"] in outputs["info"]
    assert f"block {included['height']}" in outputs["block"]
    assert f"in block {included['height']}" in outputs["tx"]
    assert outputs["verify"].startswith("ok")
    assert "validator" in outputs["status"]


# --- rejected sends change nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["alice", "bob", "--", "-1"], 2, "negative", id="negative"),
        pytest.param(["alice", "bob", "-1"], 2, "No such option: -1", id="negative-as-option"),
        pytest.param(["alice", "bob", "0"], 2, "zero", id="zero"),
        pytest.param(["alice", "bob", "1.0000000001"], 2, "9 decimals", id="10-decimals"),
        pytest.param(["alice", "bob", "9223372037"], 2, "2^63", id="2^63"),
        pytest.param(["alice", "bob", "lots"], 2, "amount 'lots'", id="not-a-number"),
        pytest.param(["alice", "bob", "1e3"], 2, "amount '1e3'", id="exponent"),
        pytest.param(["alice", "bob", "NaN"], 2, "amount 'NaN'", id="nan"),
        pytest.param(
            ["alice", "bob", "1", "--fee", "0.0000000001"],
            2,
            "fee '0.0000000001'",
            id="fee-precision",
        ),
        pytest.param(["alice", "bob", "1", "--fee", "0"], 4, "below the minimum", id="fee-zero"),
        pytest.param(["alice", "bob", "999.9999999"], 4, "cannot pay", id="overspend-fee"),
        pytest.param(["alice", "bob", "5000"], 4, "cannot pay", id="overspend"),
        pytest.param(["bob", "alice", "1"], 4, "cannot pay", id="empty-sender"),
        pytest.param(["carol", "bob", "1"], 3, "no wallet named 'carol'", id="unknown-sender"),
        pytest.param(["alice", "carol", "1"], 3, "no wallet named 'carol'", id="unknown-recipient"),
        pytest.param(["alice", "MISTYPED-END", "1"], 2, "invalid address", id="mistyped-end"),
        pytest.param(["alice", "MISTYPED-MID", "1"], 2, "invalid address", id="mistyped-middle"),
        pytest.param(["alice", "UPPER", "1"], 2, "invalid address", id="mixed-case-address"),
        pytest.param(["alice", "dn1", "1"], 2, "invalid address", id="bare-prefix"),
    ],
)
def test_rejected_send_changes_nothing(shared_devnet: Devnet, args, code, message):
    devnet = shared_devnet
    args = [
        {
            "MISTYPED-END": mistype(devnet.bob),
            "MISTYPED-MID": mistype(devnet.bob, at=30),
            "UPPER": devnet.bob[:10] + devnet.bob[10:].upper(),
        }.get(a, a)
        for a in args
    ]
    before = devnet.snapshot()
    result = devnet.send(*args, code=code)
    assert message in said(result)
    assert devnet.snapshot() == before


def test_wrong_password_on_send_changes_nothing(shared_devnet: Devnet):
    devnet = shared_devnet
    before = devnet.snapshot()
    result = devnet.dn("wallet", "send", "alice", "bob", "1", env={"DN_PASSWORD": "nope"}, code=3)
    assert "wrong password" in said(result)
    assert devnet.snapshot() == before


def test_unreachable_node_is_exit_5_and_changes_nothing(devnet: Devnet):
    before = devnet.snapshot()
    url = f"http://127.0.0.1:{free_port()}"
    for args in (
        ["wallet", "send", "alice", "bob", "1", "--password-file", str(devnet.password_file)],
        ["wallet", "balance", "alice"],
        ["chain", "info"],
        ["node", "status"],
    ):
        result = dn("--node", url, *args, code=5)
        assert f"cannot reach a node at {url}" in said(result)
    assert devnet.snapshot() == before
    # and the real node still takes the same send
    devnet.send("alice", "bob", "1")
    assert devnet.dn_json("wallet", "balance", "bob")["balance"] == 1 * DN


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc", "127.0.0.1:8x", "::::"])
def test_malformed_node_url_is_a_clear_error(url):
    result = dn("--node", url, "node", "status", code=None)
    assert result.exit_code in (2, 5)
    assert url in said(result)


def test_not_found_block_and_tx(shared_devnet: Devnet):
    devnet = shared_devnet
    assert "no block 999" in said(devnet.dn("chain", "block", "999", code=1))
    assert "no transaction" in said(devnet.dn("chain", "tx", "ab" * 32, code=1))


def test_verify_checks_the_store_against_the_genesis_file(dn_home, tmp_path):
    """`dn chain verify` compares the genesis in the store with the node's genesis.json (or
    --genesis FILE): a store checked against another chain's file fails."""
    first = dn_json("chain", "init", "--dev")
    kept = tmp_path / "ours.json"
    kept.write_bytes(Path(first["genesis_file"]).read_bytes())
    assert dn_json("chain", "verify")["ok"] is True  # the node's own genesis.json
    other = dn_json("chain", "init", "--dev", "--name", "other")  # another key: another chain
    result = dn("chain", "verify", "--genesis", other["genesis_file"], code=None)
    assert "the store holds genesis" in said(result)
    # the other node's genesis.json moved over this node's: found without --genesis too
    (dn_home / "nodes" / "default" / "genesis.json").write_bytes(
        Path(other["genesis_file"]).read_bytes()
    )
    assert "the store holds genesis" in said(dn("chain", "verify", code=None))
    assert dn_json("chain", "verify", "--genesis", kept)["ok"] is True
