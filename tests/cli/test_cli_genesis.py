"""`dn node address` and `dn chain init` writing genesis files: multi-validator and --dev.

Collecting validators' addresses and writing a genesis for them is how a LAN network starts.
Every refused command is checked for its exit code, its whole message, and that it wrote nothing.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import typer

from dn.chain.genesis import PARAMS, Genesis, default_params
from dn.cli.main import app
from dn.node.node import Node, NodeHome
from dn.wallet.keys import Keypair
from tests.cli.helpers import dn, dn_json, mistype, said

DN = 10**9
FAST = ("--kdf", "fast")


def node_address(name: str = "default") -> str:
    return str(dn_json("node", "address", "--name", name)["address"])


def written_files(*folders: Path) -> list[Path]:
    """Every file under `folders` (a refused command must leave none behind, temp files too)."""
    return sorted(p for folder in folders if folder.exists() for p in folder.rglob("*"))


# --- dn node address -----------------------------------------------------------------------


def test_node_address_makes_the_key_once_and_then_reads_it(dn_home):
    key_file = dn_home / "nodes" / "default" / "node_key.json"
    first = dn("node", "address")
    address = first.stdout.strip()
    assert first.stdout == f"{address}\n"  # the address alone on stdout, for $(dn node address)
    assert first.stderr == f"made a new key for node 'default' in {key_file}\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert address == NodeHome.named("default", dn_home).key(create=False).address

    again = dn("node", "address")
    assert again.stdout == f"{address}\n" and again.stderr == ""  # the same key, nothing made
    assert dn_json("node", "address") == {"name": "default", "address": address}


def test_node_address_of_another_node_is_another_key(dn_home):
    other = dn_json("node", "address", "--name", "lab-2")
    assert other["name"] == "lab-2" and other["address"].startswith("dn1")
    assert other["address"] != node_address("default")
    assert (dn_home / "nodes" / "lab-2" / "node_key.json").exists()


def test_node_address_is_the_dev_chain_validator(dn_home):
    address = node_address()
    made = dn_json("chain", "init", "--dev")
    assert made["validator"] == address


def test_node_address_with_a_bad_name_is_refused(dn_home):
    result = dn("node", "address", "--name", "../x", code=2)
    assert said(result) == "error: invalid node name '../x'"
    assert not dn_home.exists()


# --- dn chain init --validator … --out FILE -------------------------------------------------


@pytest.fixture
def validators(dn_home) -> list[str]:
    """Three validators: two local nodes' addresses and one from another machine."""
    return [node_address("a"), node_address("b"), Keypair.generate().address]


def test_init_writes_a_multi_validator_genesis(dn_home, tmp_path, password_file, validators):
    alice = dn_json(
        "wallet", "create", "alice", *FAST, "--password-file", password_file
    )["address"]  # fmt: skip
    carol = Keypair.generate().address
    out = tmp_path / "lan" / "genesis.json"  # its folder is made
    a, b, c = validators
    result = dn(
        "chain", "init",
        "--validator", c, "--validator", a, "--validator", b, "--validator", a,
        "--alloc", "alice=1000", "--alloc", f"{carol}=2.5",
        "--network", "lan", "--param", "block_time_ms=200", "--param", "min_fee=0",
        "--out", out,
    )  # fmt: skip

    genesis = Genesis.load(out)
    ordered = sorted(validators)
    assert result.stdout == (
        f"genesis for chain {genesis.chain_id} written to {out}\n"
        "validators (3):\n"
        f"  {ordered[0]}\n"
        f"  {ordered[1]}\n"
        f"  {ordered[2]}\n"
        f"start each node with: dn node start --genesis {out}\n"
    )
    assert genesis.validators == ordered  # sorted, the repeat dropped
    assert genesis.allocations == {alice: 1000 * DN, carol: 2_500_000_000}
    assert genesis.network == "lan" and genesis.chain_id.startswith("lan-")
    assert genesis.doc["params"] == default_params(block_time_ms=200, min_fee=0)
    rebuilt = Genesis.build(
        network="lan",
        time_ms=genesis.time,
        validators=[c, a, b],
        allocations={carol: 2_500_000_000, alice: 1000 * DN},
        params=default_params(min_fee=0, block_time_ms=200),
    )
    assert (rebuilt.chain_id, rebuilt.hash) == (genesis.chain_id, genesis.hash)
    assert json.loads(out.read_text()) == rebuilt.doc
    assert [p.name for p in out.parent.iterdir()] == ["genesis.json"]  # no temp file left


