"""The market's rules: models (`model.register`, `model.retire`), miners (`miner.register`,
`miner.exit`) and paid answers (`task.settle`), DESIGN.md sections 4 and 7.

A model is registered once by its creator under a unique live name and retired by the creator
only. A miner's registration bonds at least `miner_min_bond` and names the live models it serves;
`serving:<model>` keeps who served what when, so a settlement is checked against the miners its
ticket's reference height selected. `task.settle` re-checks the ticket, the choice of the two
miners, both attestations and the price, then splits the payment by `split_fee`.
"""

from __future__ import annotations

from typing import Any

from dn.chain import powr_rules
from dn.chain.economics import split_fee
from dn.chain.genesis import Genesis
from dn.chain.ledger import (
    MINER,
    MODEL,
    MODEL_NAME,
    POOL_VALIDATORS,
    TASK,
    UNLOCK,
    Overlay,
    StateReader,
    burn,
    credit,
    debit,
)
from dn.chain.staking import BACKERS, STAKE
from dn.chain.tasks import (
    CONFIRMED,
    REJECTED,
    SERVING,
    check_attestations,
    eligible_miners,
    price_of,
    select_miners,
    serving_changed,
    task_id,
    verify_ticket,
)
from dn.chain.types import Tx
from dn.errors import InvalidTx, TaskError

# --- models ---------------------------------------------------------------------------------


def live_model(state: StateReader, sha: str, retired_reason: str) -> dict[str, Any]:
    found = state.get(MODEL + sha)
    if found is None:
        raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    if found["retired"]:
        raise InvalidTx(f"model {found['name']!r} is retired", reason=retired_reason)
    return dict(found)


