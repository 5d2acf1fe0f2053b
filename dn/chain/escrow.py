"""Prepaid escrow for queries (THREATS.md, "Prepaid escrow for queries"; Livepeer's TicketBroker
deposit and reserve, simplified): what a consumer sets aside so that the miners who serve its
tickets are paid even if it empties its wallet a moment later.

    escrow:<address>       {"amount": units held (unlocking and reserved included), "unlocking":
                            units, "unlock_at": height | null, "reserved": units its books hold
                            (absent: 0)}
    escrow-due:<height>    [address, …] sorted: escrows whose unlock may complete at that block

Always `reserved + unlocking ≤ amount`; the part that is neither, `available`, is what a new book
or a withdraw may take. A record is deleted only when its amount is 0 (then reserved is 0 too).

- `escrow.deposit {amount}`: the balance after the fee covers it (`insufficient-funds`); the
  amount moves from the balance into the escrow.
- `escrow.withdraw {amount}`: the sender has an escrow (`no-escrow`) whose available part
  covers it (`escrow-short`). The amount starts to unlock and comes back to the balance
  automatically at the start of block `H + unlock_blocks` (`escrow_unlock_blocks`, at least
  `ticket_window_blocks + 1`). One unlock at a time: a second withdraw adds to the amount
  unlocking and moves the whole unlock to its own later height (Livepeer's unlock works the same
  way), so an unlock never completes early.
- `task.book {model, slots, max_price}` (books.py) reserves `slots × max_price` of the available
  part (`reserve`; `escrow-short` when it does not fit): each slot's most is set aside before
  any ticket is signed, so tickets can never promise more than the escrow holds, however many
  miner pairs they are spread over.
- `task.settle` (market.py) takes the task's price out of the amount and gives the slot's whole
  reservation (the book's `max_price`) back to `available` (`charge`); a rejected answer gives it
  back and pays nothing (`charge` of 0). The price is at most the book's `max_price`, so the
  charge is always covered, never out of the balance: a wallet emptied after the ticket changes
  nothing, and neither does a withdraw (it cannot take reserved units).
- When a book leaves the ticket window (`books.begin`), the reservation of its unused slots
  comes back to `available` (`unreserve`).
- At the start of each block (`release_due`), the escrows due there get their unlocking amount
  back in the balance; an escrow left with nothing is deleted.

Each step keeps the invariant: a reservation or a withdraw takes only from `available`; a
charge removes at most the reservation it releases from the amount; the end of an unlock removes
exactly `unlocking`. So the begin-of-block hooks (the unlocks, then the books that leave the
window) may run in either order. Escrowed units are part of the supply (`state.supply_report`
counts the whole amount, reserved included, under "escrows").
"""

from __future__ import annotations

from typing import Any

from dn.chain.genesis import Genesis
from dn.chain.ledger import Overlay, StateReader, credit, debit
from dn.chain.types import Tx
from dn.errors import InvalidTx

ESCROW = "escrow:"
ESCROW_DUE = "escrow-due:"


def held(state: StateReader, address: str) -> dict[str, Any]:
    """The escrow of `address` (all zero when it has none; `reserved` 0 when absent)."""
    found = state.get(ESCROW + address)
    empty = {"amount": 0, "unlocking": 0, "unlock_at": None, "reserved": 0}
    return {**empty, **found} if found is not None else empty


def available(state: StateReader, address: str) -> int:
    """The part of the escrow that a new book or a withdraw may take: what it holds less what is
    unlocking and what its books reserve."""
    found = held(state, address)
    return int(found["amount"]) - int(found["unlocking"]) - int(found["reserved"])


def summary(state: StateReader, address: str) -> dict[str, Any]:
    """`{"amount", "available", "unlocking", "unlock_at", "reserved"}` for APIs and the CLI."""
    return {**held(state, address), "available": available(state, address)}