def test_init_json_and_the_nodes_it_names_validate(dn_home, tmp_path, validators):
    out = tmp_path / "genesis.json"
    args = [arg for v in validators for arg in ("--validator", v)]
    data = dn_json("chain", "init", *args, "--param", "block_time_ms=200", "--out", out)
    genesis = Genesis.load(out)
    assert data == {
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.hash,
        "validators": sorted(validators),
        "out": str(out),
    }
    assert genesis.param("block_time_ms") == 200
    # the file writes nothing into the node folders: each node takes it when it starts
    assert not list((dn_home / "nodes").rglob("genesis.json"))
    for name in ("a", "b"):
        node = Node(NodeHome.named(name, dn_home), genesis)
        try:
            assert node.is_validator and node.genesis.chain_id == data["chain_id"]
            assert node.tip.height == 0
        finally:
            node.close()


def test_init_with_one_validator_and_defaults(tmp_path):
    out = tmp_path / "g.json"
    only = Keypair.generate().address
    data = dn_json("chain", "init", "--validator", only, "--out", out)
    genesis = Genesis.load(out)
    assert data["validators"] == [only] and data["chain_id"] == genesis.chain_id
    assert genesis.network == "devnet" and genesis.allocations == {}
    assert genesis.doc["params"] == default_params()


def test_init_overwrites_only_with_force(tmp_path, validators):
    out = tmp_path / "genesis.json"
    first = dn_json("chain", "init", "--validator", validators[0], "--out", out)
    before = out.read_bytes()
    refused = dn("chain", "init", "--validator", validators[1], "--out", out, code=2)
    assert said(refused) == f"error: {out} exists already; use --force to overwrite it"
    assert out.read_bytes() == before
    second = dn_json("chain", "init", "--validator", validators[1], "--out", out, "--force")
    assert second["chain_id"] != first["chain_id"]
    assert Genesis.load(out).validators == [validators[1]]


BAD_INIT = [
    pytest.param(
        ["--validator", "MISTYPED", "--out", "OUT"],
        2,
        "--validator: invalid address 'MISTYPED': checksum mismatch (a typo?)",
        id="mistyped-validator",
    ),
    pytest.param(
        ["--validator", "V0", "--validator", "alice", "--out", "OUT"],
        2,
        "--validator: invalid address 'alice': wrong length or missing separator",
        id="validator-not-an-address",
    ),
    pytest.param(
        ["--validator", "UPPER", "--out", "OUT"],
        2,
        "--validator: invalid address 'UPPER': mixed case",
        id="validator-mixed-case",
    ),
    pytest.param(
        ["--out", "OUT"],
        2,
        "give --validator ADDRESS for each validator (their 'dn node address'), "
        "or --dev for a single-validator chain on this node",
        id="no-validator",
    ),
    pytest.param(
        ["--validator", "V0"],
        2,
        "give --out FILE: where to write the genesis file",
        id="no-out",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--param", "block_size=5"],
        2,
        f"unknown genesis parameter 'block_size'; known parameters: {', '.join(PARAMS)}",
        id="unknown-param",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--param", "block_time_ms=49"],
        2,
        "genesis parameter block_time_ms must be an integer from 50 to 600000, got 49",
        id="param-below-range",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--param", "fee_burn_share=10001"],
        2,
        "genesis parameter fee_burn_share must be an integer from 0 to 10000, got 10001",
        id="param-above-range",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--param", "min_fee=-1"],
        2,
        f"genesis parameter min_fee must be an integer from 0 to {PARAMS['min_fee'][2]}, got -1",
        id="param-negative",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--param", "block_time_ms=0.5"],
        2,
        "--param block_time_ms wants an integer, got '0.5'",
        id="param-not-an-integer",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--param", "block_time_ms"],
        2,
        "--param wants NAME=VALUE, got 'block_time_ms'",
        id="param-without-value",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--param", "=5"],
        2,
        "--param wants NAME=VALUE, got '=5'",
        id="param-without-name",
    ),
    pytest.param(
        [
            "--validator",
            "V0",
            "--out",
            "OUT",
            "--param",
            "block_time_ms=200",
            "--block-time-ms",
            "300",
        ],
        2,
        "block_time_ms is given twice: --block-time-ms 300 and --param block_time_ms=200",
        id="param-given-twice",
    ),  # fmt: skip
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--alloc", "MISTYPED=5"],
        2,
        "invalid address 'MISTYPED': checksum mismatch (a typo?)",
        id="alloc-mistyped-address",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--alloc", "ghost=5"],
        3,
        "no wallet named 'ghost' in HOME/wallets",
        id="alloc-unknown-wallet",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--alloc", "V0=-1"],
        2,
        "amount must not be negative",
        id="alloc-negative",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--alloc", "V0"],
        2,
        "--alloc wants NAME_OR_ADDRESS=AMOUNT, got 'V0'",
        id="alloc-without-amount",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "OUT", "--network", "Lab Net"],
        4,
        "network must be lowercase letters, digits and '-', at most 32",
        id="bad-network",
    ),
    pytest.param(
        ["--validator", "V0", "--out", "TMP"],
        2,
        "--out TMP is a folder: give a file name",
        id="out-is-a-folder",
    ),
    pytest.param(
        ["--dev", "--validator", "V0"],
        2,
        "--dev makes a chain whose one validator is this node: leave out --validator, "
        "or leave out --dev to write a genesis file for several validators",
        id="dev-with-validator",
    ),
    pytest.param(
        ["--dev", "--out", "OUT"],
        2,
        "--dev writes the genesis into this node's folder: leave out --out, "
        "or leave out --dev to write a genesis file for several validators",
        id="dev-with-out",
    ),
    pytest.param(
        ["--dev", "--param", "max_block_txs=0"],
        2,
        "genesis parameter max_block_txs must be an integer from 1 to 100000, got 0",
        id="dev-param-out-of-range",
    ),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_INIT)
