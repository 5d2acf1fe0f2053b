"""The escrow reserve per book (protocol 5; dn/chain/escrow.py, dn/chain/books.py), on the pure
state machine.

Written attacker first. The attack, as it was: a consumer with an escrow of E books two slots and
signs a ticket of max_price E on each. Each miner pair checked the escrow on its own (E is
available: yes), both answered, and the second settlement found the escrow short: it paid part
and recorded the rest as `owed` (on the code before the reserve the test below saw
`[(9506, 0), (4753, 4753)]` for the two tasks' paid and owed). Now a book reserves
`slots × max_price` of the escrow's available part when it is made, so the second book is
refused `escrow-short` and every task that settles is paid in full.

Expected values come from the rule: a book reserves slots × max_price; a settled slot (confirmed
or rejected) gives back its whole max_price and the amount loses the price; a book that leaves
the window gives back max_price for each unused slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dn.chain import books, escrow
from dn.chain.ledger import Overlay
from dn.chain.state import apply_tx, begin_block
from dn.chain.tasks import task_id
from dn.chain.types import Tx
from dn.errors import InvalidTx
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import DN, GATEWAY, M1, M2, SMOL
from tests.unit.test_chain_powr import PowrChain, new_chain
from tests.unit.test_chain_state import assert_rejected
from tests.unit.test_chain_tasks import CHARGE, PRICE, attest, pair, settle, ticket
from tests.unit.test_powr_wash import verified

ATTACKER = Keypair.from_seed(b"reserve-attacker".ljust(32, b"."))
E = CHARGE * 3 // 2  # the attacker's escrow in the attack: one task's price and a half
WINDOW = 5  # test_chain_powr's ticket_window_blocks
UNLOCK = WINDOW + 1  # escrow_unlock_blocks=2 is raised to the shortest the rule allows


def market(deposit: int = E) -> PowrChain:
    """SMOL at PRICE served by M1 and M2 from height 2; ATTACKER has 10 DN and an escrow of
    `deposit` (height 3)."""
    chain = new_chain(escrow_unlock_blocks=2)
    chain.commit([chain.register_model(price=PRICE)])
    chain.commit(
        [
            chain.register_miner(M1),
            chain.register_miner(M2),
            chain.send(GATEWAY, "transfer", {"to": ATTACKER.address, "amount": 10 * DN}),
        ]
    )
    chain.commit([chain.send(ATTACKER, "escrow.deposit", {"amount": deposit})])
    return chain


def book_tx(chain: PowrChain, slots: int, max_price: int, **kw: Any) -> Tx:
    payload = {"model": SMOL, "slots": slots, "max_price": max_price}
    return chain.send(ATTACKER, "task.book", payload, fee=slots * chain.min_fee, **kw)


def refused(chain: PowrChain, tx: Tx) -> str | None:
    """Why the next block refuses `tx` (its begin-of-block hooks run first), or None. Either
    way that block is committed, with `tx` or empty, so the chain's height moves as the
    model's does."""
    overlay, height = Overlay(chain.state), chain.tip.height + 1
    begin_block(overlay, height, chain.genesis, chain.tip.hash)
    try:
        apply_tx(overlay, tx, chain.genesis, GATEWAY.address, height=height)
    except InvalidTx as exc:
        chain.commit([])
        return exc.reason
    chain.commit([tx])
    return None


