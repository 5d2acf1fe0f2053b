"""`task.verdict` on the pure state machine (dn/chain/disputes.py): who is slashed, by how much,
where the slashed units go, the consumer's refund for a bad answer it paid for, a miner forced
out of service, and every reason a vote is refused. The supply invariant is checked after every
block (Chain.commit) and `dn chain explain` must account for every unit.

The chain here has one validator, V, which holds all the voice: its vote is the quorum and rules
alone. Votes among several validators are in test_chain_dispute_votes.py."""

from __future__ import annotations

from typing import Any

import pytest

from dn.chain import disputes, escrow
from dn.chain.epochs import Epoch
from dn.chain.explain import UNEXPLAINED, explain_blocks
from dn.chain.ledger import POOL_VALIDATORS
from dn.chain.powr_rules import stats_key
from dn.chain.tasks import eligible_miners, task_id
from dn.chain.types import Block, Tx
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import (
    BOND,
    CONSUMER,
    DN,
    GATEWAY,
    M1,
    M2,
    M3,
    SMOL,
    UNBONDING,
    Chain,
)
from tests.unit.test_chain_models import new_chain as models_chain
from tests.unit.test_chain_state import V, assert_rejected
from tests.unit.test_chain_tasks import MINERS, PRICE, attest, settle, ticket

EVIDENCE = "ab" * 32
SLASH = BOND * 2_000 // 10_000  # the default slash_bps of the default bond


class Recorded(Chain):
    """A Chain that keeps its blocks, for `explain_blocks`."""

    blocks: list[Block]

    def commit(self, txs: list[Tx], time_ms: int | None = None) -> Block:
        block = super().commit(txs, time_ms)
        self.blocks.append(block)
        return block


def new_chain(**params: int) -> Recorded:
    base = models_chain(epoch_blocks=100, **params)
    chain = Recorded(base.genesis, base.state, base.mempool, base.tip)
    chain.blocks = []
    chain.commit([chain.register_model(price=PRICE)])
    chain.commit([chain.register_miner(M1), chain.register_miner(M2)])
    return chain


@pytest.fixture
def chain() -> Recorded:
    return new_chain()


def settled(
    chain: Chain, verdict: str, consumer: Keypair = CONSUMER
) -> tuple[str, Keypair, Keypair]:
    """Settle one task with the checker's `verdict`; (task id, generator, checker)."""
    t = ticket(chain, consumer=consumer)
    gen, chk = attest(chain, t, verdict=verdict)
    chain.commit([settle(chain, t, (gen, chk))])
    return task_id(chain.genesis.chain_id, t), MINERS[gen["miner"]], MINERS[chk["miner"]]


def with_escrow(chain: Chain, kp: Keypair, amount: int = DN) -> None:
    """`kp` deposits `amount` in its query escrow, which a book of one ticket's max_price (DN)
    reserves; GATEWAY funds it first when its balance is short."""
    if chain.balance(kp) < amount + chain.min_fee:
        chain.commit([chain.send(GATEWAY, "transfer", {"to": kp.address, "amount": amount + DN})])
    chain.commit([chain.send(kp, "escrow.deposit", {"amount": amount})])
    assert escrow.available(chain.state, kp.address) >= amount


def rule(chain: Chain, task: str, faults: dict[str, str], sender: Keypair = V, **kw: Any) -> Tx:
    payload = {"task": task, "faults": faults, "evidence": EVIDENCE}
    return chain.send(sender, "task.verdict", payload, **kw)


def bond(chain: Chain, kp: Keypair) -> int:
    return int(chain.state.get("miner:" + kp.address)["bond"])


def pool(chain: Chain) -> int:
    found = chain.state.get(POOL_VALIDATORS)
    return int(found["balance"]) if found else 0


def burned(chain: Chain) -> int:
    return int(chain.state.get("supply")["burned"])


def test_a_bad_generator_of_a_rejected_answer_is_slashed(chain: Recorded) -> None:
    task, gen, chk = settled(chain, "rejected")
    pool_before, burned_before = pool(chain), burned(chain)
    tx = rule(chain, task, {gen.address: disputes.INVALID_ANSWER})
    chain.commit([tx])
    assert bond(chain, chk) == BOND
    fee_burn = tx.fee * chain.genesis.param("fee_burn_share") // 10_000
    assert pool(chain) - pool_before == SLASH // 2
    assert burned(chain) - burned_before == SLASH - SLASH // 2 + fee_burn
    # V is the only validator: its vote holds all the voice, so it rules alone.
    record = chain.state.get("task:" + task)
    assert record["verdict"] == {
        "by": [V.address],
        "height": chain.tip.height,
        "faults": {gen.address: "invalid-answer"},
        "slashed": {gen.address: SLASH},
        "forfeited": {},
        "refund": 0,
        "outvoted": {},
    }
    assert record["votes"] == {
        V.address: {
            "faults": {gen.address: "invalid-answer"},
            "evidence": EVIDENCE,
            "height": chain.tip.height,
        }
    }
    assert chain.state.get("miner:" + gen.address)["slashed"] == SLASH
    # The default bond is the minimum, so what is left is too little: the generator is out of
    # service and the rest of its bond unbonds.
    assert bond(chain, gen) == 0
    assert gen.address not in eligible_miners(chain.state, SMOL, chain.tip.height)
    unlock = chain.state.get(f"unlock:{chain.tip.height + UNBONDING}")
    assert unlock == [{"address": gen.address, "amount": BOND - SLASH, "what": "bond"}]


