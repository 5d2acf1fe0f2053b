"""Genesis parameters checked against their ranges, and genesis files that round-trip exactly."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dn.chain.genesis import PARAMS, Genesis, checked_params, default_params
from dn.errors import GenesisError, InputError
from dn.wallet.keys import Keypair

VALIDATORS = [Keypair.from_seed(bytes([i]) * 32).address for i in range(3)]


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
    assert checked_params({name: low})[name] == low
    assert checked_params({name: high})[name] == high


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
            assert build(**{name: value}).param(name) == value


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
        },
    ),
    validators=st.lists(st.sampled_from(VALIDATORS), min_size=1, unique=True),
    time_ms=st.integers(min_value=0, max_value=2**53),
)
def test_any_valid_genesis_round_trips(params, validators, time_ms):
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
