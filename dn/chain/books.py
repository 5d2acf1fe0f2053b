"""Ticket books: miner selection the consumer cannot grind (THREATS.md, "Selection the consumer
cannot grind"; docs/protocol.md, Selection).

A task's generator and checker are drawn with randomness that did not exist when the consumer
committed to the ticket: a consumer first books slots on chain, and each slot's draw uses the
hash of the block that holds the booking, which nobody but that block's proposer knows before
the block exists.

    book:<consumer>:<n>   {"model", "slots", "max_price", "height", "beacon": block hash | null,
                           "used": [slot, …]}: booked by the consumer's transaction of nonce n
    books-at:<height>     ["<consumer>:<n>", …] sorted: the books made in that block

- `task.book {model, slots, max_price}`: the model is registered and not retired
  (`unknown-model`, `model-retired`); `1 ≤ slots ≤ MAX_SLOTS` (schema); the fee pays `min_fee`
  per slot (`fee-too-low`), so every draw costs what a transaction costs; `slots × max_price`
  fits in the available part of the consumer's escrow (`escrow-short`) and is reserved there
  (`escrow.reserve`): `max_price` is the most any one slot may pay, so a consumer cannot promise
  miner pairs more than its escrow holds. The book is named by the booking transaction's own
  nonce, so one consumer may book any number of times in one block (each of its concurrent
  queries knows its own), and is written with `beacon` null.
- At the start of block H + 1 (`begin`), the books made in block H get `beacon` = the hash of
  block H (the new block's parent). At the start of block H + `ticket_window_blocks` + 1, when
  no ticket referring to H can settle any more, they are deleted and the reservation of their
  unused slots, `max_price × (slots − len(used))`, comes back to the escrow's available part.
- A ticket uses a slot: its `ref_height` is the book's height H and its `nonce` is
  `n × MAX_SLOTS + s` for slot s of the book booked with nonce n (`ticket_nonce`). It draws
  `draw(beacon, consumer, H, nonce)`, and the task's two miners are
  `select_miners(eligible_miners(model, H), draw)`. `task.settle` checks the book (`no-book`
  when there is none at that height, `wrong-book` for another model, `bad-slot`, `slot-used`),
  that the ticket's `max_price` is within the book's (`over-reserve`: market.py), and marks the
  slot used, so each slot pays for at most one task, out of its own reservation.

What it buys: the consumer can no longer try nonces offline until both roles are its own. Each
slot is one fair draw, paid before its outcome is known; a consumer who keeps only the slots
that landed on its own miners pays for all the others (with two of n miners its own, C(n, 2)
slots per washed task on average). Left: a proposer that is also the consumer can try block
variants (times, transaction order) for the hash of the block that holds its own book, on its
own turns; that shifts the odds of the slots in that one book, and is a validator's power
(THREATS.md's minority coalition).

The gateway and the miners know the beacon as soon as they have block H (`Store.canonical_hash`);
the chain reads it from the book once block H + 1 has written it, before any settlement can
refer to H.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from dn.chain import escrow
from dn.chain.genesis import Genesis
from dn.chain.ledger import MODEL, Overlay, StateReader
from dn.chain.tasks import eligible_miners, select_miners
from dn.chain.types import MAX_BOOK_SLOTS, Tx
from dn.encoding import canonical
from dn.errors import InvalidTx, TaskError

BOOK = "book:"
BOOKS_AT = "books-at:"
MAX_SLOTS = MAX_BOOK_SLOTS
DRAW_DOMAIN = b"dn-draw-v1"


def key(consumer: str, book: int) -> str:
    return f"{BOOK}{consumer}:{book}"


def get(state: StateReader, consumer: str, book: int) -> dict[str, Any] | None:
    """The book `consumer` made with its transaction of nonce `book`, if it is still kept."""
    found: dict[str, Any] | None = state.get(key(consumer, book))
    return found


def ticket_nonce(book: int, slot: int) -> int:
    """The `nonce` of a ticket for slot `slot` of the book booked with transaction nonce `book`."""
    return book * MAX_SLOTS + slot


def draw(beacon: str, consumer: str, height: int, nonce: int) -> str:
    """The hex key that orders the eligible miners for the ticket slot `nonce` of `consumer`'s
    book at `height` (`tasks.select_miners`): SHA-256 of a domain tag and the canonical JSON of
    the four."""
    return hashlib.sha256(DRAW_DOMAIN + canonical([beacon, consumer, height, nonce])).hexdigest()


def book(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """The `task.book` rule (see the module docstring)."""
    sha, slots = tx.payload["model"], tx.payload["slots"]
    model = state.get(MODEL + sha)
    if model is None:
        raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    if model["retired"]:
        raise InvalidTx(f"model {model['name']!r} is retired", reason="model-retired")
    least = slots * genesis.param("min_fee")
    if tx.fee < least:
        raise InvalidTx(
            f"a book of {slots} slots pays a fee of at least {least} units (min_fee per slot)",
            reason="fee-too-low",
        )
    escrow.reserve(state, tx.sender, slots * tx.payload["max_price"])
    record = {"model": sha, "slots": slots, "max_price": tx.payload["max_price"]}
    record |= {"height": height, "beacon": None, "used": []}
    state.set(key(tx.sender, tx.nonce), record)
    made = state.get(BOOKS_AT + str(height)) or []
    state.set(BOOKS_AT + str(height), sorted([*made, f"{tx.sender}:{tx.nonce}"]))


def begin(state: Overlay, height: int, parent_hash: str, genesis: Genesis) -> None:
    """At the start of block `height`: the books of block `height - 1` get its hash as their
    beacon; those of the block that left the ticket window are deleted (`expire`)."""
    for name in state.get(BOOKS_AT + str(height - 1)) or []:
        made = state.get(BOOK + name)
        state.set(BOOK + name, {**made, "beacon": parent_hash})
    gone = height - genesis.param("ticket_window_blocks") - 1
    if gone >= 0:
        for name in state.get(BOOKS_AT + str(gone)) or []:
            expire(state, name)
        state.set(BOOKS_AT + str(gone), None)


def expire(state: Overlay, name: str) -> None:
    """Delete the book `<consumer>:<n>` and give the reservation of its unused slots back to
    its consumer's escrow."""
    found = state.get(BOOK + name)
    consumer = name.rsplit(":", 1)[0]
    unused = found["slots"] - len(found["used"])
    escrow.unreserve(state, consumer, found["max_price"] * unused)
    state.set(BOOK + name, None)


