"""Verdicts by quorum (dn/chain/disputes.py; THREATS.md, "Verdicts with evidence or quorum").

A `task.verdict` is one validator's vote. The ruling applies only in the block where validators
holding `dispute_quorum_bps` of the voice of the validators that may vote (the active set less
the task's parties) have voted for the same faults; a validator that is the task's consumer,
generator or checker may not vote; an empty vote is a vote like any other; and once a ruling
applies, each validator whose vote disagreed loses `verdict_slash_bps` of its bond.

The chain is test_chain_powr's, with three genesis validators of one voice each, so a ruling
needs two of them (two thirds of the voice; one third is below the quorum). Every block checks
the supply invariant, and each story ends by replaying its blocks from genesis and explaining
every address's balance to the unit.
"""

from __future__ import annotations

from typing import Any

import pytest

from dn.chain import disputes, escrow
from dn.chain.explain import explain_blocks
from dn.chain.ledger import POOL_VALIDATORS, DictState
from dn.chain.state import apply_block, genesis_block, genesis_state, supply_holds
from dn.chain.tasks import eligible_miners, task_id
from dn.chain.types import Tx
from dn.wallet.keys import Keypair
from tests.unit.test_chain_disputes import new_chain as single_chain
from tests.unit.test_chain_disputes import with_escrow
from tests.unit.test_chain_models import BOND, CONSUMER, DN, FUNDED, M1, M2, SMOL, Chain
from tests.unit.test_chain_powr import V0, V1, V2, VALS, PowrChain
from tests.unit.test_chain_powr import new_chain as powr_chain
from tests.unit.test_chain_state import V, assert_rejected
from tests.unit.test_chain_tasks import PRICE, attest, book, pair, settle, ticket

EVIDENCE = "ab" * 32
SLASH = BOND * 2_000 // 10_000  # a miner at fault: the default slash_bps of its bond
VALIDATOR_BOND = 50 * DN
LIAR_LOSS = VALIDATOR_BOND * 100 // 10_000  # the default verdict_slash_bps of its bond
KEYS = {kp.address: kp for kp in (*FUNDED, *VALS)}


def new_market(**params: int) -> PowrChain:
    """Three validators; SMOL registered at height 1; M1 and M2 serve it from height 2. Long
    epochs and a 20-block window, so no epoch closes and no window ends unless a test says so."""
    chain = powr_chain(**{"epoch_blocks": 100, "unbonding_blocks": 20, **params})
    chain.commit([chain.register_model(price=PRICE)])
    chain.commit([chain.register_miner(M1), chain.register_miner(M2)])
    return chain


def settled(
    chain: PowrChain, verdict: str, consumer: Keypair = CONSUMER, nonce: int = 0
) -> tuple[str, Keypair, Keypair]:
    """Settle one task with the checker's `verdict`; (task id, generator, checker). A consumer
    without the escrow its ticket's book reserves (DN) deposits it first."""
    if escrow.available(chain.state, consumer.address) < DN:
        with_escrow(chain, consumer)
    t = ticket(chain, consumer=consumer, nonce=nonce)
    tid = task_id(chain.genesis.chain_id, t)
    picked = pair(chain, t)
    gen, chk = KEYS[picked[0]], KEYS[picked[1]]
    chain.commit([settle(chain, t, attest(chain, t, verdict=verdict, miners=(gen, chk)))])
    return tid, gen, chk


def vote(chain: Chain, kp: Keypair, task: str, faults: dict[str, str], **kw: Any) -> Tx:
    payload = {"task": task, "faults": faults, "evidence": EVIDENCE}
    return chain.send(kp, "task.verdict", payload, **kw)


def bond(chain: PowrChain, kp: Keypair) -> int:
    return int(chain.state.get("miner:" + kp.address)["bond"])


def validator_bond(chain: PowrChain, kp: Keypair) -> int:
    found = chain.state.get("validator:" + kp.address)
    return int(found["bond"]) if found else 0


def pool(chain: PowrChain) -> int:
    found = chain.state.get(POOL_VALIDATORS)
    return int(found["balance"]) if found else 0


def burned(chain: PowrChain) -> int:
    return int(chain.state.get("supply")["burned"])