def test_a_checker_that_rejected_a_valid_answer_is_slashed_and_the_generator_kept(
    chain: Recorded,
) -> None:
    task, gen, chk = settled(chain, "rejected")
    chain.commit([rule(chain, task, {chk.address: disputes.REJECTED_VALID})])
    assert bond(chain, chk) == 0 and bond(chain, gen) == BOND  # out of service: bond unbonding
    unlock = chain.state.get(f"unlock:{chain.tip.height + UNBONDING}")
    assert unlock == [{"address": chk.address, "amount": BOND - SLASH, "what": "bond"}]
    assert eligible_miners(chain.state, SMOL, chain.tip.height) == [gen.address]


def test_a_bad_answer_that_was_paid_is_refunded_and_unconfirmed() -> None:
    chain = new_chain()
    chain.commit([chain.register_miner(M3)])
    t = ticket(chain)
    gen, chk = attest(chain, t)
    chain.commit([settle(chain, t, (gen, chk))])
    task = task_id(chain.genesis.chain_id, t)
    record = chain.state.get("task:" + task)
    epoch = Epoch.at(chain.tip.height, 100).number
    assert chain.state.get(stats_key(epoch, SMOL))["miners"] == {gen["miner"]: record["tokens"]}
    consumer = chain.balance(CONSUMER)
    balances = {a: chain.balance(MINERS[a]) for a in (gen["miner"], chk["miner"])}
    faults = {gen["miner"]: disputes.INVALID_ANSWER, chk["miner"]: disputes.APPROVED_INVALID}
    chain.commit([rule(chain, task, faults)])
    assert chain.balance(CONSUMER) == consumer + record["paid"]
    verdict = chain.state.get("task:" + task)["verdict"]
    assert verdict["refund"] == record["paid"] > 0
    assert verdict["slashed"] == {gen["miner"]: SLASH, chk["miner"]: SLASH}
    # Both also give back what the task paid them: of the 9,506 units, the generator's 35% and
    # the checker's 15% (the genesis fee_split_generator and fee_split_checker, 3,500 and 1,500
    # basis points), rounded down.
    assert record["paid"] == 9_506
    forfeited = {gen["miner"]: 3_327, chk["miner"]: 1_425}
    assert verdict["forfeited"] == forfeited
    assert {a: chain.balance(MINERS[a]) for a in balances} == {
        a: balances[a] - forfeited[a] for a in balances
    }
    stats = chain.state.get(stats_key(epoch, SMOL))
    assert stats["confirmed"] == 0 and stats["tokens"] == 0 and stats["miners"] == {}
    # The third miner, not on the task, is untouched; both cheats are out.
    third = ({M1.address, M2.address, M3.address} - {gen["miner"], chk["miner"]}).pop()
    assert eligible_miners(chain.state, SMOL, chain.tip.height) == [third]
    explained = explain_blocks(chain.genesis, chain.blocks, CONSUMER.address)
    assert [e.kind for e in explained.entries if e.kind == UNEXPLAINED] == []
    assert [e.amount for e in explained.entries if e.kind == "refund"] == [record["paid"]]
    for address, amount in forfeited.items():
        entries = explain_blocks(chain.genesis, chain.blocks, address).entries
        assert [e.amount for e in entries if e.kind == "forfeit"] == [-amount]
        assert all(e.kind != UNEXPLAINED for e in entries)


def test_nobody_at_fault_marks_the_task_and_moves_nothing(chain: Recorded) -> None:
    task, gen, chk = settled(chain, "confirmed")
    before = {kp.address: bond(chain, kp) for kp in (gen, chk)}
    chain.commit([rule(chain, task, {})])
    assert {kp.address: bond(chain, kp) for kp in (gen, chk)} == before
    assert chain.state.get("task:" + task)["verdict"]["faults"] == {}


def test_a_slash_that_leaves_enough_bond_keeps_the_miner_serving() -> None:
    chain = models_chain(epoch_blocks=100)
    chain.commit([chain.register_model(price=PRICE)])
    chain.commit([chain.register_miner(M1, bond=2 * BOND), chain.register_miner(M2, bond=2 * BOND)])
    task, gen, _ = settled(chain, "rejected")
    chain.commit([rule(chain, task, {gen.address: disputes.INVALID_ANSWER})])
    assert bond(chain, gen) == 2 * BOND - 2 * SLASH
    assert gen.address in eligible_miners(chain.state, SMOL, chain.tip.height)


