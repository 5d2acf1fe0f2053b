"""Prepaid escrow for queries (THREATS.md, "Prepaid escrow for queries"; Livepeer's TicketBroker
deposit, simplified): what a consumer sets aside so that the miners who serve its tickets are paid
even if it empties its wallet a moment later.

    escrow:<address>       {"amount": units held (unlocking included), "unlocking": units,
                            "unlock_at": height | null}
    escrow-due:<height>    [address, …] sorted: escrows whose unlock may complete at that block

- `escrow.deposit {amount}`: the balance after the fee covers it (`insufficient-funds`); the
  amount moves from the balance into the escrow.
- `escrow.withdraw {amount}`: the sender has an escrow (`no-escrow`) whose available part
  (`amount - unlocking`) covers it (`escrow-short`). The amount starts to unlock: it stops
  backing new tickets at once (miners and gateways count only `available`), and comes back to the
  balance automatically at the start of block `H + unlock_blocks` (`escrow_unlock_blocks`, at
  least `ticket_window_blocks + 1`). One unlock at a time:
  a second withdraw adds to the amount unlocking and moves the whole unlock to its own later
  height (Livepeer's unlock works the same way), so an unlock never completes early.
- At the start of each block (`release_due`), the escrows due there get their unlocking amount
  back in the balance (what is left of it after settlements); an escrow left with nothing is
  deleted.
- `task.settle` takes the price out of the escrow (`charge`), never out of the balance, so a
  wallet emptied after the ticket changes nothing. Unlocking units are still in the escrow and
  pay too. If the escrow holds less than the price, the settlement takes all it holds and pays it
  to the two miners (market.py); an escrow that holds nothing refuses the settlement
  (`consumer-cannot-pay`).

`escrow_unlock_blocks` (genesis) outlasts any ticket signed before the withdraw: a ticket
settles at most `ticket_window_blocks` after its reference height, and its reference height is at
most the tip when a miner accepts it, so an amount that was available when a miner said yes is
still in the escrow for as long as that ticket can settle. Escrowed units are part of the supply
(`state.supply_report` counts them under "escrows").
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
    """The escrow of `address` (all zero when it has none)."""
    found = state.get(ESCROW + address)
    return found if found is not None else {"amount": 0, "unlocking": 0, "unlock_at": None}


def available(state: StateReader, address: str) -> int:
    """The part of the escrow that backs new tickets: what it holds less what is unlocking."""
    found = held(state, address)
    return int(found["amount"]) - int(found["unlocking"])


def summary(state: StateReader, address: str) -> dict[str, Any]:
    """`{"amount", "available", "unlocking", "unlock_at"}` for APIs and the CLI."""
    found = held(state, address)
    return {**found, "available": found["amount"] - found["unlocking"]}


def _write(state: Overlay, address: str, amount: int, unlocking: int, at: int | None) -> None:
    record = {"amount": amount, "unlocking": unlocking, "unlock_at": at if unlocking else None}
    state.set(ESCROW + address, record if amount else None)


def deposit(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """The `escrow.deposit` rule (see the module docstring)."""
    amount = tx.payload["amount"]
    debit(state, tx.sender, amount, f"escrow deposit {amount} after fee {tx.fee}")
    found = held(state, tx.sender)
    _write(state, tx.sender, found["amount"] + amount, found["unlocking"], found["unlock_at"])


def unlock_blocks(genesis: Genesis) -> int:
    """How long a withdrawal unlocks: `escrow_unlock_blocks`, and at least one block more than
    the ticket window whatever the genesis says."""
    return max(genesis.param("escrow_unlock_blocks"), genesis.param("ticket_window_blocks") + 1)


def withdraw(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """The `escrow.withdraw` rule (see the module docstring)."""
    amount = tx.payload["amount"]
    found = state.get(ESCROW + tx.sender)
    if found is None:
        raise InvalidTx("the sender has no escrow", reason="no-escrow")
    free = found["amount"] - found["unlocking"]
    if amount > free:
        raise InvalidTx(
            f"cannot withdraw {amount} units: {free} of the escrow's {found['amount']} are "
            "available (the rest is unlocking already)",
            reason="escrow-short",
        )
    at = height + unlock_blocks(genesis)
    _write(state, tx.sender, found["amount"], found["unlocking"] + amount, at)
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
    to the balance."""
    for address, amount in releases(state, height).items():
        found = held(state, address)
        credit(state, address, amount)
        _write(state, address, found["amount"] - amount, 0, None)
    if state.get(ESCROW_DUE + str(height)) is not None:
        state.set(ESCROW_DUE + str(height), None)


def chargeable(state: StateReader, consumer: str, price: int) -> int:
    """How much of `price` the consumer's escrow pays: all of it, or all the escrow holds."""
    return min(price, int(held(state, consumer)["amount"]))


def charge(state: Overlay, consumer: str, price: int) -> int:
    """Take `price` (or all the escrow holds, if less) out of the consumer's escrow: first from
    the available part, then from what is unlocking. Returns the units taken."""
    found = held(state, consumer)
    taken = chargeable(state, consumer, price)
    if not taken:
        return 0
    left = found["amount"] - taken
    _write(state, consumer, left, min(found["unlocking"], left), found["unlock_at"])
    return taken


def short_of(free: int, max_price: int, open_prices: int) -> str | None:
    """Why an escrow with `free` units available cannot back a ticket of `max_price` on top of
    `open_prices` of the consumer's other open tickets, or None when it can (miners and gateways
    refuse with reason `escrow-short`)."""
    if free >= max_price + open_prices:
        return None
    also = f" plus {open_prices} units of its other open tickets" if open_prices else ""
    return (
        f"the consumer's escrow has {free} units available, less than this ticket's max_price "
        f"{max_price}{also}; deposit more with `dn escrow deposit`"
    )
