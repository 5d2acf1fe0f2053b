"""The validator set on the pure state machine (dn/chain/validators.py): `validator.bond` joins
at the next epoch boundary, `validator.unbond` leaves at one, the set decides who may propose
which block, and a bonded validator's weight and its bond are accounted for to the unit."""

from __future__ import annotations

import pytest

from dn.chain.explain import explain_blocks
from dn.chain.powr_rules import validator_stakes
from dn.chain.state import apply_block, build_block, supply_holds
from dn.chain.types import Block, Tx
from dn.chain.validators import VALIDATORS, active
from dn.errors import InvalidBlock
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import CREATOR, DN, OTHER, UNBONDING, Chain, new_chain
from tests.unit.test_chain_state import V, assert_rejected

E = 4  # epoch_blocks: epoch 0 is heights 1-4, epoch 1 is 5-8, …
MIN = 10 * DN
NEW = OTHER  # funded with 100 DN


class SetChain(Chain):
    """A Chain whose blocks may come from any validator, and that keeps them."""

    blocks: list[Block]

    def produce(self, proposer: Keypair, txs: list[Tx] | None = None) -> Block:
        parent = self.tip
        applied, rejected = build_block(
            self.state,
            parent.header,
            parent.hash,
            txs or [],
            proposer,
            parent.header.time + 1000,
            self.genesis,
        )
        assert rejected == []
        checked = apply_block(self.state, parent.header, parent.hash, applied.block, self.genesis)
        assert checked.changes == applied.changes
        self.state.update(applied.changes)
        self.tip = applied.block
        self.mempool.reset(
            self.state,
            [t.id for t in applied.block.txs],
            tip_height=self.tip.height,
            tip_hash=self.tip.hash,
        )
        self.blocks.append(applied.block)
        assert supply_holds(self.state.items())
        return applied.block

    def produce_in_turn(self, txs: list[Tx] | None = None) -> Block:
        members = active(self.state, self.genesis)
        height = self.tip.height + 1
        keys = {V.address: V, NEW.address: NEW}
        return self.produce(keys[members[height % len(members)]], txs)

    def run_to(self, height: int) -> None:
        while self.tip.height < height:
            self.produce_in_turn()


@pytest.fixture
def chain() -> SetChain:
    base = new_chain(epoch_blocks=E, validator_min_bond=MIN)
    chain = SetChain(base.genesis, base.state, base.mempool, base.tip)
    chain.blocks = []
    return chain


def bond(chain: Chain, amount: int, kp: Keypair = NEW) -> Tx:
    return chain.send(kp, "validator.bond", {"amount": amount})


def unbond(chain: Chain, amount: int, kp: Keypair = NEW) -> Tx:
    return chain.send(kp, "validator.unbond", {"amount": amount})


def test_a_bonded_validator_joins_at_the_next_epoch_and_takes_turns(chain: SetChain) -> None:
    assert_rejected(chain, bond(chain, MIN - 1), "bond-too-low")
    before = chain.balance(NEW)
    tx = bond(chain, MIN)
    chain.produce(V, [tx])  # height 1, epoch 0
    assert chain.balance(NEW) == before - MIN - tx.fee
    assert chain.state.get("validator:" + NEW.address)["joins"] == 1
    assert active(chain.state, chain.genesis) == [V.address]
    chain.run_to(4)  # the rest of epoch 0: V alone
    with pytest.raises(InvalidBlock) as refused:
        chain.produce(NEW)
    assert refused.value.reason == "not-validator"
    chain.produce(V)  # height 5: epoch 1 starts; its set changes at the start of this block
    members = sorted([V.address, NEW.address])
    assert chain.state.get(VALIDATORS) == members
    record = chain.state.get("validator:" + NEW.address)
    assert record["joins"] is None and record["bond"] == MIN
    proposers = [chain.produce_in_turn().header for _ in range(4)]
    assert {h.proposer for h in proposers} == set(members)
    assert all(h.difficulty == 2 for h in proposers)  # each in turn
    stakes = validator_stakes(chain.state, chain.genesis)
    assert stakes == {V.address: chain.genesis.param("validator_base_weight"), NEW.address: MIN}