def model_register(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    p = tx.payload
    if state.get(MODEL + p["model"]) is not None:
        raise InvalidTx(f"model {p['model'][:12]}… is registered already", reason="model-exists")
    if state.get(MODEL_NAME + p["name"]) is not None:
        raise InvalidTx(f"another live model is named {p['name']!r}", reason="name-taken")
    state.set(
        MODEL + p["model"],
        {
            "creator": tx.sender,
            "name": p["name"],
            "domain": p["domain"],
            "price": p["price"],
            "license": p["license"],
            "size": p["size"],
            "height": height,
            "retired": False,
            "tasks": 0,
            "tokens": 0,
            "rejected": 0,
        },
    )
    state.set(MODEL_NAME + p["name"], p["model"])


def model_retire(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    sha = tx.payload["model"]
    found = state.get(MODEL + sha)
    if found is None:
        raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    if found["creator"] != tx.sender:
        raise InvalidTx("only the model's creator may retire it", reason="not-creator")
    if found["retired"]:
        raise InvalidTx(f"model {found['name']!r} is retired already", reason="already-retired")
    state.set(MODEL + sha, {**found, "retired": True, "retired_at": height})
    if state.get(MODEL_NAME + found["name"]) == sha:
        state.set(MODEL_NAME + found["name"], None)  # the name is free for a new model


# --- miners ---------------------------------------------------------------------------------


def _set_serving(
    state: Overlay, model: str, miner: str, height: int, genesis: Genesis, *, serving: bool
) -> None:
    key = SERVING + model
    window = genesis.param("ticket_window_blocks")
    intervals = serving_changed(state.get(key) or [], miner, height, window, serving=serving)
    state.set(key, intervals or None)


def miner_register(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """Register, or update a live registration: `bond` is the total bond wanted (at least
    `miner_min_bond`, never less than the miner already holds); the difference moves from the
    sender's balance. `url` and `models` replace the old ones, from this block on."""
    p = tx.payload
    bond = p["bond"]
    if bond < genesis.param("miner_min_bond"):
        raise InvalidTx(
            f"bond {bond} is below the minimum of {genesis.param('miner_min_bond')} units",
            reason="bond-too-low",
        )
    models = sorted(set(p["models"]))
    for sha in models:
        live_model(state, sha, retired_reason="model-retired")
    current = state.get(MINER + tx.sender)
    live = current is not None and current["exited"] is None
    held = current["bond"] if live else 0
    if bond < held:
        raise InvalidTx(
            f"bond {bond} is less than the {held} units already bonded; a bond only shrinks "
            "by exiting",
            reason="bond-decrease",
        )
    if bond > held:
        debit(state, tx.sender, bond - held, f"bond {bond - held} after fee {tx.fee}")
    before = set(current["models"]) if live else set()
    for sha in sorted(before - set(models)):
        _set_serving(state, sha, tx.sender, height, genesis, serving=False)
    for sha in sorted(set(models) - before):
        _set_serving(state, sha, tx.sender, height, genesis, serving=True)
    state.set(
        MINER + tx.sender,
        {
            "bond": bond,
            "url": p["url"],
            "models": models,
            "since": current["since"] if live else height,
            "exited": None,
        },
    )


def miner_exit(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """Stop serving now; the bond comes back at the start of block `height + unbonding_blocks`
    (until then it stays slashable, and counted in the supply, under `unlock:`)."""
    current = state.get(MINER + tx.sender)
    if current is None or current["exited"] is not None:
        raise InvalidTx("the sender is not a registered miner", reason="not-miner")
    exit_miner(state, tx.sender, height, genesis)


def exit_miner(state: Overlay, address: str, height: int, genesis: Genesis) -> None:
    """Take a live miner out of service in block `height` (its `miner.exit`, or a slash that left
    its bond below the minimum): it stops serving, and its bond unbonds (`what`: "bond", so a
    verdict can still find and slash it)."""
    current = state.get(MINER + address)
    for sha in current["models"]:
        _set_serving(state, sha, address, height, genesis, serving=False)
    key = UNLOCK + str(height + genesis.param("unbonding_blocks"))
    entry = {"address": address, "amount": current["bond"], "what": "bond"}
    state.set(key, [*(state.get(key) or []), entry])
    state.set(MINER + address, {**current, "bond": 0, "exited": height})


# --- paid queries ---------------------------------------------------------------------------


def backers_of(state: StateReader, model: str) -> dict[str, int]:
    """A model's backers and their stakes (`backers:<model>` lists them, `stake:<model>:<addr>`
    holds each; both written by `stake` and `unstake`)."""
    backers: dict[str, int] = {}
    for address in state.get(BACKERS + model) or []:
        stake = state.get(f"{STAKE}{model}:{address}")
        if stake is not None and stake["amount"] > 0:
            backers[address] = stake["amount"]
    return backers


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
    check_attestations(chain_id, task, gen, chk, ticket["max_tokens"])
    try:
        chosen = select_miners(eligible_miners(state, sha, ref), task)
    except TaskError as exc:
        raise InvalidTx(f"no valid miner pair: {exc.message}", reason="wrong-miners") from None
    if (gen["miner"], chk["miner"]) != chosen:
        raise InvalidTx(
            "the generator and checker are not the miners this ticket selects",
            reason="wrong-miners",
        )
    tokens, confirmed = gen["tokens"], chk["verdict"] == CONFIRMED
    paid = price_of(model["price"], tokens) if confirmed else 0
    if paid > ticket["max_price"]:
        raise InvalidTx(
            f"{tokens} tokens cost {paid} units, above the ticket's max_price "
            f"{ticket['max_price']}",
            reason="over-max-price",
        )
    if confirmed:
        debit(state, ticket["consumer"], paid, f"{paid} units", reason="consumer-cannot-pay")
        _pay(
            state,
            model["creator"],
            gen["miner"],
            chk["miner"],
            split_fee(paid, genesis, backers_of(state, sha)),
        )
        model.update(tasks=model["tasks"] + 1, tokens=model["tokens"] + tokens)
    else:
        model.update(rejected=model["rejected"] + 1)  # validators rule on it (a later issue)
    state.set(MODEL + sha, model)
    powr_rules.record_task(state, genesis, height, sha, gen["miner"], tokens, confirmed=confirmed)
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
        },
    )


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
