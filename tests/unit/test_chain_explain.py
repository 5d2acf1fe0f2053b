"""`dn chain explain` on the pure state machine (DESIGN.md section 8): every change of one
address's balance traced to its cause, and the entries adding up to the balance to the unit.

One validator, V0, is also a model creator, a consumer, a backer, a delegator and a miner on the
three-validator PoWR chain of test_chain_powr.py (epochs of 4 blocks, unbonding 3 blocks).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from dn.chain.economics import split_fee
from dn.chain.explain import UNEXPLAINED, Entry, Explanation, explain, explain_blocks
from dn.chain.ledger import DictState
from dn.chain.staking import backers_of
from dn.chain.state import apply_block, genesis_block, genesis_state
from dn.chain.store import Store
from dn.chain.tasks import task_id
from dn.chain.types import Block, Tx
from dn.errors import ChainError
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import CONSUMER, CREATOR, DN, GATEWAY, M1, OTHER, SMOL
from tests.unit.test_chain_powr import V0, V1, PowrChain, new_chain
from tests.unit.test_chain_tasks import PRICE, TOKENS, attest, book_tx, pair, settle, ticket

CHARGE = PRICE * TOKENS // 1000
ME = V0


class Story:
    """The chain and what each step of it should have done to ME."""

    def __init__(self) -> None:
        self.chain: PowrChain = new_chain()
        self.sent: list[Tx] = []  # ME's transactions
        self.task = ""
        self.roles: tuple[str, str] = ("", "")
        self.shares: dict[str, Any] = {}

    def mine(self, *txs: Tx) -> None:
        self.sent += [t for t in txs if t.sender == ME.address]
        self.chain.commit(list(txs))


@pytest.fixture(scope="module")
def story() -> Story:
    return tell()


def tell() -> Story:
    """Build the story: eight blocks, ME in every role."""
    s = Story()
    c = s.chain
    scores = {SMOL: 800_000}
    # 1: ME registers SMOL, sends 2 DN, gets 3 DN, commits its epoch 0 scores (and so does V1:
    # a model's score counts only when validators with half the voice revealed one)
    s.mine(
        c.register_model(ME, price=PRICE),
        c.send(ME, "transfer", {"to": OTHER.address, "amount": 2 * DN}, nonce=1),
        c.send(CREATOR, "transfer", {"to": ME.address, "amount": 3 * DN}),
        c.commit_scores(ME, 0, scores, nonce=2),
        c.commit_scores(V1, 0, scores),
    )
    # 2: ME and M1 mine SMOL (so ME is the generator or the checker of every SMOL task); ME
    # backs SMOL with 5 DN, delegates 2 DN to V1 and puts 1 DN in its query escrow; ME and
    # CONSUMER each book a slot of SMOL for the queries of block 3
    s.mine(
        c.register_miner(ME),
        c.register_miner(M1),
        c.send(ME, "stake", {"target": SMOL, "amount": 5 * DN}, nonce=4),
        c.send(ME, "stake", {"target": V1.address, "amount": 2 * DN}, nonce=5),
        c.send(ME, "escrow.deposit", {"amount": DN}, nonce=6),
        book_tx(c, ME, nonce=7),
        book_tx(c, CONSUMER),
    )
    # 3 (proposed by ME): ME pays for a query, CONSUMER pays for another; ME reveals
    mine = ticket(c, consumer=ME)
    theirs = ticket(c, consumer=CONSUMER)
    assert mine["ref_height"] == theirs["ref_height"] == 2  # the books, not new ones
    keys = {ME.address: ME, M1.address: M1}

    def chosen(t: dict[str, Any]) -> tuple[str, str]:
        return pair(c, t)

    def tid(t: dict[str, Any]) -> str:
        return task_id(c.genesis.chain_id, t)

    def atts(t: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        generator, checker = chosen(t)
        return attest(c, t, miners=(keys[generator], keys[checker]))

    s.task, s.roles = tid(mine), chosen(mine)
    s.shares = split_fee(CHARGE, c.genesis, backers_of(c.state, SMOL))

    s.mine(
        settle(c, mine, atts(mine)),
        settle(c, theirs, atts(theirs), nonce=c.nonce(GATEWAY) + 1),
        c.reveal(ME, 0, scores),
        c.reveal(V1, 0, scores),
    )
    # 4: ME stops mining and takes back its delegation: both return at block 7
    s.mine(
        c.send(ME, "miner.exit", {}),
        c.send(ME, "unstake", {"target": V1.address, "amount": 2 * DN}, nonce=c.nonce(ME) + 1),
    )
    # 5: epoch 0 closes at its start; 7: the bond and the delegation come back
    c.advance_to(8)
    return s


def by_kind(explanation: Explanation) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = defaultdict(list)
    for entry in explanation.entries:
        out[entry.kind].append(entry)
    return out


def amounts(entries: list[Entry]) -> list[int]:
    return [e.amount for e in entries]


def test_every_unit_of_the_balance_is_explained(story: Story) -> None:
    c = story.chain
    got = explain_blocks(c.genesis, c.blocks, ME.address)
    assert got.unexplained == 0 and not [e for e in got.entries if e.kind == UNEXPLAINED]
    assert got.balance == c.balance(ME)
    assert sum(e.amount for e in got.entries) == got.balance
    assert got.opening + got.received - got.spent == got.balance
    assert (got.height, got.tip) == (8, c.tip.hash)
    kinds = by_kind(got)
    assert amounts(kinds["genesis"]) == [100 * DN] and kinds["genesis"][0].height == 0
    assert amounts(kinds["fee"]) == [-tx.fee for tx in story.sent]
    assert [e.tx for e in kinds["fee"]] == [tx.id for tx in story.sent]
    assert amounts(kinds["transfer-out"]) == [-2 * DN]
    assert amounts(kinds["transfer-in"]) == [3 * DN]
    assert [(e.height, e.amount) for e in kinds["bond"]] == [(2, -10 * DN)]
    assert [(e.amount, e.target) for e in kinds["stake"]] == [
        (-5 * DN, SMOL),
        (-2 * DN, V1.address),
    ]


def test_a_paid_query_is_traced_to_its_task_and_model(story: Story) -> None:
    c = story.chain
    kinds = by_kind(explain_blocks(c.genesis, c.blocks, ME.address))
    # ME's own query is paid out of its escrow (deposited at block 2), not its balance: the
    # entry names the task and moves nothing
    paid = kinds["query-paid"]
    want = [(3, 0, story.task, SMOL)]
    assert [(e.height, e.amount, e.task, e.model) for e in paid] == want
    assert "out of the query escrow" in paid[0].cause
    assert [(e.height, e.amount) for e in kinds["escrow-deposit"]] == [(2, -DN)]
    # ME is the creator and the only backer of SMOL, and one of its two miners: paid from both
    # tasks of block 3 (the same split, CONSUMER's and its own)
    shares = story.shares
    assert amounts(kinds["creator-share"]) == [shares["creator"]] * 2
    assert amounts(kinds["backer-share"]) == [shares["backers"][ME.address]] * 2
    assert shares["backers"][ME.address] == CHARGE * 500 // 10_000
    role = "generator" if story.roles[0] == ME.address else "checker"
    other = "checker" if role == "generator" else "generator"
    mine = [e for e in kinds[f"{role}-share"] if e.task == story.task]
    assert amounts(mine) == [shares[role]]
    assert all(e.model == SMOL for e in kinds["creator-share"] + kinds["backer-share"])
    assert story.task in {e.task for e in kinds["creator-share"]}
    # the other task may choose the other order; either way ME's role is paid only once a task
    assert len(kinds[f"{role}-share"]) + len(kinds[f"{other}-share"]) == 2


def test_fees_earned_as_the_proposer(story: Story) -> None:
    c = story.chain
    got = explain_blocks(c.genesis, c.blocks, ME.address)
    mine = [b for b in c.blocks if b.header.proposer == ME.address]
    expected = [tx.fee - tx.fee * 2000 // 10_000 for b in mine for tx in b.txs]
    assert mine and expected  # block 3 has transactions
    assert amounts(by_kind(got)["proposer-fee"]) == expected


def test_unlocks_name_the_height_they_were_locked_at(story: Story) -> None:
    c = story.chain
    kinds = by_kind(explain_blocks(c.genesis, c.blocks, ME.address))
    assert [(e.height, e.amount, e.locked_at) for e in kinds["bond-returned"]] == [(7, 10 * DN, 4)]
    returned = kinds["stake-returned"]
    assert [(e.height, e.amount, e.locked_at, e.target) for e in returned] == [
        (7, 2 * DN, 4, V1.address)
    ]
    assert returned[0].tx is not None and "unstaked at block 4" in returned[0].cause


def test_epoch_rewards_are_the_closes_credits(story: Story) -> None:
    c = story.chain
    kinds = by_kind(explain_blocks(c.genesis, c.blocks, ME.address))
    credits = [x for x in c.result(0)["credits"] if x["address"] == ME.address]
    rewards = kinds["powr-reward"]
    assert [(e.height, e.epoch, e.amount, e.model) for e in rewards] == [
        (5, 0, x["amount"], x["model"]) for x in credits
    ]
    reasons = {x["reason"] for x in credits}
    assert {"validator", "creator", "backer"} <= reasons  # and "miner" if ME generated
    assert all(x["reason"] in e.cause for e, x in zip(rewards, credits, strict=True))


def test_locked_funds_are_listed_apart(story: Story) -> None:
    c = story.chain
    got = explain_blocks(c.genesis, c.blocks, ME.address)
    smol = {"kind": "stake", "amount": 5 * DN, "target": SMOL, "name": "smollm2"}
    escrow = {"kind": "escrow", "amount": DN - CHARGE, "available": DN - CHARGE}
    escrow |= {"unlocking": 0, "unlock_at": None, "reserved": 0}
    assert got.locked == (escrow, smol)
    assert got.totals()["locked"] == 5 * DN + DN - CHARGE
    before = explain_blocks(c.genesis, c.blocks[:5], ME.address)  # blocks 1-5: still unbonding
    assert before.locked == (
        escrow,
        smol,
        {"kind": "unbonding", "amount": 10 * DN, "due": 7},
        {"kind": "unbonding", "amount": 2 * DN, "due": 7},
    )


def test_from_a_height_starts_with_the_opening_balance(story: Story) -> None:
    c = story.chain
    whole = explain_blocks(c.genesis, c.blocks, ME.address)
    later = explain_blocks(c.genesis, c.blocks, ME.address, start=5)
    assert later.entries == tuple(e for e in whole.entries if e.height >= 5)
    assert later.opening == sum(e.amount for e in whole.entries if e.height < 5)
    assert later.opening + sum(e.amount for e in later.entries) == later.balance == whole.balance
    assert later.to_json()["totals"]["opening"] == later.opening


@pytest.mark.parametrize("who", [OTHER, M1, CONSUMER, GATEWAY, V1, CREATOR])
def test_every_other_party_adds_up_too(story: Story, who: Keypair) -> None:
    c = story.chain
    got = explain_blocks(c.genesis, c.blocks, who.address)
    assert got.unexplained == 0
    assert sum(e.amount for e in got.entries) == got.balance == c.balance(who)


def test_an_address_never_seen_has_nothing(story: Story) -> None:
    c = story.chain
    stranger = Keypair.from_seed(b"stranger".ljust(32, b".")).address
    got = explain_blocks(c.genesis, c.blocks, stranger)
    assert (got.entries, got.balance, got.locked) == ((), 0, ())


def _changes(genesis: Any, blocks: list[Block]) -> list[dict[str, Any]]:
    state, parent, out = DictState(genesis_state(genesis)), genesis_block(genesis), []
    for block in blocks:
        changes = apply_block(state, parent.header, parent.hash, block, genesis).changes
        state.update(changes)
        out.append(changes)
        parent = block
    return out


def test_explain_reads_a_store(story: Story, tmp_path: Path) -> None:
    c = story.chain
    store = Store.create(tmp_path / "chain.db", c.genesis)
    for block, changes in zip(c.blocks, _changes(c.genesis, c.blocks), strict=True):
        store.commit_block(block, changes)
    store.close()
    store = Store.open(tmp_path / "chain.db", readonly=True)
    try:
        assert explain(store, ME.address) == explain_blocks(c.genesis, c.blocks, ME.address)
    finally:
        store.close()


def test_a_block_that_breaks_the_rules_is_refused(story: Story) -> None:
    c = story.chain
    blocks = list(c.blocks)
    blocks[2], blocks[3] = blocks[3], blocks[2]
    with pytest.raises(ChainError, match="block 4"):
        explain_blocks(c.genesis, blocks, ME.address)