def slot_of(state: StateReader, ticket: dict[str, Any]) -> dict[str, Any]:
    """The book a ticket's slot is in, or InvalidTx `no-book`, `wrong-book` (the book is for
    another model), `bad-slot` (past its last slot) or `slot-used`."""
    consumer, ref = ticket["consumer"], ticket["ref_height"]
    book, slot = divmod(ticket["nonce"], MAX_SLOTS)
    found = get(state, consumer, book)
    if found is None or found["height"] != ref:
        raise InvalidTx(f"{consumer} has no book of nonce {book} in block {ref}", reason="no-book")
    if found["model"] != ticket["model"]:
        raise InvalidTx(
            f"the book in block {ref} is for model {found['model'][:12]}…", reason="wrong-book"
        )
    if slot >= found["slots"]:
        raise InvalidTx(
            f"the book has slots 0 to {found['slots'] - 1}, not {slot}", reason="bad-slot"
        )
    if slot in found["used"]:
        raise InvalidTx(f"slot {slot} of the book in block {ref} is used", reason="slot-used")
    return found


def use(state: Overlay, ticket: dict[str, Any], found: dict[str, Any]) -> None:
    """Mark the ticket's slot used in `found`, the book `slot_of` gave for it."""
    book, slot = divmod(ticket["nonce"], MAX_SLOTS)
    state.set(key(ticket["consumer"], book), {**found, "used": sorted([*found["used"], slot])})


def covers(found: dict[str, Any], ticket: dict[str, Any]) -> None:
    """InvalidTx `over-reserve` when the ticket may pay more than its slot reserved of the
    escrow (`found`, its book: the book's `max_price`)."""
    if ticket["max_price"] > found["max_price"]:
        raise InvalidTx(
            f"the ticket's max_price {ticket['max_price']} is above its book's "
            f"{found['max_price']}, what the slot reserved",
            reason="over-reserve",
        )


def waiting(state: StateReader, final: int, tip: int, window: int) -> bool:
    """Whether a block above the final height `final` (and within the ticket window of `tip`)
    holds a book, whose consumer waits for it to be final before using it."""
    low = max(final, tip - window) + 1
    return any(state.get(BOOKS_AT + str(height)) for height in range(low, tip + 1))


def chosen(
    state: StateReader,
    ticket: dict[str, Any],
    block_hash: Callable[[int], str | None],
    *,
    final: int,
) -> tuple[str, str]:
    """The (generator, checker) a ticket's slot draws, for a gateway or miner whose `state` may
    be the state after the book's own block (the beacon not written yet: `block_hash(height)`,
    the hash of the canonical block there, gives it) and whose chain is final up to `final`.
    TaskError with the reasons of `slot_of` and `covers`, `not-final` when the book's block is
    above `final` (a reorganisation could still replace it and change the draw, leaving the task
    unsettleable), `ahead` when it is not here yet, `no-miner` / `one-miner`."""
    try:
        found = slot_of(state, ticket)
        covers(found, ticket)
    except InvalidTx as exc:
        raise TaskError(exc.message, reason=exc.reason) from None
    ref = ticket["ref_height"]
    if ref > final:
        raise TaskError(
            f"the ticket's book, in block {ref}, is not final on this node yet (final: {final})",
            reason="not-final",
        )
    beacon = found["beacon"] or block_hash(ref)
    if beacon is None:
        raise TaskError(f"block {ref} is not on this node's chain yet", reason="ahead")
    eligible = eligible_miners(state, ticket["model"], ref)
    return select_miners(eligible, draw(beacon, ticket["consumer"], ref, ticket["nonce"]))
