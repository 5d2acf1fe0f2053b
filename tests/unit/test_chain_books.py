"""Miner selection the consumer cannot grind (issue 11, attack 3; dn/chain/books.py), played on the
pure state machine.

The attack, as it was: a consumer who also runs two of the five miners serving a model signs
tickets with nonce after nonce, offline and for free, until the task id puts both roles on its own
miners (one ticket in C(5, 2) = 10 on average), then settles a task nobody checked. Now a ticket
uses a slot of a book the consumer paid for on chain, and the slot's miners are drawn with the
hash of the block that holds the book: trying nonces gets `no-book` or `bad-slot`, each slot is
one fair draw, and a slot pays for one task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dn.chain import books
from dn.chain.ledger import account
from dn.chain.tasks import eligible_miners, select_miners, task_id
from dn.chain.types import Tx
from dn.errors import TaskError
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import (
    CONSUMER,
    DN,
    GATEWAY,
    GEMMA,
    M1,
    M2,
    M3,
    OTHER,
    SMOL,
    WINDOW,
    Chain,
)
from tests.unit.test_chain_powr import PowrChain, new_chain
from tests.unit.test_chain_state import assert_rejected
from tests.unit.test_chain_tasks import (
    PRICE,
    attest,
    book,
    book_at,
    book_nonce,
    pair,
    settle,
    ticket,
)
from tests.unit.test_powr_wash import verified

A1 = Keypair.from_seed(b"grind-miner-1".ljust(32, b"."))
A2 = Keypair.from_seed(b"grind-miner-2".ljust(32, b"."))
OURS = {A1.address, A2.address}
SLOT_PRICE = DN // 4  # the max_price of the 200-slot book's slots
KEYS = {kp.address: kp for kp in (M1, M2, M3, A1, A2)}


@pytest.fixture
def five() -> PowrChain:
    """SMOL served by M1, M2, M3 and the attacker's A1, A2 (funded by OTHER) from height 3;
    CONSUMER, the attacker's consumer wallet here, has its genesis escrow. The chain keeps its
    blocks (`verified` replays them into a store and runs `dn chain verify`)."""
    chain = new_chain()
    chain.commit(
        [
            chain.register_model(price=PRICE),
            chain.send(OTHER, "transfer", {"to": A1.address, "amount": 20 * 10**9}),
            chain.send(OTHER, "transfer", {"to": A2.address, "amount": 20 * 10**9}, nonce=1),
        ]
    )
    chain.commit([chain.register_miner(kp) for kp in (M1, M2, M3, A1, A2)])
    chain.commit([])
    assert len(eligible_miners(chain.state, SMOL, chain.tip.height)) == 5
    return chain


def ground(chain: Chain, ref: int, start: int = 0) -> dict[str, Any]:
    """The attack as it was: nonces tried offline until the task id selects both of the
    attacker's miners (the old rule: miners ordered by the task id)."""
    eligible = eligible_miners(chain.state, SMOL, ref)
    for nonce in range(start, start + 10_000):
        t = ticket(chain, ref_height=ref, nonce=nonce)
        if set(select_miners(eligible, task_id(chain.genesis.chain_id, t))) == OURS:
            return t
    raise AssertionError("no nonce put both roles on the attacker's miners")


