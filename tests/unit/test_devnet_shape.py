"""The devnet's shape: the options that make one devnet chain different from another, their
checks, and records written before an option existed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dn.errors import InputError
from dn.node.devnet import IDLE_INTERVAL_MS, Record, Shape, prepare


def test_epoch_length_and_idle_interval_default_and_are_checked() -> None:
    shape = Shape.check(3, 1, 1000)
    assert (shape.epoch_blocks, shape.idle_ms) == (100, IDLE_INTERVAL_MS)
    assert Shape.check(3, 1, 1000, 0, 30, 1000).idle_ms == 1000
    assert Shape.check(3, 1, 8000, 0, 30, 1000).idle_ms == 8000  # never below the block time
    with pytest.raises(InputError, match="--epoch-blocks must be from 4"):
        Shape.check(3, 1, 1000, 0, 3)
    with pytest.raises(InputError, match="--idle-interval must be from 1000"):
        Shape.check(3, 1, 100, 0, 30, 200)


def test_a_record_from_before_these_options_reads_with_what_that_devnet_had() -> None:
    doc = {"format": 1, "nodes": 3, "validators": 3, "block_time_ms": 1000,
           "genesis_hash": "ab" * 32, "chain_id": "devnet-x"}  # fmt: skip
    record = Record.from_json(doc)
    assert record.shape == Shape.check(3, 3, 1000)
    assert Record.from_json(record.to_json()) == record
    with pytest.raises(ValueError, match="malformed epoch_blocks"):
        Record.from_json({**doc, "epoch_blocks": "30"})


def test_the_options_reach_the_genesis_and_a_new_epoch_length_is_a_new_chain(
    tmp_path: Path,
) -> None:
    first = prepare(tmp_path, nodes=1, epoch_blocks=30, idle_ms=1000)
    assert first.genesis.param("epoch_blocks") == 30
    assert first.genesis.param("max_block_interval_ms") == 1000
    again = prepare(tmp_path, nodes=1)  # unchanged options: the stored devnet, resumed
    assert again.resumed and again.genesis.hash == first.genesis.hash
    other = prepare(tmp_path, nodes=1, epoch_blocks=40)
    assert not other.resumed and other.genesis.param("epoch_blocks") == 40
    assert other.genesis.param("max_block_interval_ms") == 1000  # kept from the stored one


def test_miners_without_validators_leave_the_other_nodes_validating() -> None:
    """The README's `dn devnet up --nodes 3 --miners 2` was refused (`--miners must be from 0 to
    0`): by default every node that does not mine is a validator."""
    shape = Shape.check(3, None, 1000, miners=2)
    assert (shape.nodes, shape.validators, shape.miners) == (3, 1, 2)
    assert Shape.check(3, None, 1000).validators == 3  # no miners: all validate, as before
    with pytest.raises(InputError, match="--miners must be from 0 to 0"):
        Shape.check(3, 3, 1000, miners=2)  # validators asked for explicitly: still checked