def task(chain: PowrChain, t: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = chain.state.get("task:" + task_id(chain.genesis.chain_id, t))
    return found


def held(chain: PowrChain) -> tuple[int, int, int, int]:
    """ATTACKER's escrow: (amount, unlocking, reserved, available)."""
    found = escrow.summary(chain.state, ATTACKER.address)
    return found["amount"], found["unlocking"], found["reserved"], found["available"]


def settled(chain: PowrChain, ref: int, slot: int, price: int, verdict: str = "confirmed") -> None:
    """Settle a ticket of max_price `price` on `slot` of ATTACKER's book at `ref`."""
    t = ticket(chain, ATTACKER, ref_height=ref, nonce=slot, max_price=price)
    chain.commit([settle(chain, t, attest(chain, t, verdict=verdict))])
    assert task(chain, t)["status"] == verdict


# --- the attack -----------------------------------------------------------------------------


def test_tickets_beyond_the_escrow_cannot_all_be_booked(tmp_path: Path) -> None:
    chain = market()
    reasons, tickets = [], []
    for _ in range(2):  # two books of one slot, each backing a ticket of max_price E
        reasons.append(refused(chain, book_tx(chain, 1, E)))
        if reasons[-1] is None:
            tickets.append(ticket(chain, ATTACKER, ref_height=chain.tip.height, max_price=E))
    served = [
        settle(chain, t, attest(chain, t), nonce=chain.nonce(GATEWAY) + i)
        for i, t in enumerate(tickets)
    ]
    chain.commit(served)  # every ticket answered by the miners its slot drew
    records = [task(chain, t) for t in tickets]
    assert [r["status"] for r in records] == ["confirmed"] * len(tickets)
    assert [r["paid"] for r in records] == [CHARGE] * len(tickets)  # old code: [CHARGE, E - CHARGE]
    assert reasons == [None, "escrow-short"]
    assert held(chain) == (E - CHARGE, 0, 0, E - CHARGE)
    verified(chain, tmp_path)


# --- the reserve ----------------------------------------------------------------------------


def test_a_withdraw_cannot_take_reserved_units(tmp_path: Path) -> None:
    chain = market()
    half = E // 2
    chain.commit([book_tx(chain, 1, half)])
    assert held(chain) == (E, 0, half, E - half)
    assert_rejected(chain, chain.send(ATTACKER, "escrow.withdraw", {"amount": E}), "escrow-short")
    over = chain.send(ATTACKER, "escrow.withdraw", {"amount": E - half + 1})
    assert_rejected(chain, over, "escrow-short")
    chain.commit([chain.send(ATTACKER, "escrow.withdraw", {"amount": E - half})])
    assert held(chain) == (E, E - half, half, 0)
    assert_rejected(chain, book_tx(chain, 1, 1), "escrow-short")  # nothing left to reserve
    verified(chain, tmp_path)


def test_a_settled_slot_gives_back_its_whole_reservation(tmp_path: Path) -> None:
    chain = market(deposit=10 * CHARGE)
    most = 2 * CHARGE  # each slot's max_price
    chain.commit([book_tx(chain, 2, most)])
    ref = chain.tip.height
    assert held(chain) == (10 * CHARGE, 0, 2 * most, 10 * CHARGE - 2 * most)
    settled(chain, ref, 0, most)  # pays CHARGE, frees `most`
    assert held(chain) == (9 * CHARGE, 0, most, 9 * CHARGE - most)
    settled(chain, ref, 1, most, verdict="rejected")  # pays nothing, frees `most` all the same
    assert held(chain) == (9 * CHARGE, 0, 0, 9 * CHARGE)
    verified(chain, tmp_path)


def test_a_ticket_above_its_books_max_price_is_refused() -> None:
    chain = market()
    chain.commit([book_tx(chain, 1, CHARGE)])
    ref = chain.tip.height
    t = ticket(chain, ATTACKER, ref_height=ref, max_price=CHARGE + 1)
    drawn = pair(chain, ticket(chain, ATTACKER, ref_height=ref, max_price=CHARGE))  # same slot
    miners = tuple({kp.address: kp for kp in (M1, M2)}[m] for m in drawn)
    atts = attest(chain, t, miners=miners)  # type: ignore[arg-type]
    assert_rejected(chain, settle(chain, t, atts), "over-reserve")
    settled(chain, ref, 0, CHARGE)  # at the book's max_price exactly: paid
    assert held(chain) == (E - CHARGE, 0, 0, E - CHARGE)


def test_an_unused_book_comes_back_when_it_leaves_the_window(tmp_path: Path) -> None:
    chain = market(deposit=10 * CHARGE)
    chain.commit([book_tx(chain, 3, CHARGE)])
    booked = chain.tip.height
    settled(chain, booked, 1, CHARGE)
    number = chain.nonce(ATTACKER) - 1  # the book is ATTACKER's last transaction
    chain.advance_to(booked + WINDOW)  # its last block to settle in
    assert held(chain) == (9 * CHARGE, 0, 2 * CHARGE, 7 * CHARGE)
    chain.commit([])
    assert books.get(chain.state, ATTACKER.address, number) is None
    assert held(chain) == (9 * CHARGE, 0, 0, 9 * CHARGE)
    verified(chain, tmp_path)


def test_an_unlock_and_a_book_that_end_in_the_same_block(tmp_path: Path) -> None:
    """A book and a withdraw of the rest in one block: the unlock completes in the block where
    the book leaves the window (UNLOCK = WINDOW + 1), and both hooks keep the invariant."""
    chain = market(deposit=10 * CHARGE)
    nonce = chain.nonce(ATTACKER)
    rest = chain.send(ATTACKER, "escrow.withdraw", {"amount": 6 * CHARGE}, nonce=nonce + 1)
    chain.commit([book_tx(chain, 2, 2 * CHARGE, nonce=nonce), rest])
    start = chain.tip.height
    assert held(chain) == (10 * CHARGE, 6 * CHARGE, 4 * CHARGE, 0)
    balance = chain.balance(ATTACKER)
    chain.advance_to(start + UNLOCK)
    assert chain.balance(ATTACKER) == balance + 6 * CHARGE
    assert held(chain) == (4 * CHARGE, 0, 0, 4 * CHARGE)
    verified(chain, tmp_path)


def test_a_free_book_reserves_nothing() -> None:
    chain = market()
    chain.commit([book_tx(chain, 4, 0)])
    assert held(chain) == (E, 0, 0, E)
    assert chain.state.get(escrow.ESCROW + GATEWAY.address) is None
    chain.commit([chain.send(GATEWAY, "task.book", {"model": SMOL, "slots": 1, "max_price": 0})])
    assert chain.state.get(escrow.ESCROW + GATEWAY.address) is None  # no escrow written


# --- the invariant under any sequence -------------------------------------------------------


@dataclass
class Model:
    """ATTACKER's escrow as the rule says it should be, kept apart from the chain."""

    amount: int
    unlocking: int = 0
    unlock_at: int | None = None
    books: dict[int, tuple[int, int, set[int]]] = field(default_factory=dict)  # height: …

    @property
    def reserved(self) -> int:
        return sum(most * (slots - len(used)) for slots, most, used in self.books.values())

    @property
    def available(self) -> int:
        return self.amount - self.unlocking - self.reserved

    def begin(self, height: int) -> None:
        if self.unlock_at == height:
            self.amount, self.unlocking, self.unlock_at = self.amount - self.unlocking, 0, None
        self.books.pop(height - WINDOW - 1, None)


PRICES = st.sampled_from([0, CHARGE // 2, CHARGE, 2 * CHARGE])
OPS = st.one_of(
    st.tuples(st.just("deposit"), st.integers(1, 6 * CHARGE)),
    st.tuples(st.just("withdraw"), st.integers(1, 6 * CHARGE)),
    st.tuples(st.just("book"), st.integers(1, 4), PRICES),
    st.tuples(st.just("settle"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("pass"), st.integers(1, 4)),
)


def step(chain: PowrChain, model: Model, op: tuple[Any, ...]) -> None:
    """Play `op` on the chain and on the model; a refusal is the one the model predicts."""
    height = chain.tip.height + 1
    kind = op[0]
    if kind == "pass":
        for _ in range(op[1]):
            model.begin(chain.tip.height + 1)
            chain.commit([])
        return
    model.begin(height)
    if kind == "settle":
        return settle_step(chain, model, op[1], op[2])
    if kind == "deposit":
        tx, fits = chain.send(ATTACKER, "escrow.deposit", {"amount": op[1]}), True
    elif kind == "withdraw":
        tx = chain.send(ATTACKER, "escrow.withdraw", {"amount": op[1]})
        fits = op[1] <= model.available
    else:
        tx, fits = book_tx(chain, op[1], op[2]), op[1] * op[2] <= model.available
    why = refused(chain, tx)
    empty = kind == "withdraw" and model.amount == 0
    expected = None if fits else ("no-escrow" if empty else "escrow-short")
    assert why == expected, (op, why)
    if why is None:
        apply_to_model(model, op, height)


def apply_to_model(model: Model, op: tuple[Any, ...], height: int) -> None:
    if op[0] == "deposit":
        model.amount += op[1]
    elif op[0] == "withdraw":
        model.unlocking, model.unlock_at = model.unlocking + op[1], height + UNLOCK
    else:
        model.books[height] = (op[1], op[2], set())


def settle_step(chain: PowrChain, model: Model, pick: int, confirmed: bool) -> None:
    """Settle one open slot of a book still in the window (the `pick`-th, if there are any)."""
    height = chain.tip.height + 1
    open_slots = [
        (ref, slot)
        for ref, (slots, _, used) in sorted(model.books.items())
        if height - WINDOW <= ref < height
        for slot in range(slots)
        if slot not in used
    ]
    if not open_slots:
        chain.commit([])
        return
    ref, slot = open_slots[pick % len(open_slots)]
    most = model.books[ref][1]
    confirmed = confirmed and most >= CHARGE  # a cheaper slot cannot pay for TOKENS tokens
    t = ticket(chain, ATTACKER, ref_height=ref, nonce=slot, max_price=most)
    atts = attest(chain, t, verdict="confirmed" if confirmed else "rejected")
    chain.commit([settle(chain, t, atts)])
    assert task(chain, t)["paid"] == (CHARGE if confirmed else 0)
    model.amount -= CHARGE if confirmed else 0
    model.books[ref][2].add(slot)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(OPS, min_size=1, max_size=14))
def test_reserved_and_unlocking_never_exceed_the_amount(ops: list[tuple[Any, ...]]) -> None:
    chain = market(deposit=3 * CHARGE)
    model = Model(amount=3 * CHARGE)
    for op in ops:
        step(chain, model, op)  # every commit checks the supply invariant (Chain.commit)
        amount, unlocking, reserved, available = held(chain)
        assert reserved >= 0 and unlocking >= 0 and reserved + unlocking <= amount
        assert (amount, unlocking, reserved, available) == (
            model.amount,
            model.unlocking,
            model.reserved,
            model.available,
        ), op
        found = chain.state.get(escrow.ESCROW + ATTACKER.address)
        assert (found is None) == (amount == 0)
