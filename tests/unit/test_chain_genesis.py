"""Genesis parameters checked against their ranges, and genesis files that round-trip exactly."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dn.chain.genesis import (
    FEE_SPLIT,
    PARAMS,
    POWR_SHARES,
    Genesis,
    checked_params,
    default_params,
)
from dn.errors import GenesisError, InputError
from dn.wallet.keys import Keypair

VALIDATORS = [Keypair.from_seed(bytes([i]) * 32).address for i in range(3)]


def balanced(name: str, value: int) -> dict[str, int]:
    """`{name: value}`, plus, for a share of a whole (the fee split, the PoWR model shares),
    another share of that whole that keeps it at 10,000."""
    group = next((g for g in (FEE_SPLIT, POWR_SHARES) if name in g), None)
    if group is None:
        return {name: value}
    partner = group[-1] if name != group[-1] else group[0]
    others = {n: 0 for n in group if n not in (name, partner)}
    return {**others, name: value, partner: 10_000 - value}


def build(**params: int) -> Genesis:
    return Genesis.build(
        network="lan",
        time_ms=1_700_000_000_000,
        validators=VALIDATORS,
        allocations={VALIDATORS[0]: 5},
        params=checked_params(params),
    )


# --- checked_params ------------------------------------------------------------------------


def test_checked_params_fills_in_the_defaults():
    assert checked_params({}) == default_params()
    assert checked_params({"block_time_ms": 200}) == default_params(block_time_ms=200)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_checked_params_takes_both_ends_of_each_range(name):
    _, low, high = PARAMS[name]
    assert checked_params(balanced(name, low))[name] == low
    assert checked_params(balanced(name, high))[name] == high


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_checked_params_refuses_one_past_each_end(name):
    _, low, high = PARAMS[name]
    for value in (low - 1, high + 1):
        with pytest.raises(InputError) as caught:
            checked_params({name: value})
        assert caught.value.message == (
            f"genesis parameter {name} must be an integer from {low} to {high}, got {value}"
        )
        assert caught.value.exit_code == 2


def test_checked_params_refuses_unknown_names_and_non_integers():
    with pytest.raises(InputError, match="unknown genesis parameter 'block_size'; known"):
        checked_params({"block_size": 5})
    with pytest.raises(InputError, match="block_time_ms must be an integer from 50"):
        checked_params({"block_time_ms": True})
    with pytest.raises(InputError, match="block_time_ms must be an integer from 50"):
        checked_params({"block_time_ms": 200.0})


def test_every_checked_param_set_is_a_valid_genesis():
    """What checked_params lets through, Genesis validation accepts (the two ranges agree)."""
    for name, (_, low, high) in PARAMS.items():
        for value in (low, high):
            assert build(**balanced(name, value)).param(name) == value


# --- save and load -------------------------------------------------------------------------


def test_save_then_load_gives_the_same_chain(tmp_path):
    genesis = build(block_time_ms=200)
    path = tmp_path / "sub" / "genesis.json"
    genesis.save(path)
    loaded = Genesis.load(path)
    assert loaded.doc == genesis.doc
    assert (loaded.hash, loaded.chain_id) == (genesis.hash, genesis.chain_id)
    assert loaded.chain_id == f"lan-{genesis.hash[:12]}"
    assert [p.name for p in path.parent.iterdir()] == ["genesis.json"]  # no temp file left


def test_save_replaces_a_file_whole(tmp_path):
    path = tmp_path / "genesis.json"
    build(block_time_ms=200).save(path)
    replacement = build(block_time_ms=300)
    replacement.save(path)
    assert Genesis.load(path).hash == replacement.hash
    assert [p.name for p in tmp_path.iterdir()] == ["genesis.json"]


def test_a_failed_save_leaves_nothing_behind(tmp_path):
    path = tmp_path / "genesis.json"
    path.mkdir()  # a folder where the file should go
    with pytest.raises(OSError):
        build().save(path)
    assert path.is_dir() and list(path.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["genesis.json"]


def test_an_edited_file_is_another_chain_or_refused(tmp_path):
    path = tmp_path / "genesis.json"
    genesis = build()
    genesis.save(path)
    doc = json.loads(path.read_text())
    doc["params"]["block_time_ms"] = 999
    path.write_text(json.dumps(doc))
    assert Genesis.load(path).chain_id != genesis.chain_id
    doc["params"]["block_time_ms"] = 1  # below its range
    path.write_text(json.dumps(doc))
    with pytest.raises(GenesisError, match="param block_time_ms must be an integer from 50"):
        Genesis.load(path)


@settings(max_examples=40, deadline=None)
@given(
    params=st.fixed_dictionaries(
        {},
        optional={
            name: st.integers(min_value=low, max_value=high)
            for name, (_, low, high) in PARAMS.items()
            if name not in FEE_SPLIT and name not in POWR_SHARES
        },
    ),
    split=st.lists(st.integers(min_value=0, max_value=10_000), min_size=5, max_size=5).map(
        lambda cuts: sorted(cuts)
    ),
    powr_split=st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=2).map(
        lambda cuts: sorted(cuts)
    ),
    validators=st.lists(st.sampled_from(VALIDATORS), min_size=1, unique=True),
    time_ms=st.integers(min_value=0, max_value=2**53),
)
def test_any_valid_genesis_round_trips(params, split, powr_split, validators, time_ms):
    for names, cuts in ((FEE_SPLIT, split), (POWR_SHARES, powr_split)):
        bounds = [0, *cuts, 10_000]
        params.update({name: bounds[i + 1] - bounds[i] for i, name in enumerate(names)})
    genesis = Genesis.build(
        network="lan",
        time_ms=time_ms,
        validators=validators,
        allocations={},
        params=checked_params(params),
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "genesis.json"
        genesis.save(path)
        loaded = Genesis.load(path)
    assert (loaded.doc, loaded.chain_id) == (genesis.doc, genesis.chain_id)
    assert loaded.validators == sorted(validators)


# --- the fee split and parameters added later ------------------------------------------------


def test_default_fee_split_is_a_whole():
    assert sum(default_params()[name] for name in FEE_SPLIT) == 10_000


@pytest.mark.parametrize(("name", "delta"), [("fee_split_burn", 1), ("fee_split_creator", -1)])
def test_a_fee_split_that_is_not_a_whole_is_refused(name, delta):
    value = default_params()[name] + delta
    with pytest.raises(InputError) as caught:
        checked_params({name: value})
    assert caught.value.message == (
        f"genesis parameters: the fee_split_* shares must sum to 10000 basis points, "
        f"got {10_000 + delta}"
    )
    doc = build().doc
    doc["params"][name] = value
    with pytest.raises(GenesisError, match="fee_split_\\* shares must sum to 10000 basis points"):
        Genesis.from_json(doc)


def test_a_genesis_written_before_a_parameter_existed_still_loads(tmp_path):
    """A file without the newer parameters keeps its hash and chain id, and reads defaults."""
    older = ("block_time_ms", "max_block_interval_ms", "max_future_ms", "max_block_txs")
    older += ("min_fee", "fee_burn_share")
    doc = build(block_time_ms=200).doc
    doc["params"] = {name: doc["params"][name] for name in older}
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(doc))
    loaded = Genesis.load(path)
    assert loaded.doc == doc and loaded.chain_id == f"lan-{loaded.hash[:12]}"
    assert loaded.param("block_time_ms") == 200
    assert loaded.param("miner_min_bond") == 10 * 10**9
    assert loaded.param("ticket_window_blocks") == PARAMS["ticket_window_blocks"][0]
    assert loaded.params == default_params(block_time_ms=200)
    assert (loaded.param("jail_max_missed_bps"), loaded.param("jail_slash_bps")) == (5_000, 100)


def test_unknown_params_in_a_file_are_refused():
    doc = build().doc
    doc["params"]["block_size"] = 5
    with pytest.raises(GenesisError, match="unknown params \\['block_size'\\]"):
        Genesis.from_json(doc)
