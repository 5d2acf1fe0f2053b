"""`dn stake add | remove | list` against a real `dn node start`.

The model is registered through the library (the GGUF checks of `dn model submit` are tested
elsewhere); everything about staking goes through the CLI. Every rejected command is checked
for its exit code, a message that says what was wrong, and a chain that did not move.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dn.client.txs import send
from dn.errors import InvalidAddress
from dn.wallet.keystore import Keystore
from tests.cli.conftest import PASSWORD
from tests.cli.helpers import mistype, said
from tests.cli.test_cli_chain import Devnet, make_wallet
from tests.functional.harness import NodeProcess, init_chain

DN = 10**9
UNBONDING = 2
SHA = "ab" * 32  # the model's "hash": nothing here needs the file


def _start(home: Path, password_file: Path) -> tuple[Devnet, NodeProcess]:
    """alice (1000 DN) and bob (nothing); a model `tiny` registered by alice; a chain that makes
    blocks only for transactions (so a refused command leaves it exactly as it was)."""
    alice = make_wallet("alice", password_file, home)
    bob = make_wallet("bob", password_file, home)
    made = init_chain(
        home,
        {alice: 1000 * DN},
        block_time_ms=100,
        max_block_interval_ms=3_600_000,
        unbonding_blocks=UNBONDING,
    )
    node = NodeProcess(home).start()
    genesis = {"chain_id": made.chain_id, "allocations": made.allocations}
    devnet = Devnet(home, node, genesis, alice, bob, password_file)
    payload = {
        "model": SHA,
        "name": "tiny",
        "domain": "general",
        "price": 1000,
        "license": "",
        "size": 1234,
    }
    keypair = Keystore(home / "wallets").load("alice", PASSWORD)
    with node.client() as client:
        send(client, keypair, "model.register", payload)
    return devnet, node


def validator(devnet: Devnet) -> str:
    with devnet.node.client() as client:
        return str(client.status()["validators"][0])


def stake_args(devnet: Devnet, verb: str, target: str, amount: str) -> list[Any]:
    return ["stake", verb, target, amount, "--wallet", "alice", "--password-file",
            devnet.password_file]  # fmt: skip


@pytest.fixture
def devnet(dn_home: Path, password_file: Path) -> Iterator[Devnet]:
    made, node = _start(dn_home, password_file)
    try:
        yield made
    finally:
        node.stop(timeout=5)


def test_add_list_and_remove(devnet: Devnet) -> None:
    start = devnet.dn_json("wallet", "balance", "alice")["balance"]
    added = devnet.dn_json(*stake_args(devnet, "add", "tiny", "2.5"))
    assert {k: added[k] for k in ("target", "kind", "name", "backer", "amount", "status")} == {
        "target": SHA,
        "kind": "model",
        "name": "tiny",
        "backer": devnet.alice,
        "amount": 2_500_000_000,
        "status": "included",
    }
    assert added["staked"] == 2_500_000_000
    val = validator(devnet)
    shown = said(devnet.dn(*stake_args(devnet, "add", val, "1")))
    assert f"staked 1 DN on validator {val}, in block" in shown
    assert "your stake there is now 1 DN" in shown
    again = devnet.dn_json(*stake_args(devnet, "add", SHA[:10], "1.5"))  # a prefix works too
    assert again["staked"] == 4 * DN
    fees = added["fee"] + again["fee"] + 1000  # three transactions at the minimum fee
    after = devnet.dn_json("wallet", "balance", "alice")["balance"]
    assert after == start - 5 * DN - fees

    everything = devnet.dn_json("stake", "list")
    assert everything["stakes"] == sorted(
        [
            {"target": SHA, "backer": devnet.alice, "amount": 4 * DN},
            {"target": val, "backer": devnet.alice, "amount": DN},
        ],
        key=lambda s: s["target"],
    )
    assert devnet.dn_json("stake", "list", "--wallet", "alice") == everything
    assert devnet.dn_json("stake", "list", "--wallet", devnet.alice) == everything
    assert devnet.dn_json("stake", "list", "--wallet", "bob")["stakes"] == []
    on_model = devnet.dn_json("stake", "list", "--target", "tiny")["stakes"]
    assert on_model == [{"target": SHA, "backer": devnet.alice, "amount": 4 * DN}]
    assert devnet.dn_json("stake", "list", "--target", val)["stakes"][0]["amount"] == DN
    table = said(devnet.dn("stake", "list"))
    for cell in ("model tiny", f"validator {val}", devnet.alice, "total 5 DN"):
        assert cell in table
    assert "no stakes match" in said(devnet.dn("stake", "list", "--wallet", "bob"))
    shown = devnet.dn_json("model", "show", "tiny")
    assert shown["backers"] == [{"address": devnet.alice, "amount": 4 * DN}]
    assert devnet.alice in said(devnet.dn("model", "show", "tiny"))

    removed = devnet.dn_json(*stake_args(devnet, "remove", "tiny", "2"))
    assert removed["status"] == "included" and removed["staked"] == 2 * DN
    assert removed["unlock_height"] == removed["height"] + UNBONDING
    assert removed["unbonding_blocks"] == UNBONDING
    human = said(devnet.dn(*stake_args(devnet, "remove", val, "1")))
    assert f"unstaked 1 DN from validator {val} in block" in human
    assert "the funds unlock at block" in human and "your stake there is now 0 DN" in human
    listed = devnet.dn_json("stake", "list")["stakes"]
    assert listed == [{"target": SHA, "backer": devnet.alice, "amount": 2 * DN}]

    # Nothing comes back until the unbonding period has passed; then exactly what was unstaked.
    with devnet.node.client() as client:
        held = client.account(devnet.alice)["balance"]
        assert client.status()["supply"]["unbonding"] == 3 * DN
    sends = 0
    while True:
        with devnet.node.client() as client:
            if client.status()["height"] >= removed["unlock_height"] + 1:
                break
        devnet.send("alice", devnet.bob, "0.001")  # one block each
        sends += 1
    with devnet.node.client() as client:
        back = client.account(devnet.alice)["balance"]
        assert client.status()["supply"]["unbonding"] == 0
    assert back == held - sends * (DN // 1000 + 1000) + 3 * DN


# --- refusals: one node, stakes set up once, and nothing ever changes ------------------------


@pytest.fixture(scope="module")
def staked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """alice has 3 DN staked on `tiny`."""
    home = tmp_path_factory.mktemp("stake") / "dnhome"
    password_file = home.parent / "password.txt"
    password_file.write_text(PASSWORD + "\n")
    made, node = _start(home, password_file)
    try:
        made.dn(*stake_args(made, "add", "tiny", "3"))
        yield made
    finally:
        node.stop(timeout=5)


def _refusals(devnet: Devnet) -> list[tuple[list[Any], int, str]]:
    val, bob = validator(devnet), devnet.bob
    return [
        (stake_args(devnet, "add", "no-such-model", "2"), 1, "no model 'no-such-model'"),
        (stake_args(devnet, "add", "cd" * 32, "2"), 1, "no model"),
        (stake_args(devnet, "add", "tiny", "0.5"), 4, "below the minimum stake"),
        (stake_args(devnet, "add", bob, "2"), 4, f"{bob} is not a validator"),
        (stake_args(devnet, "add", mistype(val), "2"), 2, "invalid address"),
        (stake_args(devnet, "add", "tiny", "2000"), 4, "cannot pay stake"),
        (stake_args(devnet, "add", "tiny", "1.0000000001"), 2, "more than 9 decimals"),
        (stake_args(devnet, "add", "tiny", "1,5"), 2, "is not a plain decimal number"),
        (stake_args(devnet, "add", "tiny", "0"), 2, "amount must be greater than zero"),
        (stake_args(devnet, "remove", "tiny", "5"), 4, "cannot unstake 5000000000 units"),
        (stake_args(devnet, "remove", "tiny", "2.5"), 4, "the stake left of 500000000 units"),
        (stake_args(devnet, "remove", val, "1"), 4, "has no stake on"),
        (stake_args(devnet, "remove", mistype(val, 10), "1"), 2, "invalid address"),
        (["stake", "add", "tiny", "2", "--wallet", "ghost"], 3, "no wallet named 'ghost'"),
        (["stake", "list", "--wallet", "ghost"], 3, "no wallet named 'ghost'"),
        (["stake", "list", "--wallet", mistype(bob)], 2, "invalid address"),
        (["stake", "list", "--target", "no-such-model"], 1, "no model 'no-such-model'"),
    ]


CASES = [
    "unknown-model", "unknown-sha", "too-low", "not-validator", "mistyped-validator",
    "more-than-balance", "fine-amount", "not-a-number", "zero", "more-than-staked",
    "leaves-too-little", "no-stake", "mistyped-remove", "no-wallet", "list-no-wallet",
    "list-mistyped", "list-unknown-target",
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASES)
def test_bad_input_is_refused_and_changes_nothing(staked: Devnet, case: int) -> None:
    args, code, message = _refusals(staked)[case]
    before = staked.snapshot()
    stakes = staked.dn_json("stake", "list")
    result = staked.dn(*args, code=code)
    assert message in said(result)
    assert result.stdout == ""
    assert staked.snapshot() == before
    assert staked.dn_json("stake", "list") == stakes
    assert stakes["stakes"] == [{"target": SHA, "backer": staked.alice, "amount": 3 * DN}]


def test_the_api_refuses_a_malformed_filter(staked: Devnet) -> None:
    with staked.node.client() as client:
        assert client.stakes(target=SHA)["stakes"][0]["amount"] == 3 * DN
        assert client.stakes(backer=staked.bob)["stakes"] == []
        for bad in ({"backer": "dn1nope"}, {"target": "not-a-target"}):
            with pytest.raises(InvalidAddress) as caught:
                client.stakes(**bad)
            assert "invalid address" in caught.value.message