def test_a_miner_that_exited_is_slashed_from_its_unbonding_bond(chain: Recorded) -> None:
    task, gen, _ = settled(chain, "rejected")
    chain.commit([chain.exit_miner(gen)])
    due = f"unlock:{chain.tip.height + UNBONDING}"
    chain.commit([rule(chain, task, {gen.address: disputes.INVALID_ANSWER})])
    assert chain.state.get(due) == [
        {"address": gen.address, "amount": BOND - SLASH, "what": "bond"}
    ]
    balance = chain.balance(gen)
    chain.advance_to(int(due.split(":")[1]))
    assert chain.balance(gen) == balance + BOND - SLASH


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("not-validator", "not-validator"),
        ("unknown-task", "unknown-task"),
        ("party", "party"),
        ("not-party", "not-party"),
        ("unknown-fault", "unknown-fault"),
        ("bad-reason", "bad-payload"),
        ("three", "bad-payload"),
    ],
)
def test_a_vote_is_refused_with_its_reason(chain: Recorded, case: str, reason: str) -> None:
    # The only validator's own query: it may not judge it, even alone.
    if case == "party":
        with_escrow(chain, V)
    task, gen, chk = settled(chain, "rejected", consumer=V if case == "party" else CONSUMER)
    faults: dict[str, str] = {gen.address: disputes.INVALID_ANSWER}
    sender = V
    if case == "not-validator":
        sender = M1
    elif case == "unknown-task":
        task = "ee" * 32
    elif case == "not-party":
        faults = {M3.address: disputes.INVALID_ANSWER}
    elif case == "unknown-fault":
        faults = {gen.address: disputes.REJECTED_VALID}
    elif case == "bad-reason":
        faults = {gen.address: "Bad Reason!"}
    elif case == "three":
        faults = {kp.address: disputes.INVALID_ANSWER for kp in (gen, chk, M3)}
    if reason == "bad-payload":
        with pytest.raises(Exception) as failed:
            rule(chain, task, faults, sender=sender)
        assert getattr(failed.value, "reason", None) == "bad-payload"
        return
    assert_rejected(chain, rule(chain, task, faults, sender=sender), reason)


def test_a_task_is_ruled_on_once_and_only_within_the_window(chain: Recorded) -> None:
    task, gen, _ = settled(chain, "rejected")
    chain.commit([rule(chain, task, {})])
    assert_rejected(
        chain, rule(chain, task, {gen.address: disputes.INVALID_ANSWER}), "already-ruled"
    )
    late, _, _ = settled(chain, "rejected")
    window = disputes.dispute_window(chain.genesis)
    chain.advance_to(chain.tip.height + window - 1)
    chain.commit([rule(chain, late, {})])  # in the last block of the window
    too_late, _, _ = settled(chain, "rejected")
    chain.advance_to(chain.tip.height + window)
    assert_rejected(chain, rule(chain, too_late, {}), "dispute-closed")


def test_the_window_never_outlasts_unbonding() -> None:
    chain = models_chain(dispute_window_blocks=40)
    assert disputes.dispute_window(chain.genesis) == UNBONDING


def test_spot_checks_take_their_share_of_tasks() -> None:
    genesis = models_chain(spot_check_bps=2_500).genesis
    block = "ab" * 32
    picked = sum(disputes.spot_checked(f"{i:064x}", block, genesis) for i in range(4000))
    assert 850 < picked < 1150
    none = models_chain(spot_check_bps=0).genesis
    every = models_chain(spot_check_bps=10_000).genesis
    assert not any(disputes.spot_checked(f"{i:064x}", block, none) for i in range(200))
    assert all(disputes.spot_checked(f"{i:064x}", block, every) for i in range(200))
    # One task's fate is not fixed by its id: the block that settles it draws again, so a
    # consumer cannot grind its tickets out of the sample, nor a miner know it when it works.
    task = "cd" * 32
    fates = {disputes.spot_checked(task, f"{i:064x}", genesis) for i in range(64)}
    assert fates == {True, False}


def test_when_neither_miner_shows_its_record_both_are_at_fault(chain: Recorded) -> None:
    task, gen, chk = settled(chain, "rejected")
    faults = {gen.address: disputes.NO_RECORD, chk.address: disputes.NO_RECORD}
    chain.commit([rule(chain, task, faults)])
    assert chain.state.get("task:" + task)["verdict"]["slashed"] == {
        gen.address: SLASH,
        chk.address: SLASH,
    }
    assert eligible_miners(chain.state, SMOL, chain.tip.height) == []


def test_explain_accounts_for_a_slashed_miner(chain: Recorded) -> None:
    task, gen, _ = settled(chain, "rejected")
    chain.commit([rule(chain, task, {gen.address: disputes.INVALID_ANSWER})])
    chain.advance_to(chain.tip.height + UNBONDING)
    explained = explain_blocks(chain.genesis, chain.blocks, gen.address)
    assert explained.unexplained == 0
    returned = [e for e in explained.entries if e.kind == "bond-returned"]
    assert [e.amount for e in returned] == [BOND - SLASH]
