"""Paid answers (DESIGN.md section 7): the `task.settle` rule, which settles one task and
splits its payment.

`task.settle` {ticket, generator, checker}: anyone may send it; the sender pays only the fee,
the ticket's consumer pays `price_of(model price, tokens)`. Checks, in order: the ticket's
schema and consumer signature (`bad-ticket`, `bad-ticket-signature`: `verify_ticket`); the model
is registered (`unknown-model`) and, if retired, the ticket was made before it
(`model-retired`); the ticket's reference height is inside the ticket window (`stale-ticket`)
and it has not expired (`expired-ticket`); the task is not settled yet (`task-settled`); the
ticket's slot is in the consumer's book at its reference height and unused (`no-book`,
`wrong-book`, `bad-slot`, `slot-used`: books.py); the ticket's `max_price` is within the book's
`max_price`, what the slot reserved (`over-reserve`); both attestations
(`check_attestations`); the generator and checker are the two miners the slot's draw selects
from those serving the model at the reference height (`wrong-miners`); the price is within the
ticket's `max_price` (`over-max-price`).

The slot is marked used and its reservation (the book's `max_price`) leaves the escrow's
`reserved` (`escrow.charge`). A confirmed answer is paid out of the consumer's prepaid escrow
(never the balance, so a wallet emptied after the ticket stops nothing) and split by
`split_fee` (creator, generator, checker, validator pool, the model's backers by stake, burn):
the price is at most the ticket's `max_price`, which is at most the book's, which the escrow has
held reserved since the booking, so the escrow always covers it. A rejected answer pays nothing
and frees the slot's reservation all the same. The transaction's fee is its sender's, from its
balance, as for any transaction: anyone may send a settlement (the checker does if the consumer
does not: backstop.py), so an empty wallet cannot hold it up. Either way the task is recorded
under `task:<id>` and counted in the epoch's PoWR statistics (`powr_rules.record_task`). Models
and miners have their own rules (`models.py`, `miners.py`).
"""

from __future__ import annotations

from typing import Any

from dn.chain import books, escrow
from dn.chain.economics import split_fee
from dn.chain.genesis import Genesis
from dn.chain.ledger import MODEL, POOL_VALIDATORS, TASK, Overlay, StateReader, burn, credit
from dn.chain.powr_rules import record_task
from dn.chain.staking import backers_of
from dn.chain.tasks import (
    CONFIRMED,
    REJECTED,
    check_attestations,
    eligible_miners,
    price_of,
    select_miners,
    task_id,
    verify_ticket,
)
from dn.chain.types import Tx
from dn.errors import InvalidTx, TaskError


def task_settle(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """Pay for one answer (DESIGN.md section 7). Anyone may send it; the sender pays only the
    fee, the ticket's consumer pays `price_of(model price, tokens)`, split by `split_fee`."""
    ticket, gen, chk = tx.payload["ticket"], tx.payload["generator"], tx.payload["checker"]
    chain_id = genesis.chain_id
    verify_ticket(chain_id, ticket)
    sha = ticket["model"]
    model = state.get(MODEL + sha)
    if model is None:
        raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    # Retiring stops new tasks; a ticket made before it still settles, so the miners who did
    # the work are paid.
    if model["retired"] and ticket["ref_height"] >= model.get("retired_at", 0):
        raise InvalidTx(f"model {model['name']!r} is retired", reason="model-retired")
    model = dict(model)
    ref, oldest = ticket["ref_height"], max(0, height - genesis.param("ticket_window_blocks"))
    if not oldest <= ref < height:
        raise InvalidTx(
            f"ticket refers to height {ref}; block {height} takes {oldest} to {height - 1}",
            reason="stale-ticket",
        )
    if ticket["expiry"] < height:
        raise InvalidTx(f"ticket expired at height {ticket['expiry']}", reason="expired-ticket")
    task = task_id(chain_id, ticket)
    if state.get(TASK + task) is not None:
        raise InvalidTx(f"task {task[:12]}… is settled already", reason="task-settled")
    slot = books.slot_of(state, ticket)
    books.covers(slot, ticket)  # over-reserve
    check_attestations(chain_id, task, gen, chk, ticket["max_tokens"])
    draw = books.draw(slot["beacon"], ticket["consumer"], ref, ticket["nonce"])
    try:
        chosen = select_miners(eligible_miners(state, sha, ref), draw)
    except TaskError as exc:
        raise InvalidTx(f"no valid miner pair: {exc.message}", reason="wrong-miners") from None
    if (gen["miner"], chk["miner"]) != chosen:
        raise InvalidTx(
            "the generator and checker are not the miners this ticket selects",
            reason="wrong-miners",
        )
    books.use(state, ticket, slot)
    tokens, confirmed = gen["tokens"], chk["verdict"] == CONFIRMED
    paid = price_of(model["price"], tokens) if confirmed else 0
    if paid > ticket["max_price"]:
        raise InvalidTx(
            f"{tokens} tokens cost {paid} units, above the ticket's max_price "
            f"{ticket['max_price']}",
            reason="over-max-price",
        )
    escrow.charge(state, ticket["consumer"], paid, slot["max_price"])
    burned = 0
    if confirmed:
        shares = payout(state, genesis, paid, sha)
        _pay(state, model["creator"], gen["miner"], chk["miner"], shares)
        burned = shares["burn"]  # bounds the usage-tied emission (powr_rules.record_task)
        model.update(tasks=model["tasks"] + 1, tokens=model["tokens"] + tokens)
    else:
        model.update(rejected=model["rejected"] + 1)  # validators rule on it (a later issue)
    state.set(MODEL + sha, model)
    record_task(
        state, genesis, height, sha, gen["miner"], tokens, confirmed=confirmed, burned=burned
    )
    state.set(
        TASK + task,
        {
            "model": sha,
            "consumer": ticket["consumer"],
            "generator": gen["miner"],
            "checker": chk["miner"],
            "tokens": tokens,
            "paid": paid,
            "status": CONFIRMED if confirmed else REJECTED,
            "height": height,
            "output_hash": chk["output_hash"],
            "commitment": chk["commitment"],
            "burned": burned,
        },
    )


def payout(state: StateReader, genesis: Genesis, price: int, model: str) -> dict[str, Any]:
    """How a confirmed task's `price` is paid out: `split_fee` among the model's backers as they
    stand before the settlement."""
    return split_fee(price, genesis, backers_of(state, model))


def _pay(
    state: Overlay, creator: str, generator: str, checker: str, shares: dict[str, Any]
) -> None:
    """Credit each part of a split (a zero part writes nothing)."""
    payees = [(creator, shares["creator"]), (generator, shares["generator"])]
    payees += [(checker, shares["checker"]), *shares["backers"].items()]
    for address, amount in payees:
        if amount:
            credit(state, address, amount)
    if shares["validators"]:
        pool = state.get(POOL_VALIDATORS) or {"balance": 0}
        state.set(POOL_VALIDATORS, {"balance": pool["balance"] + shares["validators"]})
    if shares["burn"]:
        burn(state, shares["burn"])