def own_attestations(chain: Chain, t: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both attestations signed by the attacker's miners, in the order the old rule gave."""
    eligible = eligible_miners(chain.state, SMOL, t["ref_height"])
    gen, chk = select_miners(eligible, task_id(chain.genesis.chain_id, t))
    return attest(chain, t, miners=(KEYS[gen], KEYS[chk]))


def drawn(chain: Chain, t: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Attestations by the two miners the ticket's slot draws."""
    gen, chk = pair(chain, t)
    return attest(chain, t, miners=(KEYS[gen], KEYS[chk]))


def test_grinding_nonces_no_longer_picks_the_miners(five: PowrChain, tmp_path: Path) -> None:
    ref = five.tip.height
    t = ground(five, ref)
    assert_rejected(five, settle(five, t, own_attestations(five, t)), "no-book")
    # With a book of one slot, every nonce but 0 is no slot at all.
    booked = book(five, CONSUMER, slots=1)
    t = ground(five, booked, start=1)
    assert t["nonce"] >= 1
    assert_rejected(five, settle(five, t, own_attestations(five, t)), "bad-slot")
    verified(five, tmp_path)  # dn chain verify from genesis, the supply invariant included


def test_each_slot_is_one_fair_draw_and_pays_for_one_task(five: PowrChain, tmp_path: Path) -> None:
    """200 slots bought in one book: about one in C(5, 2) = 10 draws both of the attacker's
    miners (binomial: mean 20, sd 4.2), never more because it looked; the book cost 200 ×
    min_fee, paid before any draw was known; a slot that settled once is refused again. Each
    slot reserves a quarter DN of the escrow (200 of them: half of CONSUMER's ESCROWED)."""
    before = account(five.state, CONSUMER.address)["balance"]
    booked = book(five, CONSUMER, slots=200, max_price=SLOT_PRICE)
    assert before - account(five.state, CONSUMER.address)["balance"] == 200 * five.min_fee
    beacon = five.tip.hash  # the hash of the block that holds the book
    five.commit([])  # the next block writes it into the book
    assert book_at(five, CONSUMER, booked)["beacon"] == beacon
    eligible = eligible_miners(five.state, SMOL, booked)
    number = book_nonce(five, CONSUMER, booked)
    draws = [
        select_miners(
            eligible,
            books.draw(beacon, CONSUMER.address, booked, books.ticket_nonce(number, slot)),
        )
        for slot in range(200)
    ]
    hits = [slot for slot, chosen in enumerate(draws) if set(chosen) == OURS]
    print(f"{len(hits)} of 200 slots drew both of the attacker's miners")
    assert 5 <= len(hits) <= 40
    assert len({chosen for chosen in draws}) >= 15  # every pair comes up (20 ordered pairs)
    # A washed task on one of its lucky slots settles (it paid for the other slots) ...
    t = ticket(five, ref_height=booked, nonce=hits[0], max_price=SLOT_PRICE)
    atts = drawn(five, t)
    assert {atts[0]["miner"], atts[1]["miner"]} == OURS
    five.commit([settle(five, t, atts)])
    assert hits[0] in book_at(five, CONSUMER, booked)["used"]
    # ... once: the same slot under another prompt is refused.
    again = ticket(five, ref_height=booked, nonce=hits[0], prompt_hash="ab" * 32, max_price=0)
    assert_rejected(five, settle(five, again, attest(five, again, miners=(A1, A2))), "slot-used")
    verified(five, tmp_path)


def test_the_draw_depends_on_the_block_not_on_the_consumer(five: Chain) -> None:
    """The same consumer, slot number and height with another block hash draws other miners,
    so before its book's block exists nobody can compute a slot's pair."""
    booked = book(five, CONSUMER, slots=1)
    eligible = eligible_miners(five.state, SMOL, booked)
    pairs = {
        select_miners(eligible, books.draw(f"{n:064x}", CONSUMER.address, booked, 0))
        for n in range(64)
    }
    assert len(pairs) >= 15


def test_book_rules(five: Chain) -> None:
    def booking(slots: int, fee: int | None = None, model: str = SMOL, **kw: Any) -> Tx:
        payload = {"model": model, "slots": slots, "max_price": DN}
        fee = slots * five.min_fee if fee is None else fee
        return five.send(CONSUMER, "task.book", payload, fee=fee, **kw)

    assert_rejected(five, booking(3, fee=3 * five.min_fee - 1), "fee-too-low")
    assert_rejected(five, booking(1, model=GEMMA), "unknown-model")
    # Two books of one consumer in one block: each named by its transaction's nonce, so
    # concurrent queries of one wallet each know their own.
    first = five.nonce(CONSUMER)
    five.commit([booking(2), booking(1, nonce=first + 1)])
    made = five.state.get(books.BOOKS_AT + str(five.tip.height))
    assert made == sorted(f"{CONSUMER.address}:{n}" for n in (first, first + 1))
    assert books.get(five.state, CONSUMER.address, first + 1)["slots"] == 1
    booked = five.tip.height
    t = ticket(five, ref_height=booked, nonce=0)
    wrong = ticket(five, ref_height=booked, nonce=2)
    assert_rejected(five, settle(five, wrong, attest(five, wrong, miners=(M1, M2))), "bad-slot")
    none = ticket(five, ref_height=booked - 1, nonce=0)
    assert_rejected(five, settle(five, none, attest(five, none, miners=(M1, M2))), "no-book")
    # a real book's slot, named with another block as its reference: no book there
    moved = ticket(five, ref_height=booked - 1, nonce=t["nonce"])
    assert_rejected(five, settle(five, moved, attest(five, moved, miners=(M1, M2))), "no-book")
    five.commit([settle(five, t, drawn(five, t))])  # slot 0 drawn and paid for


def test_a_ticket_of_a_book_for_another_model_is_refused(five: Chain) -> None:
    other = five.register_model(name="gemma", sha=GEMMA, price=PRICE)
    five.commit([other, five.register_miner(M1, models=[SMOL, GEMMA], nonce=five.nonce(M1))])
    booked = book(five, CONSUMER, slots=1, model=SMOL)
    t = ticket(five, ref_height=booked, nonce=0, model=GEMMA)
    assert_rejected(five, settle(five, t, attest(five, t, miners=(M1, M2))), "wrong-book")


def test_books_leave_the_state_with_the_ticket_window(five: Chain) -> None:
    booked = book(five, CONSUMER, slots=4)
    number = book_nonce(five, CONSUMER, booked)
    assert five.state.get(books.BOOKS_AT + str(booked)) == [f"{CONSUMER.address}:{number}"]
    five.advance_to(booked + WINDOW)
    assert books.get(five.state, CONSUMER.address, number) is not None  # the last block to settle
    t = ticket(five, ref_height=booked, nonce=1, expiry=booked + WINDOW + 5)
    atts = drawn(five, t)
    five.commit([])
    assert books.get(five.state, CONSUMER.address, number) is None
    assert five.state.get(books.BOOKS_AT + str(booked)) is None
    assert_rejected(five, settle(five, t, atts), "stale-ticket")


def test_the_drawn_pair_is_what_the_chain_settles(five: Chain) -> None:
    """Honest use: tickets on every slot of a book, each settled by the miners it drew."""
    booked = book(five, CONSUMER, slots=6)
    tickets = [ticket(five, ref_height=booked, nonce=slot) for slot in range(6)]
    pairs = [pair(five, t) for t in tickets]
    txs = [
        settle(five, t, drawn(five, t), nonce=five.nonce(GATEWAY) + i)
        for i, t in enumerate(tickets)
    ]
    five.commit(txs)
    for t, chosen in zip(tickets, pairs, strict=True):
        record = five.state.get("task:" + task_id(five.genesis.chain_id, t))
        assert (record["generator"], record["checker"]) == chosen
    assert book_at(five, CONSUMER, booked)["used"] == list(range(6))


def test_gateways_and_miners_refuse_a_ticket_beyond_its_slots_reserve(five: Chain) -> None:
    """`books.chosen`, which the gateway and every miner ask before any work, refuses a ticket
    that may pay more than its book reserved (`over-reserve`), as the chain's settlement does:
    a miner that served it could be paid only out of the consumer's other funds."""
    booked = book(five, CONSUMER, slots=2, max_price=DN // 10)
    five.commit([])  # the book's beacon is written
    within = ticket(five, ref_height=booked, nonce=0, max_price=DN // 10)
    assert books.chosen(five.state, within, lambda _: None, final=booked) == pair(five, within)
    beyond = ticket(five, ref_height=booked, nonce=1, max_price=DN // 10 + 1)
    with pytest.raises(TaskError) as refused:
        books.chosen(five.state, beyond, lambda _: None, final=booked)
    assert refused.value.reason == "over-reserve"
    found = books.get(five.state, CONSUMER.address, beyond["nonce"] // books.MAX_SLOTS)
    draw = books.draw(found["beacon"], CONSUMER.address, booked, beyond["nonce"])
    gen, chk = select_miners(eligible_miners(five.state, SMOL, booked), draw)
    atts = attest(five, beyond, miners=(KEYS[gen], KEYS[chk]))
    assert_rejected(five, settle(five, beyond, atts), "over-reserve")