def fee_burn(chain: PowrChain, txs: list[Tx]) -> int:
    return sum(t.fee * chain.genesis.param("fee_burn_share") // 10_000 for t in txs)


def verdict_of(chain: PowrChain, task: str) -> dict[str, Any] | None:
    return chain.state.get("task:" + task).get("verdict")  # type: ignore[no-any-return]


def assert_replays_and_explains(chain: PowrChain) -> None:
    """Every block replays from genesis to the same state, the supply invariant holds, and every
    address's balance is explained to the unit."""
    state = DictState(genesis_state(chain.genesis))
    parent = genesis_block(chain.genesis)
    for block in chain.blocks:
        applied = apply_block(state, parent.header, parent.hash, block, chain.genesis)
        state.update(applied.changes)
        parent = block
    assert state.data == chain.state.data
    assert supply_holds(state.items())
    for address in KEYS:
        assert explain_blocks(chain.genesis, chain.blocks, address).unexplained == 0, address


# --- (a) a party to the task may not vote ---------------------------------------------------


def test_a_validator_that_was_the_consumer_cannot_slash_the_generator() -> None:
    """The measured attack: a validator that paid for an honest answer calls it invalid to get
    its price back and knock the generator out of service."""
    chain = new_market()
    chain.commit([chain.send(V0, "escrow.deposit", {"amount": DN})])  # what pays its query
    task, gen, _ = settled(chain, "confirmed", consumer=V0)
    assert_rejected(chain, vote(chain, V0, task, {gen.address: disputes.INVALID_ANSWER}), "party")
    assert bond(chain, gen) == BOND and verdict_of(chain, task) is None
    # The validators that are not parties rule, and they hold the whole voice that counts.
    chain.commit([vote(chain, V1, task, {})])
    assert verdict_of(chain, task) is None  # one of the two: half, not more
    chain.commit([vote(chain, V2, task, {})])
    verdict = verdict_of(chain, task)
    assert verdict is not None and verdict["faults"] == {}
    assert verdict["by"] == sorted([V1.address, V2.address])
    assert bond(chain, gen) == BOND
    assert gen.address in eligible_miners(chain.state, SMOL, chain.tip.height)
    assert_replays_and_explains(chain)


@pytest.mark.parametrize("role", ["generator", "checker"])
def test_a_validator_that_worked_on_the_task_cannot_vote_on_it(role: str) -> None:
    chain = new_market()
    chain.commit([chain.register_miner(V1)])  # V1 also mines: M1, M2 and V1 serve SMOL
    height = book(chain, slots=32)  # each slot a fair draw: one whose generator or checker is V1
    for slot in range(32):
        t = ticket(chain, nonce=slot, ref_height=height)
        tid = task_id(chain.genesis.chain_id, t)
        picked = pair(chain, t)
        if picked[0 if role == "generator" else 1] == V1.address:
            break
    else:
        raise AssertionError(f"no slot of 32 draws V1 as the {role}")
    gen, chk = KEYS[picked[0]], KEYS[picked[1]]
    chain.commit([settle(chain, t, attest(chain, t, verdict="rejected", miners=(gen, chk)))])
    other = chk if role == "generator" else gen
    fault = disputes.REJECTED_VALID if other is chk else disputes.INVALID_ANSWER
    assert_rejected(chain, vote(chain, V1, tid, {other.address: fault}), "party")


# --- (b) an empty vote is a vote, not a closed task -----------------------------------------


def test_an_empty_vote_sent_first_does_not_close_the_task() -> None:
    chain = new_market()
    task, gen, chk = settled(chain, "rejected")
    chain.commit([vote(chain, V0, task, {})])
    assert verdict_of(chain, task) is None
    honest = {gen.address: disputes.INVALID_ANSWER}
    chain.commit([vote(chain, V1, task, honest)])  # one third for each: no ruling yet
    assert verdict_of(chain, task) is None and bond(chain, gen) == BOND
    pool_before, burned_before = pool(chain), burned(chain)
    last = vote(chain, V2, task, honest)
    chain.commit([last])  # two thirds: the quorum, the ruling applies in this block
    verdict = verdict_of(chain, task)
    assert verdict == {
        "by": sorted([V1.address, V2.address]),
        "height": chain.tip.height,
        "faults": honest,
        "slashed": {gen.address: SLASH},
        "forfeited": {},
        "refund": 0,
        "outvoted": {},  # V0 is a genesis validator without a bond: it has nothing to lose
    }
    assert bond(chain, gen) == 0 and bond(chain, chk) == BOND  # out of service, bond unbonding
    assert pool(chain) - pool_before == SLASH // 2
    assert burned(chain) - burned_before == SLASH - SLASH // 2 + fee_burn(chain, [last])
    votes = chain.state.get("task:" + task)["votes"]
    assert {v: vote["faults"] for v, vote in votes.items()} == {
        V0.address: {},
        V1.address: honest,
        V2.address: honest,
    }
    assert_replays_and_explains(chain)


# --- (c) a lone liar slashes nobody, and pays once the quorum rules -------------------------


def test_a_lone_lying_validator_slashes_nobody_and_loses_part_of_its_bond() -> None:
    chain = new_market()
    chain.commit([chain.send(V0, "validator.bond", {"amount": VALIDATOR_BOND})])
    assert validator_bond(chain, V0) == VALIDATOR_BOND
    task, gen, chk = settled(chain, "confirmed")
    consumer = chain.balance(CONSUMER)
    balances = {kp.address: chain.balance(kp) for kp in (gen, chk)}
    lie = {gen.address: disputes.INVALID_ANSWER, chk.address: disputes.APPROVED_INVALID}
    chain.commit([vote(chain, V0, task, lie)])
    # Below the quorum the vote is only recorded: nobody is slashed, nothing is refunded.
    assert verdict_of(chain, task) is None
    assert (bond(chain, gen), bond(chain, chk)) == (BOND, BOND)
    assert chain.balance(CONSUMER) == consumer
    assert {kp.address: chain.balance(kp) for kp in (gen, chk)} == balances
    assert gen.address in eligible_miners(chain.state, SMOL, chain.tip.height)
    chain.commit([vote(chain, V1, task, {})])
    assert verdict_of(chain, task) is None
    pool_before, burned_before = pool(chain), burned(chain)
    last = vote(chain, V2, task, {})
    chain.commit([last])
    verdict = verdict_of(chain, task)
    assert verdict is not None and verdict["faults"] == {} and verdict["slashed"] == {}
    assert verdict["outvoted"] == {V0.address: LIAR_LOSS}
    assert validator_bond(chain, V0) == VALIDATOR_BOND - LIAR_LOSS
    assert chain.state.get("validator:" + V0.address)["slashed"] == LIAR_LOSS
    assert pool(chain) - pool_before == LIAR_LOSS // 2
    assert burned(chain) - burned_before == LIAR_LOSS - LIAR_LOSS // 2 + fee_burn(chain, [last])
    assert (bond(chain, gen), bond(chain, chk)) == (BOND, BOND)
    assert chain.balance(CONSUMER) == consumer
    assert_replays_and_explains(chain)


def test_an_outvoted_validator_loses_part_of_its_bond_whichever_side_it_took() -> None:
    """Here the lone vote blames the generator and the quorum finds nobody at fault."""
    chain = new_market()
    chain.commit([chain.send(V2, "validator.bond", {"amount": VALIDATOR_BOND})])
    task, gen, _ = settled(chain, "rejected")
    chain.commit([vote(chain, V2, task, {gen.address: disputes.INVALID_ANSWER})])
    chain.commit([vote(chain, V0, task, {}), vote(chain, V1, task, {})])
    verdict = verdict_of(chain, task)
    assert verdict is not None and verdict["outvoted"] == {V2.address: LIAR_LOSS}
    assert bond(chain, gen) == BOND


# --- the vote's other rules -------------------------------------------------------------------


def test_one_vote_per_validator_within_the_window_until_the_ruling() -> None:
    chain = new_market()
    task, gen, _ = settled(chain, "rejected")
    chain.commit([vote(chain, V0, task, {})])
    assert_rejected(
        chain, vote(chain, V0, task, {gen.address: disputes.INVALID_ANSWER}), "already-voted"
    )
    chain.commit([vote(chain, V1, task, {})])
    assert verdict_of(chain, task) is not None
    assert_rejected(chain, vote(chain, V2, task, {}), "already-ruled")
    late, _, _ = settled(chain, "rejected", nonce=1)
    window = disputes.dispute_window(chain.genesis)
    chain.advance_to(chain.tip.height + window - 1)
    chain.commit([vote(chain, V0, late, {})])  # in the last block of the window
    assert_rejected(chain, vote(chain, V1, late, {}), "dispute-closed")
    assert verdict_of(chain, late) is None  # the window ended without a quorum: nothing happens


def test_two_votes_in_one_block_rule_once() -> None:
    chain = new_market()
    task, gen, _ = settled(chain, "rejected")
    honest = {gen.address: disputes.INVALID_ANSWER}
    chain.commit([vote(chain, V0, task, honest), vote(chain, V1, task, honest)])
    verdict = verdict_of(chain, task)
    assert verdict is not None and verdict["by"] == sorted([V0.address, V1.address])
    assert chain.state.get("miner:" + gen.address)["slashed"] == SLASH


def test_a_one_validator_chain_still_rules_alone() -> None:
    chain = single_chain()
    t = ticket(chain)
    gen, chk = attest(chain, t, verdict="rejected")
    chain.commit([settle(chain, t, (gen, chk))])
    task = task_id(chain.genesis.chain_id, t)
    chain.commit([vote(chain, V, task, {gen["miner"]: disputes.INVALID_ANSWER})])
    verdict = chain.state.get("task:" + task)["verdict"]
    assert verdict["by"] == [V.address] and verdict["slashed"] == {gen["miner"]: SLASH}