def test_bad_init_is_refused_and_writes_nothing(dn_home, tmp_path, args, code, message):
    v0 = Keypair.generate().address
    names = {
        "OUT": str(tmp_path / "out" / "genesis.json"),
        "TMP": str(tmp_path),
        "V0": v0,
        "MISTYPED": mistype(v0, at=20),
        "UPPER": v0[:10] + v0[10:].upper(),
        "HOME": str(dn_home),
    }

    def fill(text: str) -> str:
        for placeholder, value in names.items():
            text = text.replace(placeholder, value)
        return text

    before = written_files(tmp_path)
    result = dn("chain", "init", *[fill(a) for a in args], code=code)
    assert said(result) == f"error: {fill(message)}"
    assert result.stdout == ""
    assert written_files(tmp_path) == before  # no genesis, no temp file, no node key or store


# --- dn chain init --dev -------------------------------------------------------------------


def test_dev_init_takes_params_and_prints_what_it_did(dn_home):
    address = node_address()
    result = dn("chain", "init", "--dev", "--param", "block_time_ms=200", "--network", "home-lab")
    home = dn_home / "nodes" / "default"
    genesis = Genesis.load(home / "genesis.json")
    assert result.stdout == (
        f"chain {genesis.chain_id} ready in {home}\n"
        f"validator (this node): {address}\n"
        "start it with: dn node start\n"
    )
    assert genesis.validators == [address] and genesis.network == "home-lab"
    assert genesis.doc["params"] == default_params(block_time_ms=200)
    assert (home / "chain.sqlite").exists()


def test_dev_init_json_keeps_its_shape(dn_home):
    data = dn_json("chain", "init", "--dev", "--block-time-ms", "200", "--param", "min_fee=5")
    genesis_file = dn_home / "nodes" / "default" / "genesis.json"
    genesis = Genesis.load(genesis_file)
    assert data == {
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.hash,
        "genesis_file": str(genesis_file),
        "validator": node_address(),
        "allocations": {},
    }
    assert genesis.doc["params"] == default_params(block_time_ms=200, min_fee=5)


# --- help ----------------------------------------------------------------------------------


def _command(group: str, name: str) -> Any:
    root: Any = typer.main.get_command(app)
    return root.commands[group].commands[name]


@pytest.mark.parametrize(("group", "name"), [("chain", "init"), ("node", "address")])
def test_every_option_has_help(group, name):
    command = _command(group, name)
    options = [p for p in command.params if p.param_type_name == "option"]
    assert options
    for option in options:
        assert option.help, f"dn {group} {name} {option.opts[0]} has no help text"
    out = said(dn(group, name, "--help"))
    for option in options:
        assert option.opts[0] in out


def test_init_help_names_every_genesis_parameter():
    out = said(dn("chain", "init", "--help"))
    for name in ("--validator", "--out", "--param", "--force", "dn node address"):
        assert name in out
    for param in PARAMS:
        assert param in out