def _write(state: Overlay, address: str, found: dict[str, Any]) -> None:
    """Store the escrow `found` (deleted when its amount is 0). The rules keep
    `reserved + unlocking ≤ amount` (module docstring), so an amount of 0 has nothing reserved."""
    amount, unlocking, reserved = found["amount"], found["unlocking"], found["reserved"]
    at = found["unlock_at"] if unlocking else None
    record = {"amount": amount, "unlocking": unlocking, "unlock_at": at, "reserved": reserved}
    state.set(ESCROW + address, record if amount else None)


def deposit(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """The `escrow.deposit` rule (see the module docstring)."""
    amount = tx.payload["amount"]
    debit(state, tx.sender, amount, f"escrow deposit {amount} after fee {tx.fee}")
    found = held(state, tx.sender)
    _write(state, tx.sender, {**found, "amount": found["amount"] + amount})


def unlock_blocks(genesis: Genesis) -> int:
    """How long a withdrawal unlocks: `escrow_unlock_blocks`, and at least one block more than
    the ticket window whatever the genesis says."""
    return max(genesis.param("escrow_unlock_blocks"), genesis.param("ticket_window_blocks") + 1)


def withdraw(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """The `escrow.withdraw` rule (see the module docstring)."""
    amount = tx.payload["amount"]
    if state.get(ESCROW + tx.sender) is None:
        raise InvalidTx("the sender has no escrow", reason="no-escrow")
    found, free = held(state, tx.sender), available(state, tx.sender)
    if amount > free:
        raise InvalidTx(
            f"cannot withdraw {amount} units: {free} of the escrow's {found['amount']} are "
            "available (the rest is unlocking already or reserved by books)",
            reason="escrow-short",
        )
    at = height + unlock_blocks(genesis)
    _write(state, tx.sender, {**found, "unlocking": found["unlocking"] + amount, "unlock_at": at})
    due = state.get(ESCROW_DUE + str(at)) or []
    if tx.sender not in due:
        state.set(ESCROW_DUE + str(at), sorted([*due, tx.sender]))


def releases(state: StateReader, height: int) -> dict[str, int]:
    """What the unlocks that complete at the start of block `height` give back, by address (an
    escrow whose unlock was moved later by a second withdraw is not due here)."""
    out: dict[str, int] = {}
    for address in state.get(ESCROW_DUE + str(height)) or []:
        found = state.get(ESCROW + address)
        if found is not None and found["unlock_at"] == height and found["unlocking"]:
            out[address] = int(found["unlocking"])
    return out


def release_due(state: Overlay, height: int) -> None:
    """Complete the unlocks due at the start of block `height`: the unlocking amount goes back
    to the balance (the reserved part stays)."""
    for address, amount in releases(state, height).items():
        found = held(state, address)
        credit(state, address, amount)
        _write(state, address, {**found, "amount": found["amount"] - amount, "unlocking": 0})
    if state.get(ESCROW_DUE + str(height)) is not None:
        state.set(ESCROW_DUE + str(height), None)


def reserve(state: Overlay, consumer: str, units: int) -> None:
    """Set `units` of the consumer's available escrow aside for a book, or InvalidTx
    `escrow-short` when they do not fit."""
    free = available(state, consumer)
    if units > free:
        raise InvalidTx(
            f"the escrow has {free} units available and the book needs {units} "
            "(slots × max_price); deposit more with `dn escrow deposit`",
            reason="escrow-short",
        )
    if units:
        found = held(state, consumer)
        _write(state, consumer, {**found, "reserved": found["reserved"] + units})


def unreserve(state: Overlay, consumer: str, units: int) -> None:
    """Give `units` of the consumer's reservation back to its available part."""
    if units:
        found = held(state, consumer)
        _write(state, consumer, {**found, "reserved": found["reserved"] - units})


def charge(state: Overlay, consumer: str, price: int, reserved: int) -> None:
    """Take `price` out of the consumer's escrow for a slot that reserved `reserved` units
    (`price ≤ reserved`: the rest of the reservation comes back to the available part)."""
    if reserved:
        found = held(state, consumer)
        left = {"amount": found["amount"] - price, "reserved": found["reserved"] - reserved}
        _write(state, consumer, {**found, **left})
