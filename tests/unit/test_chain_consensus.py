"""The Clique-style rules as pure functions, and the signing rule enforced by apply_block."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dn.chain import consensus
from dn.chain.genesis import Genesis
from dn.chain.ledger import DictState
from dn.chain.state import apply_block, build_block, genesis_block, genesis_state
from dn.chain.types import Block
from dn.errors import InvalidBlock
from dn.wallet.keys import Keypair

KEYS = sorted((Keypair.generate() for _ in range(4)), key=lambda k: k.address)


def test_in_turn_rotates_through_sorted_validators():
    vals = ["a", "b", "c"]
    assert [consensus.in_turn(vals, h) for h in range(1, 7)] == ["b", "c", "a", "b", "c", "a"]
    assert consensus.difficulty(vals, 1, "b") == 2
    assert consensus.difficulty(vals, 1, "a") == 1


@pytest.mark.parametrize(
    ("n", "recent", "proposer", "allowed"),
    [
        (1, ["a"], "a", True),  # one validator alone is a valid network
        (2, ["a"], "a", False),  # window of 2: never two in a row
        (3, ["a", "b"], "a", True),  # floor(3/2)+1 = 2: only the last block counts
        (3, ["b", "a"], "a", False),
        (4, ["a", "b"], "a", False),  # floor(4/2)+1 = 3: the last two count
        (4, ["a", "b", "c"], "a", True),
    ],
)
def test_may_sign(n, recent, proposer, allowed):
    assert consensus.may_sign(recent, proposer, n) is allowed


@given(st.integers(1, 9), st.lists(st.integers(0, 8), max_size=60))
def test_accepted_sequences_never_repeat_within_the_window(n, picks):
    """Whatever order validators try to sign in, the accepted chain obeys floor(n/2)+1."""
    recent: list[str] = []
    chain: list[str] = []
    for pick in picks:
        proposer = f"v{pick % n}"
        if consensus.may_sign(recent, proposer, n):
            chain.append(proposer)
            recent = consensus.remember(recent, proposer, n)
    window = n // 2 + 1
    for i in range(len(chain)):
        part = chain[i : i + window]
        assert len(part) == len(set(part))


@given(
    st.tuples(st.integers(0, 100), st.text("0123456789abcdef", min_size=4, max_size=4)),
    st.tuples(st.integers(0, 100), st.text("0123456789abcdef", min_size=4, max_size=4)),
)
def test_fork_choice_is_a_strict_order(a, b):
    if a == b:
        assert not consensus.prefer(a, b)
    else:
        assert consensus.prefer(a, b) != consensus.prefer(b, a)
    if a[0] > b[0]:
        assert consensus.prefer(a, b)


def test_finality_needs_more_than_two_thirds_of_signers_on_top():
    vals = ["a", "b", "c", "d"]
    chain = [(1, "a"), (2, "b"), (3, "c")]
    assert consensus.final_height(chain, vals) == 0  # at most 2 distinct signers above any block
    chain.append((4, "d"))
    assert consensus.final_height(chain, vals) == 1  # b, c, d signed on top of block 1: 3 > 8/3
    assert consensus.final_height([(1, "a"), (2, "a")], ["a"]) == 1


@given(st.lists(st.integers(0, 4), max_size=40))
def test_finality_never_moves_back_as_the_chain_grows(picks):
    vals = [f"v{i}" for i in range(5)]
    chain: list[tuple[int, str]] = []
    last = 0
    for height, pick in enumerate(picks, start=1):
        chain.append((height, vals[pick]))
        now = consensus.final_height(chain, vals)
        assert now >= last
        last = now


def test_out_of_turn_delay_is_after_the_block_time_and_bounded():
    rng = random.Random(7)
    delays = [consensus.out_of_turn_delay_ms(rng, 4, 1000) for _ in range(200)]
    assert min(delays) >= 1000
    assert max(delays) < 1000 + 3 * consensus.OUT_OF_TURN_WIGGLE_MS


def _three_validator_chain():
    keys = KEYS[:3]
    genesis = Genesis.build(
        network="devnet", time_ms=1000, validators=[k.address for k in keys], allocations={}
    )
    by_address = {k.address: k for k in keys}
    return genesis, by_address


def test_apply_block_refuses_a_validator_signing_twice_in_a_row():
    genesis, keys = _three_validator_chain()
    state = DictState(genesis_state(genesis))
    parent = genesis_block(genesis)
    first = keys[consensus.in_turn(genesis.validators, 1)]
    applied, _ = build_block(state, parent.header, parent.hash, [], first, 2000, genesis)
    state.update(apply_block(state, parent.header, parent.hash, applied.block, genesis).changes)
    # The same validator again, out of turn: build_block itself refuses …
    with pytest.raises(InvalidBlock) as built:
        build_block(state, applied.block.header, applied.block.hash, [], first, 3000, genesis)
    assert built.value.reason == "signed-recently"
    # … and a hand-made block from it is rejected by every node, leaving the state as it was.
    header = dataclasses.replace(
        applied.block.header,
        height=2,
        prev=applied.block.hash,
        time=3000,
        difficulty=consensus.difficulty(genesis.validators, 2, first.address),
    )
    forged = Block.seal(header, [], first)
    before = dict(state.data)
    with pytest.raises(InvalidBlock) as caught:
        apply_block(state, applied.block.header, applied.block.hash, forged, genesis)
    assert caught.value.reason == "signed-recently"
    assert state.data == before
    # The next validator may sign it.
    second = keys[consensus.in_turn(genesis.validators, 2)]
    ok, _ = build_block(state, applied.block.header, applied.block.hash, [], second, 3000, genesis)
    apply_block(state, applied.block.header, applied.block.hash, ok.block, genesis)