def test_a_validator_may_not_sign_two_blocks_in_a_row_once_there_are_two(chain: SetChain) -> None:
    chain.produce(V, [bond(chain, MIN)])
    chain.run_to(6)
    last = chain.tip.header.proposer
    again = V if last == V.address else NEW
    with pytest.raises(InvalidBlock) as refused:
        chain.produce(again)
    assert refused.value.reason == "signed-recently"


def test_unbonding_everything_leaves_at_the_next_epoch_and_returns_the_bond(
    chain: SetChain,
) -> None:
    chain.produce(V, [bond(chain, MIN + 5 * DN)])
    chain.run_to(5)
    assert_rejected(chain, unbond(chain, MIN + 6 * DN), "insufficient-bond")
    assert_rejected(chain, unbond(chain, 6 * DN), "bond-too-low")  # would leave 9 DN
    assert_rejected(chain, unbond(chain, DN, kp=CREATOR), "not-bonded")
    chain.produce_in_turn([unbond(chain, 5 * DN)])  # partial: stays
    at = chain.produce_in_turn([unbond(chain, MIN)]).header.height  # epoch 1: leaves at epoch 2
    assert chain.state.get("validator:" + NEW.address)["leaves"] == 2
    assert chain.state.get(f"unlock:{at + UNBONDING}") == [
        {"address": NEW.address, "amount": MIN, "what": "validator-bond"}
    ]
    assert_rejected(chain, bond(chain, MIN), "leaving")
    chain.run_to(9)  # height 9: epoch 2's first block
    assert active(chain.state, chain.genesis) == [V.address]
    assert chain.state.get("validator:" + NEW.address)["left"] == 2
    chain.run_to(at + UNBONDING)
    assert chain.state.get(f"unlock:{at + UNBONDING}") is None
    explained = explain_blocks(chain.genesis, chain.blocks, NEW.address)
    assert explained.unexplained == 0
    assert [e.amount for e in explained.entries if e.kind == "validator-bond"] == [-MIN - 5 * DN]
    assert [e.amount for e in explained.entries if e.kind == "bond-returned"] == [5 * DN, MIN]


def test_a_join_not_yet_applied_can_be_called_off(chain: SetChain) -> None:
    chain.produce(V, [bond(chain, MIN)])
    chain.produce(V, [unbond(chain, MIN)])
    assert chain.state.get("validator-changes:1") is None
    chain.run_to(5)
    assert active(chain.state, chain.genesis) == [V.address]


def test_delegating_to_a_bonded_validator_adds_to_its_weight(chain: SetChain) -> None:
    chain.produce(V, [bond(chain, MIN)])
    stake = chain.send(CREATOR, "stake", {"target": NEW.address, "amount": 3 * DN})
    stranger = Keypair.from_seed(b"nobody".ljust(32, b"."))
    assert_rejected(
        chain,
        chain.send(CREATOR, "stake", {"target": stranger.address, "amount": DN}),
        "not-validator",
    )
    chain.produce(V, [stake])
    chain.run_to(5)
    assert validator_stakes(chain.state, chain.genesis)[NEW.address] == MIN + 3 * DN


def test_a_genesis_validator_may_bond_more_weight_but_never_leaves(chain: SetChain) -> None:
    chain.produce(V, [chain.send(CREATOR, "transfer", {"to": V.address, "amount": 2 * DN})])
    chain.produce(V, [bond(chain, DN, kp=V)])  # below the minimum: it is in the set already
    base = chain.genesis.param("validator_base_weight")
    assert validator_stakes(chain.state, chain.genesis) == {V.address: base + DN}
    chain.produce(V, [unbond(chain, DN, kp=V)])
    chain.run_to(9)
    assert active(chain.state, chain.genesis) == [V.address]
